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

The subtask loops (:func:`run_reader`, :func:`run_writer`: barrier alignment, commit-upto,
position snapshots) and the coordinator (:meth:`Execution.run`) are shared by every runner; a
runner supplies only the channel between them, a :class:`SubtaskLink` (here: threads and bounded
queues; :mod:`sync.runners.ray`: actors and calls).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from typing_extensions import override

from sync.contract import (
    CompletedCheckpoint,
    DirtyRecord,
    Handle,
    Reader,
    Split,
    SplitReader,
    Writer,
    WriterTask,
)
from sync.dirty import DirtySink
from sync.errors import (
    FatalError,
    JobFailedError,
    JobInterruptedError,
    SyncxError,
    is_disk_full,
)
from sync.faults import crash_point, fail_point
from sync.metrics import Metric, Metrics
from sync.ratelimit import RateLimiter
from sync.state import Checkpoint, SplitState, StateDir

__all__ = [
    "Barrier",
    "Cancelled",
    "Commit",
    "Execution",
    "ExecutionResult",
    "Inbox",
    "PendingCheckpoint",
    "Stop",
    "SubtaskLink",
    "run_reader",
    "run_writer",
]

log = logging.getLogger(__name__)

_QUEUE_BATCHES = 4
"""Batches buffered per (reader, writer) pair: the bound that gives backpressure."""


@dataclass(frozen=True)
class Barrier:
    """Checkpoint ``checkpoint_id``'s barrier, in order with a reader's batches."""

    checkpoint_id: int


@dataclass(frozen=True)
class Commit:
    """Checkpoint ``checkpoint_id`` is stored: commit the handles up to it."""

    checkpoint_id: int


@dataclass(frozen=True)
class Stop:
    """End the writer subtask."""

    clean: bool
    """True when the final checkpoint was committed: nothing is left to throw away."""


_END = object()


class Cancelled(Exception):
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
            while len(queue) >= self._capacity and not isinstance(item, Barrier):
                if self._stopping.is_set():
                    raise Cancelled
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
                    raise Cancelled
                self._cond.wait(0.2)


@dataclass
class ExecutionResult:
    """How a run ended."""

    completed: bool
    last_checkpoint: int | None
    job_state: dict[str, Any] | None = None


@dataclass
class PendingCheckpoint:
    """An in-flight checkpoint."""

    checkpoint_id: int
    final: bool
    started: float
    readers: dict[int, dict[str, SplitState]] = field(default_factory=dict)
    writers: dict[int, dict[int, Handle]] = field(default_factory=dict)


class SubtaskLink(ABC):
    """What a reader or writer subtask sees of its coordinator and of the writers it feeds.

    The subtask loops (:func:`run_reader`, :func:`run_writer`) hold the barrier alignment, the
    commit-upto rule and the position snapshots; a link only carries messages. The local runtime
    is its own link (threads, bounded queues); a Ray actor has one that talks to the driver.
    """

    halt: threading.Event
    metrics: Metrics

    @abstractmethod
    def next_split(self, reader: int) -> Split | None:
        """A split from the shared pool, or ``None`` when the pool is empty."""

    @abstractmethod
    def pending_barrier(self, after: int) -> int | None:
        """The in-flight checkpoint's id when it is above ``after``."""

    @abstractmethod
    def report_positions(
        self, reader: int, checkpoint_id: int, positions: dict[str, SplitState]
    ) -> None:
        """A reader's split positions as of its barrier ``checkpoint_id``."""

    @abstractmethod
    def completed(self) -> CompletedCheckpoint | None:
        """The newest stored checkpoint."""

    @abstractmethod
    def reader_finished(self, reader: int) -> None:
        """A reader has read all the splits it will get."""

    @abstractmethod
    def idle(self, seconds: float) -> None:
        """Wait a little (a finished reader waiting for the next barrier)."""

    @abstractmethod
    def send(self, reader: int, writer: int, item: pa.RecordBatch | Barrier) -> None:
        """Deliver a batch or a barrier to one writer input, in order, waiting while it is full."""

    @abstractmethod
    def has_room(self, reader: int, writer: int) -> bool:
        """Whether ``send`` to ``writer`` would not wait now."""

    @abstractmethod
    def ack(self, checkpoint_id: int, writer: int, handles: dict[int, Handle]) -> None:
        """A writer prepared ``checkpoint_id``; ``handles`` are all its uncommitted ones, by the
        id of the checkpoint that prepared them."""

    @abstractmethod
    def completed_id(self) -> int:
        """The newest stored checkpoint's id (0 when none): its handles may be committed."""

    @abstractmethod
    def settle(self, failure: BaseException | None) -> int:
        """A writer leaves without a clean end (``failure``: its own error, if it failed).

        From now on no checkpoint is stored; returns the newest one that is stored or is being
        stored. Handles up to it must be kept (a restore commits them); later ones may be aborted.
        """

    @abstractmethod
    def report_dirty(self, record: DirtyRecord) -> None:
        """A record the writer rejected."""


