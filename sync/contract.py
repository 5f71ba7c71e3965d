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

Positions, handles and split data are typed: a connector declares them as :class:`State`
subclasses (frozen dataclasses of JSON values with a version) in ``Reader.position_type``,
``Reader.split_type`` and ``Writer.handle_type``; the engine stores them with
:meth:`State.to_json` and hands them back rebuilt with :meth:`State.from_json`, so a plugin never
parses its own checkpoint JSON. Older versions are upgraded step by step by :meth:`State.upgrade`.

After a checkpoint is stored the engine calls :meth:`Reader.notify_checkpoint_complete` (on the
coordinator) and :meth:`SplitReader.notify_checkpoint_complete` (on the split's own thread, between
two batches, with the position that checkpoint stored for it): a Kafka reader commits its group
offsets there, a CDC reader that waits for its snapshot learns it is covered. Notifications may be
skipped (a later one subsumes them) and never arrive for a failed checkpoint.

A plugin sees the job only through :class:`JobContext`: its identity, channel counts, whether
checkpoints are on, and the few services it may call (dirty records, lag, the stop event).

Progress (optional): a bounded reader may say how much it expects to read with
:meth:`Reader.estimate` (an :class:`Estimate`: rows and/or source bytes, computed once before
reading), and its split readers how many source bytes they consumed with
:meth:`SplitReader.progress`; the engine's progress line turns them into a share done and an ETA.

Batches are :class:`pyarrow.RecordBatch`: columnar writers and readers need no per-row work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import pyarrow as pa

from sync.errors import FatalError
from sync.model import Params, RestoreSetting, Setting

__all__ = [
    "CompletedCheckpoint",
    "DirtyKind",
    "DirtyRecord",
    "Estimate",
    "Handle",
    "JobContext",
    "Position",
    "Reader",
    "Semantic",
    "Split",
    "SplitReader",
    "State",
    "StateVersionError",
    "Writer",
    "WriterTask",
    "decode",
    "encode",
    "job_identity",
]

Position = Any
"""A split's resume position: a :class:`State` (or a plain JSON value), ``None`` for its start."""

Handle = Any
"""What a writer's ``prepare`` returns: a :class:`State` (or a plain JSON value), ``None`` when
there is nothing to do."""

DirtyKind = Literal["conversion", "null", "duplicate", "other"]
Semantic = Literal["exactly-once", "at-least-once"]

P = TypeVar("P", bound=Params)


class StateVersionError(FatalError):
    """A checkpoint holds state of a newer version than this syncx knows (a downgrade)."""


class State:
    """Base of a connector's typed positions, handles and split data.

    Subclass it as a frozen dataclass whose fields are JSON values (str, int, float, bool,
    ``None``, lists and dicts of them). Stored form: the fields plus ``"v": VERSION``. When the
    fields change, raise ``VERSION`` and teach :meth:`upgrade` the step from the version before,
    so checkpoints written by an older syncx still restore.
    """

    VERSION: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """The stored form (a JSON object)."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {"v": self.VERSION, **{f.name: getattr(self, f.name) for f in fields}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Self:
        """Rebuild from the stored form, upgrading older versions step by step."""
        data = dict(raw)
        version = int(data.pop("v", 1))
        if version > cls.VERSION:
            msg = (
                f"{cls.__name__} version {version} in the checkpoint is newer than this syncx "
                f"knows ({cls.VERSION}): restore it with the syncx that wrote it"
            )
            raise StateVersionError(msg)
        while version < cls.VERSION:
            data = cls.upgrade(data, version)
            version += 1
        return cls(**data)

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn the fields of ``version`` into those of ``version + 1``."""
        msg = f"{cls.__name__} has no upgrade from version {version}"
        raise StateVersionError(msg)


def encode(value: Any) -> Any:
    """The JSON form of a position, handle or split data (a :class:`State` or a plain value)."""
    return value.to_json() if isinstance(value, State) else value


def decode(kind: type[State] | None, raw: Any) -> Any:
    """Rebuild a stored value as ``kind`` (``None`` and plain values stay as they are)."""
    if kind is None or raw is None or isinstance(raw, State):
        return raw
    return kind.from_json(raw)


