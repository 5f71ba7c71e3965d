"""The Ray runner: the same pipeline with its subtasks in Ray actors spread over a cluster.

Mapping: the driver process is the checkpoint coordinator (:class:`sync.runtime.Execution`'s
``run`` loop, unchanged). Channel *i* is one actor holding reader subtask *i* and writer subtask
*i* on two threads, so a reader and its writer always share a node; the channels are the bundles
(one CPU each) of one placement group spread over the nodes. The actors run the very subtask
loops of the local runtime (:func:`sync.runtime.run_reader`, :func:`run_writer`) over a
:class:`_RemoteLink` instead of the local runtime's queues:

- chained channels (equal reader and writer counts): a reader feeds its writer through a bounded
  queue inside the actor, as Flink chains operators: no serialization, no copy, the same
  backpressure as locally;
- rebalanced channels: batches travel to other channels as ``push`` calls of at least
  :data:`_SEND_BYTES` (small batches are sent together), numbered per (reader, writer) pair so
  the writer keeps their order, with at most :data:`_IN_FLIGHT` calls in flight per pair: a slow
  writer slows its readers as locally;
- barriers travel in order with the batches; positions, acknowledgements, split requests, dirty
  records and metric increments go to the driver through a long ``poll`` call per actor;
- a lost node or actor (any ``RayError``) fails the attempt; ``setting.restart`` starts a new one
  from the last checkpoint with new actors whose names carry the attempt number. Actors are
  created with no Ray-level restarts: Ray's actor restart would lose the subtask's state.

The driver keeps the reader and writer objects it plans, begins and finishes with, and commits
the final checkpoint itself (see :meth:`RayExecution._finish`); each actor builds its own reader
and writer from the same class, parameters and context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import queue
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from typing_extensions import override

from sync.contract import (
    CompletedCheckpoint,
    DirtyRecord,
    Handle,
    JobContext,
    Reader,
    Split,
    Writer,
    WriterTask,
)
from sync.errors import FatalError, JobFailedError, JobFileError, SyncxError
from sync.faults import crash_point
from sync.metrics import Metric, Metrics
from sync.ratelimit import RateLimiter
from sync.runtime import (
    Barrier,
    Cancelled,
    Commit,
    Execution,
    Inbox,
    PendingCheckpoint,
    Stop,
    SubtaskLink,
    run_reader,
    run_writer,
)
from sync.state import SplitState, commit_order

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayError
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    msg = "--runner ray needs Ray: pip install 'syncx[ray]'"
    raise JobFailedError(msg) from exc

__all__ = ["RayExecution", "connect", "disconnect", "node_count"]

log = logging.getLogger(__name__)

_SEND_BYTES = 1 << 20
"""Batches for one writer are sent together until they reach this size (or a barrier comes)."""
_SEND_AGE = 0.5
"""Seconds a smaller group of batches may wait before it is sent anyway."""
_IN_FLIGHT = 2
"""``push`` calls in flight per (reader, writer) pair: with the writer's queue, the backpressure."""
_QUEUE_BATCHES = 4
"""Batches a writer actor buffers per input."""
_POLL_SECONDS = 0.5
_CONNECT_SECONDS = 5.0
_SETTLE_SECONDS = 60.0
"""How long a failed writer waits for the driver's word on which checkpoints it may abort."""
PLACEMENT_TIMEOUT = float(os.environ.get("SYNCX_RAY_PLACEMENT_TIMEOUT", "120"))
"""Seconds to wait for CPUs for every channel before the attempt fails."""

_started_here = False


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (``auto``: the one this machine runs), or start a local Ray."""
    global _started_here
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address not in (None, "auto"):
        _check_reachable(address)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            _started_here = True
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        msg = f"--address {address}: no Ray cluster answers there ({exc})"
        raise JobFailedError(msg) from exc


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at ``address`` (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        msg = f"--address {address}: expected HOST:PORT of a Ray head (or auto)"
        raise JobFileError(msg)
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_SECONDS).close()
    except OSError as exc:
        msg = (
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
            "one with `ray start --head`, or leave --address out to run on a local Ray"
        )
        raise JobFailedError(msg) from exc


def disconnect() -> None:
    """Leave the cluster (and stop the local Ray this process started)."""
    global _started_here
    if ray.is_initialized():
        ray.shutdown()
    _started_here = False


def node_count() -> int:
    """Alive nodes of the cluster."""
    return sum(1 for node in ray.nodes() if node.get("Alive"))


# -- what travels: specs, events, errors --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What an actor needs to build its reader or writer: classes, parameters, the context."""

    reader_cls: type[Reader]
    reader_params: Any
    writer_cls: type[Writer]
    writer_params: Any
    context: dict[str, Any]
    limits: tuple[int, int]
    """Per reader: the job-wide ``speed.bytes`` and ``speed.record`` split evenly."""
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None