def run_reader(
    link: SubtaskLink,
    index: int,
    reader: Reader,
    targets: list[int],
    base_positions: dict[str, SplitState],
    limiter: RateLimiter,
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
) -> None:
    """Reader subtask ``index``: read splits from the pool, send batches and barriers."""
    touched: dict[str, SplitState] = {}
    last_barrier = 0
    last_notified = 0
    halt, metrics = link.halt, link.metrics
    router = _Router(link, index, targets)

    def barrier_if_pending() -> None:
        nonlocal last_barrier
        pending = link.pending_barrier(last_barrier)
        if pending is None:
            return
        last_barrier = pending
        link.report_positions(
            index, pending, {k: SplitState(v.position, v.done) for k, v in touched.items()}
        )
        for target in targets:
            link.send(index, target, Barrier(pending))
        crash_point("barrier-sent")

    def notify_if_completed(split: Split, opened: SplitReader) -> None:
        nonlocal last_notified
        completed = link.completed()
        if completed is None or completed.id <= last_notified:
            return
        last_notified = completed.id
        if split.id in completed.positions:
            opened.notify_checkpoint_complete(completed.id, completed.positions[split.id])

    while not halt.is_set():
        split = link.next_split(index)
        if split is None:
            break
        start = base_positions.get(split.id, SplitState())
        state = touched[split.id] = SplitState(start.position)
        opened = reader.open(split, start.position)
        try:
            batches = iter(opened.batches())
            while True:
                with metrics.timed(Metric.READ_DURATION):
                    batch = next(batches, _END)
                if batch is _END:
                    break
                if halt.is_set():
                    raise Cancelled
                if isinstance(batch, pa.RecordBatch) and batch.num_rows:
                    fail_point("reader-batch")
                    _emit(router, batch, limiter, metrics, halt, transform)
                # after a tick too: a stream may have moved past events it did not emit
                state.position = opened.snapshot()
                consumed = opened.progress()
                if consumed is not None:
                    metrics.progress.consumed(split.id, consumed)
                barrier_if_pending()
                notify_if_completed(split, opened)
        finally:
            opened.close()
        state.done = True
        barrier_if_pending()
    link.reader_finished(index)
    while not halt.is_set():
        link.idle(0.2)
        barrier_if_pending()


def _emit(
    router: _Router,
    batch: pa.RecordBatch,
    limiter: RateLimiter,
    metrics: Metrics,
    halt: threading.Event,
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
) -> None:
    rows, nbytes = batch.num_rows, batch.nbytes
    if limiter.active:
        limiter.acquire(rows, nbytes, halt)
    metrics.add(Metric.NUM_READ, rows)
    metrics.add(Metric.BYTE_READ, nbytes)
    if transform is not None:
        batch = transform(batch)
        if not batch.num_rows:
            return
    router.send(batch)


class _Router:
    """Chained: the one writer. Rebalanced: round robin, skipping writers that are full."""

    def __init__(self, link: SubtaskLink, index: int, targets: list[int]) -> None:
        self._link = link
        self._index = index
        self._targets = targets
        self._next = index

    def send(self, batch: pa.RecordBatch) -> None:
        targets = self._targets
        if len(targets) == 1:
            self._link.send(self._index, targets[0], batch)
            return
        start = self._next
        self._next = start + 1
        rotated = [targets[(start + step) % len(targets)] for step in range(len(targets))]
        chosen = next((t for t in rotated if self._link.has_room(self._index, t)), rotated[0])
        self._link.send(self._index, chosen, batch)


def run_writer(
    link: SubtaskLink, index: int, task: WriterTask, inbox: Inbox, inputs: set[int]
) -> None:
    """Writer subtask ``index``: align barriers from ``inputs``, prepare, ack, commit."""
    metrics = link.metrics
    blocked: set[int] = set()
    aligning: int | None = None
    uncommitted: dict[int, Handle] = {}
    clean_end = False
    failure: BaseException | None = None
    try:
        while True:
            source, item = inbox.get(blocked)
            if isinstance(item, Stop):
                clean_end = item.clean
                break
            if isinstance(item, Commit):
                _commit_upto(task, uncommitted, item.checkpoint_id, metrics)
            elif isinstance(item, Barrier):
                if aligning is None or item.checkpoint_id > aligning:
                    aligning, blocked = item.checkpoint_id, {source}
                elif item.checkpoint_id == aligning:
                    blocked.add(source)
                if aligning is not None and blocked >= inputs:
                    with metrics.timed(Metric.WRITE_DURATION):
                        handle = task.prepare(aligning)
                    if handle is not None:
                        uncommitted[aligning] = handle
                    crash_point("writer-prepared")
                    link.ack(aligning, index, dict(uncommitted))
                    fail_point("writer-acked")
                    aligning, blocked = None, set()
            else:
                _write(link, task, item)
    except Cancelled:
        raise
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _close_writer(link, task, uncommitted, clean_end, failure)


