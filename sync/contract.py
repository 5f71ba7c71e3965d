"""The plugin contract: readers as sets of resumable splits, writers with two-phase commit.

A :class:`Reader` turns its parameters into :class:`Split` s (serializable, disjoint parts of the
input) and opens one from an optional position. An open :class:`SplitReader` yields Arrow record
batches and returns from :meth:`SplitReader.snapshot` the position *after the last batch it
yielded*; it keeps no position anywhere else, so the core can checkpoint between any two batches.

A :class:`Writer` runs one :class:`WriterTask` per writer subtask. A task takes batches, and at a
checkpoint :meth:`WriterTask.prepare` makes everything received so far durable but not visible
and returns a small serializable handle; :meth:`WriterTask.commit` (after the checkpoint is
stored) and :meth:`WriterTask.abort` act on such a handle and are idempotent. On a restore,
:meth:`Writer.begin` commits the restored checkpoint's handles and aborts any later prepared work.
A writer that cannot do two phases declares ``semantic = "at-least-once"``.

Batches are :class:`pyarrow.RecordBatch`: columnar writers and readers need no per-row work.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pyarrow as pa

from sync.model import Params, Setting

__all__ = [
    "DirtyKind",
    "DirtyRecord",
    "Handle",
    "JobContext",
    "Position",
    "Reader",
    "Semantic",
    "Split",
    "SplitReader",
    "Writer",
    "WriterTask",
]

Position = Any
"""A split's resume position: any JSON-serializable value, ``None`` for the split's start."""

Handle = Any
"""What a writer's ``prepare`` returns: JSON-serializable, ``None`` when there is nothing to do."""

DirtyKind = Literal["conversion", "null", "duplicate", "other"]
Semantic = Literal["exactly-once", "at-least-once"]

P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class Split:
    """A serializable, disjoint part of a reader's input (a key range, a file, a partition)."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The form stored in checkpoints."""
        return {"id": self.id, "data": self.data}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Split:
        """Rebuild a split stored by :meth:`to_json`."""
        return cls(id=str(raw["id"]), data=dict(raw.get("data") or {}))


@dataclass(frozen=True)
class DirtyRecord:
    """A record a conversion or a writer rejected, with the reason; it goes to the dirty sink."""

    row: dict[str, Any]
    error: str
    kind: DirtyKind = "other"
    field: str | None = None


@dataclass
class JobContext:
    """What the runtime tells a plugin about the job it runs in."""

    job_name: str
    run_id: str
    state_dir: Path
    setting: Setting
    job_state: dict[str, Any] = field(default_factory=dict)
    """The reader's incremental state saved by the last successful run (a watermark)."""
    batch_rows: int = 4096
    """How many rows a reader should put in one batch (smaller under a tight record limit)."""
    report_dirty: Callable[[DirtyRecord], None] = field(default=lambda _record: None)
    """Readers hand records they cannot convert to this; they count against errorLimit."""
    report_lag: Callable[[float], None] = field(default=lambda _seconds: None)
    """CDC readers report seconds between an event's time and its processing (``cdcLag``)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the job is stopping: long waits inside a plugin should end early."""


class SplitReader(ABC):
    """One open split. Yields batches; ``None`` is an idle tick (nothing new yet).

    An unbounded or slow source must yield at least about once a second (a ``None`` tick when idle)
    so that checkpoints are not delayed.
    """

    @abstractmethod
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        """Yield the split's batches, from the position it was opened at."""

    @abstractmethod
    def snapshot(self) -> Position:
        """The position after the last batch or tick yielded (JSON-serializable).

        Called after every item the iterator yields, ``None`` ticks included, so an idle stream
        still advances past events it skipped (another table's transactions, heartbeats).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


class Reader(ABC, Generic[P]):
    """A source: plans splits and opens them from positions."""

    Parameters: ClassVar[type[Params]]
    """The typed model of this plugin's ``parameter`` block."""

    def __init__(self, params: P, ctx: JobContext) -> None:
        self.params = params
        self.ctx = ctx

    def check(self) -> None:
        """Connect and check what can be checked before the job starts (tables, privileges)."""

    def schema(self) -> pa.Schema | None:
        """The schema of the batches, when known before reading."""
        return None

    @property
    def bounded(self) -> bool:
        """True when every split ends (a batch job); False for streams (binlog, polling)."""
        return True

    @abstractmethod
    def plan(self, parallelism: int) -> list[Split]:
        """Split the input into disjoint parts; ``parallelism`` is the number of reader subtasks."""

    @abstractmethod
    def open(self, split: Split, position: Position | None) -> SplitReader:
        """Open a split at ``position`` (``None``: from its start)."""

    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        """State for the next scheduled run (an incremental watermark), from final positions."""
        del positions
        return None

    def effective_semantic(self) -> Semantic:
        """``at-least-once`` when some split cannot resume exactly (re-read from its start)."""
        return "exactly-once"

    def close(self) -> None:
        """Release pools and clients; called once at the end of every attempt."""


class WriterTask(ABC):
    """One writer subtask: receives batches, takes part in checkpoints in two phases."""

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Write a batch; return the records the target rejected (the rest are written).

        Records rejected later (at ``prepare``) go to ``JobContext.report_dirty``.
        """

    @abstractmethod
    def prepare(self, checkpoint_id: int) -> Handle:
        """Make everything written so far durable but invisible; return its handle."""

    @abstractmethod
    def commit(self, handle: Handle) -> None:
        """Make a prepared handle's data visible. Idempotent."""

    @abstractmethod
    def abort(self, handle: Handle) -> None:
        """Throw away a prepared handle's data. Idempotent."""

    def discard(self) -> None:  # noqa: B027 - optional hook
        """Throw away work not prepared yet (the job is stopping or failing)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


class Writer(ABC, Generic[P]):
    """A sink: opens one task per writer subtask."""

    Parameters: ClassVar[type[Params]]
    semantic: ClassVar[Semantic] = "exactly-once"
    """What the writer guarantees across failures; ``at-least-once`` may duplicate on restore."""

    def __init__(self, params: P, ctx: JobContext) -> None:
        self.params = params
        self.ctx = ctx

    def check(self) -> None:
        """Connect and check what can be checked before the job starts."""

    def effective_semantic(self) -> Semantic:
        """The guarantee with these parameters (a writer may offer both)."""
        return self.semantic

    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        """Once per attempt (a restart is a new attempt), before any task opens.

        Commit ``handles`` (a stored checkpoint's: restored, or the last run's final one whose
        commit may not have finished) and abort anything else this job prepared and left behind.
        ``fresh`` is true when the run starts anew rather than from a checkpoint: then prepare
        the target (``overwrite`` empties it, ``preSql`` runs); never on a restore.
        """

    @abstractmethod
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        """Open writer subtask ``subtask`` of ``subtasks``."""

    def finish(self) -> None:
        """Once, after the final checkpoint is committed (postSql)."""

    def close(self) -> None:
        """Release pools and clients; called once at the end of every attempt."""