def _portable_context(ctx: JobContext) -> dict[str, Any]:
    """The context's plain fields; the services (callbacks, the stop event) are made per actor."""
    local = {"report_dirty", "report_lag", "stopping"}
    return {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name not in local}


def _portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a job failure of the same kind carrying its text."""
    with contextlib.suppress(Exception):
        pickle.loads(pickle.dumps(exc))
        return exc
    text = f"{type(exc).__name__}: {exc}"
    return FatalError(text) if isinstance(exc, FatalError) else JobFailedError(text)


class _RemoteLink(SubtaskLink):
    """An actor's side of the link: messages to the driver queue up for its ``poll``."""

    def __init__(self, ctx: dict[str, Any], index: int, inbox: Inbox | None) -> None:
        self.index = index
        self.inbox = inbox
        """The inbox of this channel's own writer (``None`` when it has none)."""
        self.halt = threading.Event()
        self.metrics = Metrics()
        self.context = JobContext(
            **ctx, report_dirty=self.report_dirty, report_lag=self._lag, stopping=self.halt
        )
        self._cond = threading.Condition()
        self._events: list[tuple[Any, ...]] = []
        self._sent: dict[str, float] = dict.fromkeys(Metric, 0.0)
        self._failure: BaseException | None = None
        self._running = 0
        self._ended = False
        self._pending = 0
        self._completed: CompletedCheckpoint | None = None
        self._completed_id = 0
        self._kept_id: int | None = None
        """The driver's last word: the newest checkpoint that is or may be stored."""
        self._splits: queue.Queue[Split | None] = queue.Queue()
        self.writers: list[Any] = []
        self._buffers: dict[int, list[Any]] = {}
        self._buffered_bytes: dict[int, int] = {}
        self._buffered_since: dict[int, float] = {}
        self._seq: dict[int, int] = {}
        self._in_flight: dict[int, deque[Any]] = {}

    # -- the actor's thread ------------------------------------------------------------------

    def run(self, body: Callable[[], None]) -> threading.Thread:
        """Run a subtask loop on its own thread, recording how it ended."""
        with self._cond:
            self._running += 1

        def guarded() -> None:
            try:
                body()
            except Cancelled:
                pass
            except BaseException as exc:
                with self._cond:
                    self._failure = self._failure or _portable_error(exc)
                self.halt.set()
            finally:
                with self._cond:
                    self._running -= 1
                    self._ended = self._running == 0
                    self._cond.notify_all()

        thread = threading.Thread(target=guarded, name="subtask", daemon=True)
        thread.start()
        return thread

    def poll(self, timeout: float) -> tuple[list[tuple[Any, ...]], dict[str, float], Any]:
        """Events since the last poll, metric increments, and the failure (or ``"ended"``)."""
        with self._cond:
            if not self._events and self._failure is None and not self._ended:
                self._cond.wait(timeout)
            events, self._events = self._events, []
            failure = self._failure or ("ended" if self._ended else None)
        delta: dict[str, float] = {}
        for metric in Metric:
            value = self.metrics.get(metric)
            if metric == Metric.CDC_LAG:
                delta[metric] = value
            elif value != self._sent[metric]:
                delta[metric] = value - self._sent[metric]
                self._sent[metric] = value
        return events, delta, failure

    def _event(self, *event: Any) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def _lag(self, seconds: float) -> None:
        self.metrics.set(Metric.CDC_LAG, seconds)

    def trigger(self, checkpoint_id: int) -> None:
        """The driver triggered checkpoint ``checkpoint_id``."""
        with self._cond:
            self._pending = max(self._pending, checkpoint_id)
            self._cond.notify_all()

    def complete(self, completed: CompletedCheckpoint) -> None:
        """The driver stored ``completed``."""
        with self._cond:
            if completed.id > self._completed_id:
                self._completed, self._completed_id = completed, completed.id

    def give_split(self, split: Split | None) -> None:
        """The driver's answer to a split request."""
        self._splits.put(split)

    # -- SubtaskLink -------------------------------------------------------------------------

    @override
    def next_split(self, reader: int) -> Split | None:
        self._event("split", reader)
        while not self.halt.is_set():
            with contextlib.suppress(queue.Empty):
                return self._splits.get(timeout=0.2)
        raise Cancelled

    @override
    def pending_barrier(self, after: int) -> int | None:
        self._send_aged()
        with self._cond:
            return self._pending if self._pending > after else None

    @override
    def report_positions(
        self, reader: int, checkpoint_id: int, positions: dict[str, SplitState]
    ) -> None:
        self._event("positions", reader, checkpoint_id, positions)

    @override
    def completed(self) -> CompletedCheckpoint | None:
        return self._completed

    @override
    def reader_finished(self, reader: int) -> None:
        for target in list(self._buffers):
            self._flush(reader, target)
        self._event("finished", reader)

    @override
    def idle(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)

    @override
    def send(self, reader: int, writer: int, item: pa.RecordBatch | Barrier) -> None:
        if writer == self.index and self.inbox is not None:
            self.inbox.put(reader, item)  # this channel's writer: chained, in this process
            return
        buffer = self._buffers.setdefault(writer, [])
        if not buffer:
            self._buffered_since[writer] = time.monotonic()
            self._buffered_bytes[writer] = 0
        buffer.append(item)
        if isinstance(item, Barrier):
            self._flush(reader, writer)
            return
        self._buffered_bytes[writer] += item.nbytes
        if self._buffered_bytes[writer] >= _SEND_BYTES:
            self._flush(reader, writer)

    @override
    def has_room(self, reader: int, writer: int) -> bool:
        if writer == self.index and self.inbox is not None:
            return self.inbox.has_room(reader)
        flight = self._in_flight.get(writer)
        if not flight:
            return True
        done, _ = ray.wait(list(flight), num_returns=len(flight), timeout=0)
        return len(flight) - len(done) < _IN_FLIGHT

    @override
    def ack(self, checkpoint_id: int, writer: int, handles: dict[int, Handle]) -> None:
        self._event("ack", writer, checkpoint_id, handles)

    @override
    def completed_id(self) -> int:
        return self._completed_id

    @override
    def settle(self, failure: BaseException | None) -> int:
        """Report ``failure`` and wait for the driver's stop: only the driver knows whether it
        is storing a checkpoint this writer acknowledged. Without its word, keep every handle."""
        deadline = time.monotonic() + _SETTLE_SECONDS
        with self._cond:
            if failure is not None:
                self._failure = self._failure or _portable_error(failure)
                self._cond.notify_all()
            while self._kept_id is None and time.monotonic() < deadline:
                self._cond.wait(0.2)
            kept = self._kept_id
        self.halt.set()
        return sys.maxsize if kept is None else kept

    def stopping(self, completed_id: int, kept_id: int) -> None:
        """The driver stopped this channel's writer (see :meth:`settle`)."""
        with self._cond:
            self._completed_id = max(self._completed_id, completed_id)
            self._kept_id = max(completed_id, kept_id)
            self._cond.notify_all()

    @override
    def report_dirty(self, record: DirtyRecord) -> None:
        self._event("dirty", record)

    # -- sending to writers ------------------------------------------------------------------

    def _send_aged(self) -> None:
        now = time.monotonic()
        for target, buffer in self._buffers.items():
            if buffer and now - self._buffered_since[target] >= _SEND_AGE:
                self._flush(self.index, target)

    def _flush(self, reader: int, writer: int) -> None:
        items = self._buffers.get(writer)
        if not items:
            return
        self._buffers[writer] = []
        seq = self._seq.get(writer, 0)
        self._seq[writer] = seq + 1
        flight = self._in_flight.setdefault(writer, deque())
        flight.append(self.writers[writer].push.remote(reader, seq, items))
        while len(flight) > _IN_FLIGHT:
            ready, _ = ray.wait([flight[0]], timeout=0.5)
            if self.halt.is_set():
                raise Cancelled
            if ready:
                ray.get(flight.popleft())