def _write(link: SubtaskLink, task: WriterTask, batch: pa.RecordBatch) -> None:
    fail_point("writer-write")
    with link.metrics.timed(Metric.WRITE_DURATION):
        rejected = task.write(batch)
    for record in rejected:
        link.report_dirty(record)
    link.metrics.add(Metric.NUM_WRITE, batch.num_rows - len(rejected))
    link.metrics.add(Metric.BYTE_WRITE, batch.nbytes)


def _commit_upto(
    task: WriterTask, uncommitted: dict[int, Handle], checkpoint_id: int, metrics: Metrics
) -> None:
    """Commit every handle up to a completed checkpoint (later ones subsume failed ones)."""
    for done in sorted(k for k in uncommitted if k <= checkpoint_id):
        with metrics.timed(Metric.WRITE_DURATION):
            task.commit(uncommitted.pop(done))
        crash_point("writer-committed")


def _close_writer(
    link: SubtaskLink,
    task: WriterTask,
    uncommitted: dict[int, Handle],
    clean_end: bool,
    failure: BaseException | None,
) -> None:
    """On the way out: commit what a stored checkpoint covers, abort what no checkpoint will.

    A handle this writer acknowledged may be in a checkpoint the coordinator is storing right
    now: :meth:`SubtaskLink.settle` says which are safe to abort. One that is kept but never
    stored (the checkpoint write failed) is rolled back by the next run's ``begin``.
    """
    try:
        if not clean_end:
            kept = link.settle(failure)
            task.discard()
            _commit_upto(task, uncommitted, link.completed_id(), link.metrics)
            for checkpoint_id, handle in uncommitted.items():
                if checkpoint_id > kept:
                    task.abort(handle)
    finally:
        with contextlib.suppress(Exception):
            task.close()


