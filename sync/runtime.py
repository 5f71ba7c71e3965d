"""The local streaming runtime: reader and writer subtasks on threads, aligned checkpoints.

Data path: ``readerChannel`` reader threads pull splits from a shared pool and push Arrow batches
into bounded per-input queues of the writer threads (:class:`Inbox`): reader *i* feeds writer *i*
when the channel counts are equal (chained), otherwise each batch goes to the least-loaded writer.
A full queue blocks the reader, so memory stays flat whatever the input size.

Checkpoint *n* (Flink's aligned barriers): the coordinator raises the pending id; each reader,
between two batches, reports its split positions and sends barrier *n* to every writer it feeds.
A writer holding barrier *n* from one input stops taking that input until *n* has arrived from all
of them, then ``prepare(n)`` and acknowledges with its uncommitted handles. With every
acknowledgement in, the coordinator stores the checkpoint atomically, then tells the writers to
commit. A bounded job ends with a final checkpoint and succeeds only after its commit.

Once a checkpoint is stored, the reader hears of it (``Reader.notify_checkpoint_complete``, on the
coordinator) and so does every open split (``SplitReader.notify_checkpoint_complete``, on its own
reader thread between two items, with the position stored for it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sync.contract import (
    CompletedCheckpoint,
    Handle,
    Reader,
    Split,
    SplitReader,
    Writer,
    WriterTask,
)
from sync.dirty import DirtySink
from sync.errors import FatalError, JobFailedError, JobInterruptedError, SyncxError
from sync.faults import crash_point, fail_point
from sync.metrics import Metric, Metrics
from sync.ratelimit import RateLimiter
from sync.state import Checkpoint, SplitState, StateDir

__all__ = ["Execution", "ExecutionResult", "Inbox"]

log = logging.getLogger(__name__)

_QUEUE_BATCHES = 4
"""Batches buffered per (reader, writer) pair: the bound that gives backpressure."""


@dataclass(frozen=True)
class _Barrier:
    checkpoint_id: int


@dataclass(frozen=True)
class _Commit:
    checkpoint_id: int


@dataclass(frozen=True)
class _Stop:
    clean: bool
    """True when the final checkpoint was committed: nothing is left to throw away."""


_END = object()


class _Cancelled(Exception):
    """The job is stopping; unwind a blocked thread."""


class Inbox:
    """A writer's input: one bounded FIFO per reader input, plus an unbounded control lane.

    ``get`` skips inputs that are blocked for barrier alignment; control messages (commit, stop)
    always pass first.
    """

    def __init__(self, inputs: list[int], capacity: int, stopping: threading.Event) -> None:
        self._cond = threading.Condition()
        self._queues: dict[int, deque[Any]] = {i: deque() for i in inputs}
        self._order = list(inputs)
        self._control: deque[Any] = deque()
        self._capacity = capacity
        self._stopping = stopping
        self._next = 0

    def has_room(self, source: int) -> bool:
        """Whether ``source``'s queue can take an item without waiting."""
        return len(self._queues[source]) < self._capacity

    def put(self, source: int, item: Any) -> None:
        """Append to ``source``'s queue, waiting while it is full."""
        with self._cond:
            queue = self._queues[source]
            while len(queue) >= self._capacity and not isinstance(item, _Barrier):
                if self._stopping.is_set():
                    raise _Cancelled
                self._cond.wait(0.2)
            queue.append(item)
            self._cond.notify_all()

    def put_control(self, item: Any) -> None:
        """Queue a commit or stop message ahead of all data."""
        with self._cond:
            self._control.append(item)
            self._cond.notify_all()

    def get(self, blocked: set[int]) -> tuple[int, Any]:
        """The next control message (source -1) or item of an unblocked input, round robin."""
        with self._cond:
            while True:
                if self._control:
                    return -1, self._control.popleft()
                count = len(self._order)
                for step in range(count):
                    source = self._order[(self._next + step) % count]
                    queue = self._queues[source]
                    if queue and source not in blocked:
                        self._next = (self._next + step + 1) % count
                        item = queue.popleft()
                        self._cond.notify_all()
                        return source, item
                if self._stopping.is_set():
                    raise _Cancelled
                self._cond.wait(0.2)


@dataclass
class ExecutionResult:
    """How a run ended."""

    completed: bool
    last_checkpoint: int | None
    job_state: dict[str, Any] | None = None


@dataclass
class _Pending:
    """An in-flight checkpoint."""

    checkpoint_id: int
    final: bool
    started: float
    readers: dict[int, dict[str, SplitState]] = field(default_factory=dict)
    writers: dict[int, list[Handle]] = field(default_factory=dict)