class _ChannelActor:
    """Channel ``index`` on a Ray node: reader subtask ``index`` and writer subtask ``index``
    (either may be absent when the reader and writer counts differ), each on its own thread.

    A reader feeds its own channel's writer through a local bounded queue, as the local runtime
    chains them (Flink's operator chaining: no serialization, no copy); other writers (rebalanced
    channels) get ``push`` calls.
    """

    def __init__(
        self, spec: _Spec, index: int, targets: list[int] | None, inputs: list[int] | None
    ) -> None:
        self.spec = spec
        self.index = index
        self.targets = targets
        self.inputs = inputs
        self.link = _RemoteLink(spec.context, index, None)
        if inputs is not None:
            self.link.inbox = Inbox(inputs, _QUEUE_BATCHES, self.link.halt)
            self._next_seq = dict.fromkeys(inputs, 0)
        self._turn = threading.Condition()
        self._writer_thread: threading.Thread | None = None

    def node(self) -> str:
        """The node this actor runs on."""
        return ray.get_runtime_context().get_node_id()

    def start_writer(self, subtasks: int, schema: pa.Schema | None) -> None:
        """Build the writer, open subtask ``index`` and start writing."""
        assert self.link.inbox is not None and self.inputs is not None
        inbox, inputs = self.link.inbox, set(self.inputs)
        writer = self.spec.writer_cls(self.spec.writer_params, self.link.context)
        writer.check()
        task = writer.open(self.index, subtasks, schema)

        def write() -> None:
            try:
                run_writer(self.link, self.index, task, inbox, inputs)
            finally:
                writer.close()

        self._writer_thread = self.link.run(write)

    def start_reader(self, channels: list[Any], positions: dict[str, SplitState]) -> None:
        """Build the reader and start reading (``channels``: every channel's actor)."""
        assert self.targets is not None
        spec, targets = self.spec, self.targets
        reader = spec.reader_cls(spec.reader_params, self.link.context)
        reader.check()
        self.link.writers = channels
        limiter = RateLimiter(*spec.limits)

        def read() -> None:
            try:
                run_reader(
                    self.link, self.index, reader, targets, positions, limiter, spec.transform
                )
            finally:
                reader.close()

        self.link.run(read)

    def push(self, source: int, seq: int, items: list[Any]) -> None:
        """Batches (and barriers) of reader ``source``, its ``seq``-th call to this writer."""
        assert self.link.inbox is not None
        with self._turn:
            while self._next_seq[source] != seq:
                if self.link.halt.is_set():
                    return
                self._turn.wait(0.2)
        try:
            for item in items:
                self.link.inbox.put(source, item)
        except Cancelled:
            return
        finally:
            with self._turn:
                self._next_seq[source] = seq + 1
                self._turn.notify_all()

    def control(self, item: Commit | Stop, completed_id: int, kept_id: int = 0) -> None:
        """A commit or stop message; ``completed_id`` is the newest stored checkpoint, and for a
        stop ``kept_id`` the newest one being stored (see :meth:`SubtaskLink.settle`)."""
        assert self.link.inbox is not None
        if isinstance(item, Stop):
            self.link.stopping(completed_id, kept_id)
        else:
            with self.link._cond:
                self.link._completed_id = max(self.link._completed_id, completed_id)
        self.link.inbox.put_control(item)

    def join(self, timeout: float) -> BaseException | None:
        """Wait for the writer subtask to end; the channel's failure, if any."""
        if self._writer_thread is not None:
            self._writer_thread.join(timeout)
        return self.link._failure

    def poll(self, timeout: float) -> tuple[list[tuple[Any, ...]], dict[str, float], Any]:
        """See :meth:`_RemoteLink.poll`."""
        return self.link.poll(timeout)

    def trigger(self, checkpoint_id: int) -> None:
        """See :meth:`_RemoteLink.trigger`."""
        self.link.trigger(checkpoint_id)

    def complete(self, completed: CompletedCheckpoint) -> None:
        """See :meth:`_RemoteLink.complete`."""
        self.link.complete(completed)

    def give_split(self, split: Split | None) -> None:
        """See :meth:`_RemoteLink.give_split`."""
        self.link.give_split(split)

    def stop(self) -> None:
        """Stop the channel's subtasks (the writer, if any, has ended by now or is failing)."""
        self.link.halt.set()