class Execution(SubtaskLink):
    """One attempt at running a job's pipeline, from a set of splits and positions.

    The coordinator (:meth:`run`) is shared by every runner; this class runs the subtasks on
    local threads and is their link. A runner elsewhere overrides :meth:`_start`, :meth:`_wait`,
    :meth:`_broadcast`, :meth:`_finish` and :meth:`_shutdown`.
    """

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
        self.halt = halt

        self._cond = threading.Condition()
        self._pool: deque[Split] = deque(
            s for s in splits if not self.base_positions.get(s.id, SplitState()).done
        )
        self._inflight: PendingCheckpoint | None = None
        self._completed: CompletedCheckpoint | None = None
        self._sealed = 0
        """The newest checkpoint decided to be stored (see :meth:`settle`)."""
        self._settled = False
        self._finished_readers = 0
        self._failure: BaseException | None = None
        self._stop_requested = False
        self._job_state: dict[str, Any] | None = None
        chained = readers == writers
        self.targets = {r: [r] if chained else list(range(writers)) for r in range(readers)}
        self.inputs = {
            w: [r for r in range(readers) if w in self.targets[r]] for w in range(writers)
        }
        self._inboxes: list[Inbox] = []
        self._threads: list[threading.Thread] = []

    # -- coordinator -------------------------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run until the job ends, fails, or is stopped; return how it ended."""
        next_checkpoint = time.monotonic() + self.interval if self.interval else float("inf")
        failed_checkpoints = 0
        try:
            self._start(None if self.transform is not None else self.reader.schema())
            while True:
                self._wait(0.05)
                with self._cond:
                    failure = self._failure
                    inflight = self._inflight
                    all_read = self._finished_readers == self.n_readers
                if failure is not None:
                    raise failure
                if self.halt.is_set():
                    raise JobInterruptedError("stopped at once (second interrupt)")
                if inflight is not None:
                    if self._seal(inflight):
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
            self._inflight = PendingCheckpoint(checkpoint_id, final, time.monotonic())
            self._cond.notify_all()
        self._broadcast(Barrier(checkpoint_id))
        log.debug("checkpoint %d triggered (final=%s)", checkpoint_id, final)

    def _seal(self, pending: PendingCheckpoint) -> bool:
        """Decide to store ``pending``: every subtask acknowledged it and no writer has left."""
        with self._cond:
            if self._failure is not None or self._settled:
                return False
            if len(pending.readers) < self.n_readers or len(pending.writers) < self.n_writers:
                return False
            self._sealed = pending.checkpoint_id
            return True

    def _complete(self, pending: PendingCheckpoint) -> None:
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
            self._completed = completed
            self._inflight = None
            self._job_state = job_state
        self.reader.notify_checkpoint_complete(completed)
        self._broadcast(completed)
        log.info(
            "checkpoint %d stored%s", pending.checkpoint_id, " (final)" if pending.final else ""
        )

    # -- the local subtasks: threads and bounded queues --------------------------------------

    def _start(self, schema: pa.Schema | None) -> None:
        """Start the subtasks (``schema``: the writers' input schema when known)."""
        self._inboxes = [
            Inbox(self.inputs[w], _QUEUE_BATCHES, self.halt) for w in range(self.n_writers)
        ]
        for index in range(self.n_writers):
            task = self.writer.open(index, self.n_writers, schema)
            self._spawn(
                f"writer-{index}",
                run_writer,
                self,
                index,
                task,
                self._inboxes[index],
                set(self.inputs[index]),
            )
        for index in range(self.n_readers):
            self._spawn(
                f"reader-{index}",
                run_reader,
                self,
                index,
                self.reader,
                self.targets[index],
                self.base_positions,
                self.limiter,
                self.transform,
            )

    def _wait(self, seconds: float) -> None:
        """Wait for subtask news (an ack, a failure) at most ``seconds``."""
        with self._cond:
            self._cond.wait(seconds)

    def _broadcast(self, news: Barrier | CompletedCheckpoint) -> None:
        """Tell the subtasks of a triggered or a stored checkpoint (local threads read the
        coordinator's fields for a trigger; writers get a commit message)."""
        if isinstance(news, CompletedCheckpoint):
            for inbox in self._inboxes:
                inbox.put_control(Commit(news.id))

    def _finish(self) -> None:
        """Let writers commit the final checkpoint and end; fail if one of them failed."""
        for inbox in self._inboxes:
            inbox.put_control(Stop(clean=True))
        for thread in self._threads:
            if thread.name.startswith("writer"):
                thread.join()
        if self._failure is not None:
            raise self._failure
        crash_point("final-committed")

    def _shutdown(self) -> None:
        self.halt.set()
        with self._cond:
            self._cond.notify_all()
        for inbox in self._inboxes:
            inbox.put_control(Stop(clean=False))
        for thread in self._threads:
            thread.join(timeout=30)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except Cancelled:
                pass
            except BaseException as exc:
                self.fail(exc)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def fail(self, exc: BaseException) -> None:
        """A subtask failed: the attempt ends with ``exc``."""
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._cond.notify_all()
        self.halt.set()

    # -- the link of local subtasks (also what a remote runner's messages update) ------------

    @override
    def next_split(self, reader: int) -> Split | None:
        with self._cond:
            return self._pool.popleft() if self._pool else None

    @override
    def pending_barrier(self, after: int) -> int | None:
        with self._cond:
            pending = self._inflight
            return pending.checkpoint_id if pending and pending.checkpoint_id > after else None

    @override
    def report_positions(
        self, reader: int, checkpoint_id: int, positions: dict[str, SplitState]
    ) -> None:
        with self._cond:
            pending = self._inflight
            if pending is not None and pending.checkpoint_id == checkpoint_id:
                pending.readers[reader] = positions
                self._cond.notify_all()

    @override
    def completed(self) -> CompletedCheckpoint | None:
        return self._completed

    @override
    def reader_finished(self, reader: int) -> None:
        with self._cond:
            self._finished_readers += 1
            self._cond.notify_all()

    @override
    def idle(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)

    @override
    def send(self, reader: int, writer: int, item: pa.RecordBatch | Barrier) -> None:
        self._inboxes[writer].put(reader, item)

    @override
    def has_room(self, reader: int, writer: int) -> bool:
        return self._inboxes[writer].has_room(reader)

    @override
    def ack(self, checkpoint_id: int, writer: int, handles: dict[int, Handle]) -> None:
        with self._cond:
            pending = self._inflight
            if pending is not None and pending.checkpoint_id == checkpoint_id:
                pending.writers[writer] = handles
                self._cond.notify_all()

    @override
    def completed_id(self) -> int:
        completed = self._completed
        return completed.id if completed is not None else 0

    @override
    def settle(self, failure: BaseException | None) -> int:
        with self._cond:
            self._settled = True
            if failure is not None and self._failure is None:
                self._failure = failure
            self._cond.notify_all()
            return self._sealed

    @override
    def report_dirty(self, record: DirtyRecord) -> None:
        self.dirty.report(record)


def new_run_id() -> str:
    """A short id naming one fresh run (kept across restores of that run)."""
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def is_retriable(exc: BaseException) -> bool:
    """Whether ``setting.restart`` may restart the job after ``exc``."""
    if isinstance(exc, FatalError) or is_disk_full(exc):
        return False  # a full disk stays full: restarting would only fill it again
    return not (isinstance(exc, SyncxError) and exc.exit_code == 2)