class Execution:
    """One attempt at running a job's pipeline, from a set of splits and positions."""

    def __init__(
        self,
        *,
        reader: Reader,
        writer: Writer,
        splits: list[Split],
        positions: dict[str, SplitState],
        readers: int,
        writers: int,
        state: StateDir,
        fingerprint: dict[str, Any],
        run_id: str,
        first_checkpoint_id: int,
        checkpoint_interval: float | None,
        checkpoint_timeout: float,
        tolerable_failed_checkpoints: int,
        retain_checkpoints: int,
        metrics: Metrics,
        dirty: DirtySink,
        limiter: RateLimiter,
        halt: threading.Event,
        stop_request: threading.Event,
        transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.splits = splits
        self.base_positions = dict(positions)
        self.n_readers = readers
        self.n_writers = writers
        self.state = state
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.next_id = first_checkpoint_id
        self.interval = checkpoint_interval
        self.timeout = checkpoint_timeout
        self.tolerable = tolerable_failed_checkpoints
        self.retain = retain_checkpoints
        self.metrics = metrics
        self.dirty = dirty
        self.limiter = limiter
        self.stop_request = stop_request
        self.transform = transform

        self._cond = threading.Condition()
        self._pool: deque[Split] = deque(
            s for s in splits if not self.base_positions.get(s.id, SplitState()).done
        )
        self._pending_id = first_checkpoint_id - 1
        self._inflight: _Pending | None = None
        self._completed_id: int | None = None
        self._completed: CompletedCheckpoint | None = None
        self._finished_readers = 0
        self._failure: BaseException | None = None
        self._halt = halt
        self._stop_requested = False
        self._job_state: dict[str, Any] | None = None
        chained = readers == writers
        self._targets = {r: [r] if chained else list(range(writers)) for r in range(readers)}
        inputs = {w: [r for r in range(readers) if w in self._targets[r]] for w in range(writers)}
        self._inputs = inputs
        self._inboxes = [Inbox(inputs[w], _QUEUE_BATCHES, self._halt) for w in range(writers)]
        self._threads: list[threading.Thread] = []
        self._round_robin = {r: r for r in range(readers)}

    # -- coordinator -------------------------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run until the job ends, fails, or is stopped; return how it ended."""
        schema = None if self.transform is not None else self.reader.schema()
        for index in range(self.n_writers):
            self._spawn(f"writer-{index}", self._writer_loop, index, schema)
        for index in range(self.n_readers):
            self._spawn(f"reader-{index}", self._reader_loop, index)
        next_checkpoint = time.monotonic() + self.interval if self.interval else float("inf")
        failed_checkpoints = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait(0.05)
                    failure = self._failure
                    inflight = self._inflight
                    all_read = self._finished_readers == self.n_readers
                if failure is not None:
                    raise failure
                if self._halt.is_set():
                    raise JobInterruptedError("stopped at once (second interrupt)")
                if inflight is not None:
                    if self._acknowledged(inflight):
                        self._complete(inflight)
                        failed_checkpoints = 0
                        if inflight.final:
                            self._finish()
                            return ExecutionResult(True, inflight.checkpoint_id, self._job_state)
                        if self._stop_requested:
                            return ExecutionResult(False, inflight.checkpoint_id)
                        next_checkpoint = time.monotonic() + (self.interval or float("inf"))
                    elif time.monotonic() - inflight.started > self.timeout:
                        failed_checkpoints += 1
                        log.warning(
                            "checkpoint %d timed out after %ss",
                            inflight.checkpoint_id,
                            self.timeout,
                        )
                        with self._cond:
                            self._inflight = None
                        if failed_checkpoints > self.tolerable:
                            msg = (
                                f"{failed_checkpoints} checkpoint(s) failed in a row (timeout "
                                f"{self.timeout}s), more than setting.restore.tolerableFailedCheckpoints"
                                f" = {self.tolerable}"
                            )
                            raise JobFailedError(msg)
                    continue
                if self.stop_request.is_set() and not self._stop_requested:
                    self._stop_requested = True
                    self._trigger(final=False)
                elif all_read and self.reader.bounded:
                    self._trigger(final=True)
                elif time.monotonic() >= next_checkpoint:
                    self._trigger(final=False)
        finally:
            self._shutdown()

    def _trigger(self, *, final: bool) -> None:
        checkpoint_id = self.next_id
        self.next_id += 1
        with self._cond:
            self._inflight = _Pending(checkpoint_id, final, time.monotonic())
            self._pending_id = checkpoint_id
            self._cond.notify_all()
        log.debug("checkpoint %d triggered (final=%s)", checkpoint_id, final)

    def _acknowledged(self, pending: _Pending) -> bool:
        with self._cond:
            return len(pending.readers) == self.n_readers and len(pending.writers) == self.n_writers

    def _complete(self, pending: _Pending) -> None:
        positions = dict(self.base_positions)
        for states in pending.readers.values():
            positions.update(states)
        self.dirty.check(final=pending.final)
        job_state = None
        if pending.final:
            job_state = self.reader.next_job_state({k: v.position for k, v in positions.items()})
        checkpoint = Checkpoint(
            id=pending.checkpoint_id,
            run_id=self.run_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            final=pending.final,
            fingerprint=self.fingerprint,
            splits=self.splits,
            positions=positions,
            handles=pending.writers,
            metrics=self.metrics.snapshot(),
            job_state=job_state,
        )
        self.state.write_checkpoint(checkpoint, self.retain)
        crash_point("checkpoint-stored")
        self.state.mark_committing(pending.checkpoint_id)
        self.metrics.add(Metric.CHECKPOINTS, 1)
        completed = CompletedCheckpoint(
            id=pending.checkpoint_id,
            positions={k: v.position for k, v in positions.items()},
            done=frozenset(k for k, v in positions.items() if v.done),
            final=pending.final,
        )
        with self._cond:
            self._completed_id = pending.checkpoint_id
            self._completed = completed
            self._inflight = None
            self._job_state = job_state
        self.reader.notify_checkpoint_complete(completed)
        for inbox in self._inboxes:
            inbox.put_control(_Commit(pending.checkpoint_id))
        log.info(
            "checkpoint %d stored%s", pending.checkpoint_id, " (final)" if pending.final else ""
        )

    def _finish(self) -> None:
        """Let writers commit the final checkpoint and end; fail if one of them failed."""
        for inbox in self._inboxes:
            inbox.put_control(_Stop(clean=True))
        for thread in self._threads:
            if thread.name.startswith("writer"):
                thread.join()
        if self._failure is not None:
            raise self._failure
        crash_point("final-committed")

    def _shutdown(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        for inbox in self._inboxes:
            inbox.put_control(_Stop(clean=False))
        for thread in self._threads:
            thread.join(timeout=30)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except _Cancelled:
                pass
            except BaseException as exc:
                self._fail(exc)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._cond.notify_all()
        self._halt.set()

    # -- readers -----------------------------------------------------------------------------

    def _next_split(self) -> Split | None:
        with self._cond:
            return self._pool.popleft() if self._pool else None

    def _reader_loop(self, index: int) -> None:
        touched: dict[str, SplitState] = {}
        last_barrier = self._pending_id
        last_notified = self._completed_id or 0
        targets = self._targets[index]

        def barrier_if_pending() -> None:
            nonlocal last_barrier
            with self._cond:
                pending = self._inflight
                if pending is None or pending.checkpoint_id <= last_barrier:
                    return
                pending.readers[index] = {
                    k: SplitState(v.position, v.done) for k, v in touched.items()
                }
                last_barrier = pending.checkpoint_id
                self._cond.notify_all()
            for target in targets:
                self._inboxes[target].put(index, _Barrier(last_barrier))
            crash_point("barrier-sent")

        def notify_if_completed(split: Split, opened: SplitReader) -> None:
            nonlocal last_notified
            completed = self._completed
            if completed is None or completed.id <= last_notified:
                return
            last_notified = completed.id
            if split.id in completed.positions:
                opened.notify_checkpoint_complete(completed.id, completed.positions[split.id])

        while not self._halt.is_set():
            split = self._next_split()
            if split is None:
                break
            start = self.base_positions.get(split.id, SplitState())
            state = touched[split.id] = SplitState(start.position)
            opened = self.reader.open(split, start.position)
            try:
                batches = iter(opened.batches())
                while True:
                    with self.metrics.timed(Metric.READ_DURATION):
                        batch = next(batches, _END)
                    if batch is _END:
                        break
                    if self._halt.is_set():
                        raise _Cancelled
                    if isinstance(batch, pa.RecordBatch) and batch.num_rows:
                        fail_point("reader-batch")
                        self._emit(index, targets, batch)
                    # after a tick too: a stream may have moved past events it did not emit
                    state.position = opened.snapshot()
                    consumed = opened.progress()
                    if consumed is not None:
                        self.metrics.progress.consumed(split.id, consumed)
                    barrier_if_pending()
                    notify_if_completed(split, opened)
            finally:
                opened.close()
            state.done = True
            barrier_if_pending()
        with self._cond:
            self._finished_readers += 1
            self._cond.notify_all()
        while not self._halt.is_set():
            with self._cond:
                self._cond.wait(0.2)
            barrier_if_pending()

    def _emit(self, index: int, targets: list[int], batch: pa.RecordBatch) -> None:
        rows, nbytes = batch.num_rows, batch.nbytes
        if self.limiter.active:
            self.limiter.acquire(rows, nbytes, self._halt)
        self.metrics.add(Metric.NUM_READ, rows)
        self.metrics.add(Metric.BYTE_READ, nbytes)
        if self.transform is not None:
            batch = self.transform(batch)
            if not batch.num_rows:
                return
        self._inboxes[self._route(index, targets)].put(index, batch)

    def _route(self, index: int, targets: list[int]) -> int:
        """Chained: the one writer. Rebalanced: round robin, skipping writers whose queue is full."""
        if len(targets) == 1:
            return targets[0]
        start = self._round_robin[index]
        self._round_robin[index] = start + 1
        rotated = [targets[(start + step) % len(targets)] for step in range(len(targets))]
        return next((t for t in rotated if self._inboxes[t].has_room(index)), rotated[0])

    # -- writers -----------------------------------------------------------------------------

    def _writer_loop(self, index: int, schema: pa.Schema | None) -> None:
        task = self.writer.open(index, self.n_writers, schema)
        inputs = set(self._inputs[index])
        blocked: set[int] = set()
        aligning: int | None = None
        uncommitted: dict[int, Handle] = {}
        clean_end = False
        try:
            while True:
                source, item = self._inboxes[index].get(blocked)
                if isinstance(item, _Stop):
                    clean_end = item.clean
                    break
                if isinstance(item, _Commit):
                    self._commit_upto(task, uncommitted, item.checkpoint_id)
                elif isinstance(item, _Barrier):
                    if aligning is None or item.checkpoint_id > aligning:
                        aligning, blocked = item.checkpoint_id, {source}
                    elif item.checkpoint_id == aligning:
                        blocked.add(source)
                    if aligning is not None and blocked >= inputs:
                        with self.metrics.timed(Metric.WRITE_DURATION):
                            handle = task.prepare(aligning)
                        if handle is not None:
                            uncommitted[aligning] = handle
                        crash_point("writer-prepared")
                        self._ack_writer(aligning, index, list(uncommitted.values()))
                        aligning, blocked = None, set()
                else:
                    self._write(task, item)
        finally:
            self._close_writer(task, uncommitted, clean_end)

    def _write(self, task: WriterTask, batch: pa.RecordBatch) -> None:
        fail_point("writer-write")
        with self.metrics.timed(Metric.WRITE_DURATION):
            rejected = task.write(batch)
        for record in rejected:
            self.dirty.report(record)
        self.metrics.add(Metric.NUM_WRITE, batch.num_rows - len(rejected))
        self.metrics.add(Metric.BYTE_WRITE, batch.nbytes)

    def _ack_writer(self, checkpoint_id: int, index: int, handles: list[Handle]) -> None:
        with self._cond:
            pending = self._inflight
            if pending is not None and pending.checkpoint_id == checkpoint_id:
                pending.writers[index] = handles
                self._cond.notify_all()

    def _commit_upto(
        self, task: WriterTask, uncommitted: dict[int, Handle], checkpoint_id: int
    ) -> None:
        """Commit every handle up to a completed checkpoint (later ones subsume failed ones)."""
        for done in sorted(k for k in uncommitted if k <= checkpoint_id):
            with self.metrics.timed(Metric.WRITE_DURATION):
                task.commit(uncommitted.pop(done))
            crash_point("writer-committed")

    def _close_writer(
        self, task: WriterTask, uncommitted: dict[int, Handle], clean_end: bool
    ) -> None:
        """On the way out: commit what a stored checkpoint covers, abort everything else."""
        try:
            if not clean_end:
                task.discard()
                completed = self._completed_id or 0
                self._commit_upto(task, uncommitted, completed)
                for handle in uncommitted.values():
                    task.abort(handle)
        finally:
            with contextlib.suppress(Exception):
                task.close()


def new_run_id() -> str:
    """A short id naming one fresh run (kept across restores of that run)."""
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def is_retriable(exc: BaseException) -> bool:
    """Whether ``setting.restart`` may restart the job after ``exc``."""
    if isinstance(exc, FatalError):
        return False
    return not (isinstance(exc, SyncxError) and exc.exit_code == 2)