def _lost(exc: BaseException) -> JobFailedError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return JobFailedError(f"a Ray node or actor was lost ({type(exc).__name__}: {first})")


class RayExecution(Execution):
    """One attempt on a Ray cluster: the coordinator here, the subtasks in actors."""

    def __init__(self, *, attempt: int, limits: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempt = attempt
        self.limits = limits
        self._channels: list[Any] = []
        self._group: Any = None
        self._polls: dict[Any, Any] = {}
        self._schema: pa.Schema | None = None
        self._final_handles: dict[int, dict[int, Handle]] = {}
        self.nodes: set[str] = set()

    # -- start -------------------------------------------------------------------------------

    @override
    def _start(self, schema: pa.Schema | None) -> None:
        self._schema = schema
        channels = max(self.n_readers, self.n_writers)
        self._group = placement_group([{"CPU": 1}] * channels, strategy="SPREAD")
        self._await_placement(channels)
        log.debug("ray: %d channel bundle(s) placed", channels)
        ctx = self.reader.ctx
        limit_bytes, limit_records = self.limits
        spec = _Spec(
            reader_cls=type(self.reader),
            reader_params=self.reader.params,
            writer_cls=type(self.writer),
            writer_params=self.writer.params,
            context=_portable_context(ctx),
            limits=(
                -(-limit_bytes // self.n_readers) if limit_bytes > 0 else 0,
                -(-limit_records // self.n_readers) if limit_records > 0 else 0,
            ),
            transform=self.transform,
        )
        prefix = f"syncx-{ctx.job_id}-{self.run_id}-a{self.attempt}"
        channel_actor = ray.remote(_ChannelActor)
        for index in range(channels):
            targets = self.targets.get(index)
            inputs = self.inputs.get(index)
            self._channels.append(
                channel_actor.options(
                    name=f"{prefix}-channel-{index}",
                    num_cpus=1,
                    max_restarts=0,
                    max_task_retries=0,
                    max_concurrency=len(inputs or ()) * (_IN_FLIGHT + 1) + 6,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self._group, placement_group_bundle_index=index
                    ),
                ).remote(spec, index, targets, inputs)
            )
        writers = self._channels[: self.n_writers]
        readers = self._channels[: self.n_readers]
        try:
            self.nodes = set(ray.get([a.node.remote() for a in self._channels]))
            log.debug("ray: channel actors up on %d node(s)", len(self.nodes))
            ray.get([w.start_writer.remote(self.n_writers, schema) for w in writers])
            ray.get([r.start_reader.remote(self._channels, self.base_positions) for r in readers])
        except RayError as exc:
            raise self._unwrap(exc) from exc
        log.info(
            "ray: %d reader and %d writer subtasks in %d channel actor(s) on %d node(s)",
            self.n_readers,
            self.n_writers,
            channels,
            len(self.nodes),
        )
        for actor in self._channels:
            self._poll(actor)

    def _await_placement(self, channels: int) -> None:
        ready = self._group.ready()
        deadline = time.monotonic() + PLACEMENT_TIMEOUT
        told = False
        while True:
            try:
                ray.get(ready, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                return
            except GetTimeoutError:
                if self.halt.is_set():
                    raise Cancelled from None
                free = ray.available_resources().get("CPU", 0)
                if time.monotonic() >= deadline:
                    msg = (
                        f"the Ray cluster did not give {channels} channel(s) one CPU each "
                        f"within {PLACEMENT_TIMEOUT:.0f}s; {free:g} CPU(s) free. Add nodes, or "
                        "lower setting.speed.channel"
                    )
                    raise JobFailedError(msg) from None
                if not told:
                    log.warning(
                        "ray: waiting for %d channel(s) of one CPU each (%g CPU(s) free); "
                        "failing after %.0fs",
                        channels,
                        free,
                        PLACEMENT_TIMEOUT,
                    )
                    told = True

    # -- messages ----------------------------------------------------------------------------

    def _poll(self, actor: Any) -> None:
        self._polls[actor.poll.remote(_POLL_SECONDS)] = actor

    @override
    def _wait(self, seconds: float) -> None:
        if not self._polls:
            super()._wait(seconds)
            return
        ready, _ = ray.wait(list(self._polls), num_returns=1, timeout=seconds)
        for ref in ready:
            actor = self._polls.pop(ref)
            try:
                events, delta, failure = ray.get(ref)
            except RayError as exc:
                self.fail(self._unwrap(exc))
                continue
            for metric, amount in delta.items():
                if metric == Metric.CDC_LAG:
                    self.metrics.set(Metric.CDC_LAG, amount)
                else:
                    self.metrics.add(Metric(metric), amount)
            for event in events:
                self._handle(actor, event)
            if isinstance(failure, BaseException):
                self.fail(failure)
            elif failure != "ended":
                self._poll(actor)

    def _handle(self, actor: Any, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "split":
            actor.give_split.remote(self.next_split(event[1]))
        elif kind == "positions":
            self.report_positions(event[1], event[2], event[3])
        elif kind == "finished":
            self.reader_finished(event[1])
        elif kind == "ack":
            self.ack(event[2], event[1], event[3])
        elif kind == "dirty":
            self.report_dirty(event[1])

    def _unwrap(self, exc: RayError) -> BaseException:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SyncxError):
            return cause
        return _lost(exc)

    @override
    def _broadcast(self, news: Barrier | CompletedCheckpoint) -> None:
        if isinstance(news, Barrier):
            for actor in self._channels[: self.n_readers]:
                actor.trigger.remote(news.checkpoint_id)
            return
        for actor in self._channels[: self.n_readers]:
            actor.complete.remote(news)
        if news.final:
            return  # committed by the driver itself (see _finish)
        for actor in self._channels[: self.n_writers]:
            actor.control.remote(Commit(news.id), news.id)

    @override
    def _complete(self, pending: PendingCheckpoint) -> None:
        if pending.final:
            self._final_handles = dict(pending.writers)
        super()._complete(pending)

    # -- end ---------------------------------------------------------------------------------

    @override
    def _finish(self) -> None:
        """End the actors, then commit the final checkpoint here, on the driver.

        The writer actors stop with the final checkpoint prepared but not committed; the driver
        commits its handles through tasks of its own writer, the object whose ``finish`` follows:
        a writer that keeps state across its tasks' commits (open file groups published at the
        end) sees them as in a local run. Commits are idempotent, and a restore after a crash
        here commits the same handles again.
        """
        writers = self._channels[: self.n_writers]
        joins = [w.join.remote(300.0) for w in writers]
        for actor in writers:
            actor.control.remote(Stop(clean=True), self.completed_id())
        try:
            failures = ray.get(joins)
        except RayError as exc:
            raise self._unwrap(exc) from exc
        for failure in failures:
            if failure is not None:
                raise failure
        for actor in self._channels:  # the readers idle since the final barrier
            actor.stop.remote()
        self._drain()
        tasks: dict[int, WriterTask] = {}
        try:
            for index, handle in commit_order(self._final_handles):
                if index not in tasks:
                    tasks[index] = self.writer.open(index, self.n_writers, self._schema)
                with self.metrics.timed(Metric.WRITE_DURATION):
                    tasks[index].commit(handle)
                crash_point("writer-committed")
        finally:
            for task in tasks.values():
                task.close()
        crash_point("final-committed")

    def _drain(self) -> None:
        """Take the last metric increments of every actor (they end once stopped)."""
        deadline = time.monotonic() + 60
        while self._polls and time.monotonic() < deadline:
            self._wait(1.0)
            if self._failure is not None:
                raise self._failure

    @override
    def _shutdown(self) -> None:
        completed, kept = self.completed_id(), self.settle(None)
        self.halt.set()
        waits: list[Any] = []
        with contextlib.suppress(RayError):
            for actor in self._channels[: self.n_writers]:
                actor.control.remote(Stop(clean=False), completed, kept)
                waits.append(actor.join.remote(30.0))
            ray.wait(waits, num_returns=len(waits), timeout=40)
        for actor in self._channels:
            with contextlib.suppress(Exception):
                actor.stop.remote()
                ray.kill(actor, no_restart=True)
        if self._group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self._group)
        self._channels, self._group, self._polls = [], None, {}