@dataclass(frozen=True)
class Split:
    """A serializable, disjoint part of a reader's input (a key range, a file, a partition).

    ``data`` is the reader's :class:`State` (its ``split_type``) or a plain JSON object.
    """

    id: str
    data: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The form stored in checkpoints."""
        return {"id": self.id, "data": encode(self.data)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], kind: type[State] | None = None) -> Split:
        """Rebuild a split stored by :meth:`to_json` (its data as ``kind``)."""
        return cls(id=str(raw["id"]), data=decode(kind, raw.get("data") or {}))


@dataclass(frozen=True)
class CompletedCheckpoint:
    """What a reader learns when a checkpoint is stored: its id and the split positions in it."""

    id: int
    positions: Mapping[str, Position]
    """Split id → the position stored for it (splits not started yet are absent)."""
    done: frozenset[str]
    """Splits read to their end as of this checkpoint."""
    final: bool = False


@dataclass(frozen=True)
class Estimate:
    """How much a bounded reader expects to read: what the progress line's share done and ETA
    are measured against.

    ``bytes`` (when given) is compared with the source bytes the split readers report from
    :meth:`SplitReader.progress`; otherwise ``rows`` with the rows read (``numRead``). Estimates
    may be rough (a table's statistics): the progress line never shows 100% before the end.
    """

    rows: int | None = None
    """Rows the splits hold (a table's row estimate, the generated rows)."""
    bytes: int | None = None
    """Source bytes the splits hold (file sizes, the binlog between start and end)."""


@dataclass(frozen=True)
class DirtyRecord:
    """A record a conversion or a writer rejected, with the reason; it goes to the dirty sink."""

    row: dict[str, Any]
    error: str
    kind: DirtyKind = "other"
    field: str | None = None


@dataclass
class JobContext:
    """What the engine tells a plugin about the job it runs in, and the services it may call."""

    job_name: str
    job_id: str
    """12 hex digits naming this job and where its state lives: stable across runs and
    restores, distinct for two jobs of one name. Name transactions and staging with it."""
    run_id: str
    """Names one fresh run; a restore keeps it."""
    readers: int = 1
    """``setting.speed.readerChannel``: how many reader subtasks run."""
    writers: int = 1
    """``setting.speed.writerChannel``: how many writer subtasks run."""
    checkpoints: bool = False
    """Whether periodic checkpoints are taken (a bounded job always ends with a final one)."""
    restore: RestoreSetting = field(default_factory=RestoreSetting)
    """``setting.restore``: ChunJun's resume column (``restoreColumnName``/``Index``)."""
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
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    """A local folder for a plugin's temporary files (a reader's spill): ``tmp/`` in the job's
    state folder when that is on this machine, else the system temp dir. It may not exist yet;
    several jobs may share it, so a plugin names its files uniquely and deletes them itself."""

    @classmethod
    def of(
        cls,
        job_name: str,
        state_dir: Path,
        setting: Setting,
        *,
        run_id: str,
        checkpoints: bool | None = None,
        **services: Any,
    ) -> JobContext:
        """The context of job ``job_name`` whose state lives in ``state_dir``.

        ``checkpoints`` defaults to what ``setting.restore`` asks for; ``services`` are the
        remaining fields (``job_state``, ``batch_rows``, ``report_dirty``, ...).
        """
        restore = setting.restore
        if checkpoints is None:
            checkpoints = restore.is_restore or restore.checkpoint_interval is not None
        return cls(
            job_name=job_name,
            job_id=job_identity(job_name, state_dir),
            run_id=run_id,
            readers=setting.speed.readers,
            writers=setting.speed.writers,
            checkpoints=checkpoints,
            restore=restore,
            **services,
        )


def job_identity(job_name: str, state_dir: Path) -> str:
    """12 hex digits naming a job and its state folder (two jobs of one name never collide)."""
    seed = f"{job_name}\0{state_dir.resolve()}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


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

    def progress(self) -> int | None:
        """Source bytes consumed since the split was opened (the unit of ``Estimate.bytes``), or
        ``None`` when this reader does not count them. Called on the split's thread after
        every item, like :meth:`snapshot`; it must be cheap."""
        return None

    def notify_checkpoint_complete(self, checkpoint_id: int, position: Position) -> None:  # noqa: B027 - optional hook
        """Checkpoint ``checkpoint_id`` is stored with ``position`` for this split.

        Called on the split's own thread between two items, so no locking is needed; a later
        notification subsumes one that was skipped.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


class Reader(ABC, Generic[P]):
    """A source: plans splits and opens them from positions."""

    Parameters: ClassVar[type[Params]]
    """The typed model of this plugin's ``parameter`` block."""
    position_type: ClassVar[type[State] | None] = None
    """The :class:`State` its split readers' ``snapshot()`` returns (``None``: plain JSON)."""
    split_type: ClassVar[type[State] | None] = None
    """The :class:`State` in its splits' ``data`` (``None``: a plain JSON object)."""

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

    def estimate(self, splits: Sequence[Split]) -> Estimate | None:
        """How much ``splits`` hold (the splits this attempt still reads), for the progress
        line; called once before reading, for bounded readers only. ``None`` (the default) when
        unknown or too costly to learn; a failure here is logged and never fails the job."""
        del splits
        return None

    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        """State for the next scheduled run (an incremental watermark), from final positions."""
        del positions
        return None

    def effective_semantic(self) -> Semantic:
        """``at-least-once`` when some split cannot resume exactly (re-read from its start)."""
        return "exactly-once"

    def key_columns(self) -> list[str] | None:
        """The columns that identify a row (a table's primary key), for ``syncx verify``."""
        return None

    def incremental_column(self) -> str | None:
        """The column an incremental run reads by (ChunJun's ``increColumn``), for
        ``syncx verify --since``; ``None`` when there is none."""
        return None

    def read_since(self, column: str, value: str) -> bool:
        """Read only the rows whose ``column`` is at or after ``value`` (text, taken as a value
        of the column's type), for ``syncx verify --since``; call it before :meth:`plan`.
        False (the default) when this reader cannot filter: verify then filters what it reads.
        A value that is not one of the column's type is a ``ValueError`` naming the column."""
        del column, value
        return False

    def tables(self) -> dict[str, Reader[Any]] | None:
        """For a stream of several tables' changes (CDC): each table it captures (``db.table``)
        and a bounded reader of that table as it is now (closed by this reader's :meth:`close`),
        for ``syncx verify``; ``None`` for a reader that is verified as it is."""
        return None

    def changes_since(
        self, splits: Sequence[Split], checkpoint: CompletedCheckpoint
    ) -> Iterator[tuple[str, pa.Table]]:
        """The rows changed after ``checkpoint``'s positions up to the source's end when the
        iteration starts, as ``(table, row images)`` (every column or at least the key ones;
        a superset is fine), for ``syncx verify`` of a CDC job. What cannot be
        resumed from (an unfinished snapshot) is a :class:`~sync.errors.JobFileError` at the
        call, before anything is read."""
        del splits, checkpoint
        msg = f"{type(self).__name__} cannot list the changes after a checkpoint"
        raise NotImplementedError(msg)

    def notify_checkpoint_complete(self, checkpoint: CompletedCheckpoint) -> None:
        """A checkpoint is stored (called on the coordinator thread, before writers commit it)."""

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
    handle_type: ClassVar[type[State] | None] = None
    """The :class:`State` its tasks' ``prepare`` returns (``None``: plain JSON)."""

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

    def read_back(
        self, table: str | None = None, columns: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]] | None:
        """The reader that reads what this writer wrote, for ``syncx verify``: its name, and
        parameters (by their job-file names) to add to the ones the two plugins' models share,
        which are carried over (``None``: this writer's output cannot be read back). For a CDC
        job, ``table`` is a source table (``db.table``) whose target is wanted, with the source's
        ``columns``, to be read by name in that order."""
        del table, columns
        return None

    def close(self) -> None:
        """Release pools and clients; called once at the end of every attempt."""
