"""Transaction strategies: how a writer's subtasks make their work durable, then visible.

A writer chooses one :class:`Strategy` when it is built (:meth:`SqlWriter.new_strategy`), from
its parameters; each writer subtask gets a :class:`Session` of it. ``sqlwriter`` has two:

- :class:`StagedStrategy` (``semantic: exactly-once``): rows and changes go into staging tables
  tagged with the subtask's current *segment*, in a short transaction per batch; ``prepare``
  seals the segment and returns its handle; the commit moves it into the target once
  (:mod:`writers.sql.staging`, :mod:`writers.sql.changes`). A DDL and what follows it are
  deferred until their segment is committed (:mod:`writers.sql.deferred`).
- :class:`DirectStrategy` (``semantic: at-least-once``): rows go straight into the target in one
  transaction per subtask committed at ``prepare`` (per batch on SQLite, where one writer holds
  the database lock); changes are applied by key at once. Nothing to recover.

``mysqlwriter`` plugs in its own (XA, or a local transaction per checkpoint) the same way.
"""

from __future__ import annotations

import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from libs import cdc
from libs.types import row_of
from sync.contract import DirtyRecord
from sync.errors import JobFailedError
from writers.sql.changes import apply_by_key, conform_changes
from writers.sql.ddl import apply_ddl
from writers.sql.handles import CdcEntry, CdcHandle, RowsHandle, SqlHandle
from writers.sql.rows import Insert, Rows, as_rows, insert_all, last_per_key
from writers.sql.tables import CdcTarget

if TYPE_CHECKING:
    from writers.sql.task import SqlWriterTask
    from writers.sql.writer import SqlWriter

__all__ = ["DirectStrategy", "Session", "StagedStrategy", "Strategy"]


class Session(ABC):
    """One writer subtask's side of a strategy: writes its batches, prepares its handles."""

    def __init__(self, task: SqlWriterTask) -> None:
        self.task = task
        self.writer = task.writer

    @abstractmethod
    def write_rows(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Write rows already conformed to the target's columns; the rejected ones."""

    @abstractmethod
    def write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Write a CDC batch (changes of one source table, or a DDL); the rejected rows."""

    @abstractmethod
    def prepare(self, checkpoint_id: int) -> SqlHandle | None:
        """Make what was written durable but invisible; its handle (``None``: nothing)."""

    def committed(self, handle: SqlHandle | None) -> None:  # noqa: B027 - optional hook
        """``handle`` (this subtask's) was committed."""

    def aborted(self, handle: SqlHandle | None) -> None:  # noqa: B027 - optional hook
        """``handle`` (this subtask's) was aborted."""

    @abstractmethod
    def discard(self) -> None:
        """Throw away what was written since the last ``prepare``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Strategy(ABC):
    """How a writer makes its subtasks' work durable and visible; chosen once per writer."""

    def __init__(self, writer: SqlWriter) -> None:
        self.writer = writer

    @abstractmethod
    def session(self, task: SqlWriterTask) -> Session:
        """The session of a new writer subtask."""

    def recover(self, handles: list[SqlHandle]) -> None:  # noqa: B027 - optional hook
        """At the start of every attempt: commit ``handles``, undo any other prepared work."""

    def commit(self, handle: SqlHandle) -> None:
        """Make a prepared handle's work visible (idempotent)."""
        self.writer.staging.commit(handle)

    def abort(self, handle: SqlHandle) -> None:
        """Throw a prepared handle's work away (idempotent)."""
        self.writer.staging.abort(handle)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (end of an attempt)."""


# -- sqlwriter's sessions -----------------------------------------------------------------------


class _SqlSession(Session):
    """What both ``sqlwriter`` sessions do with changes: decode, conform, bind."""

    def write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        writer = self.writer
        decoded = cdc.decode(batch)
        if isinstance(decoded, cdc.DdlChange):
            self.before_ddl()
            apply_ddl(writer, decoded)
            return []
        assert decoded is not None
        target = writer.changes.target(decoded.table)
        changes, upsert, dirty = conform_changes(target, decoded)
        if not changes.num_rows:
            return dirty
        rows, unbound, originals = as_rows(changes, target.table)
        dirty.extend(unbound)
        upsert = [upsert[i] for i in originals]
        return dirty + self.changes(target, changes, rows, upsert, originals)

    def before_ddl(self) -> None:
        """A DDL is about to run (our row locks must not block it)."""

    @abstractmethod
    def changes(
        self,
        target: CdcTarget,
        batch: pa.RecordBatch,
        rows: Rows,
        upsert: list[bool],
        originals: list[int],
    ) -> list[DirtyRecord]:
        """Write bound changes of ``target`` (``originals``: their rows in ``batch``)."""

    def insert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Rows,
        batch: pa.RecordBatch,
        originals: list[int],
        insert: Insert | None = None,
    ) -> list[DirtyRecord]:
        """:func:`writers.sql.rows.insert_all` with the dialect's bulk insert by default."""
        writer = self.writer
        return insert_all(
            writer, conn, table, rows, batch, originals, insert or writer.dialect.insert_rows
        )


class StagedStrategy(Strategy):
    """Exactly-once through staging tables and commit markers (see the module docs)."""

    def session(self, task: SqlWriterTask) -> Session:
        return _StagedSession(task)

    def recover(self, handles: list[SqlHandle]) -> None:
        writer = self.writer
        if writer.routes_by_source():
            writer.ensure_markers()
        else:
            writer.ensure_staging()
        writer.staging.recover(handles)


class _StagedSession(_SqlSession):
    """Stages rows and changes in the subtask's current segment."""

    def __init__(self, task: SqlWriterTask) -> None:
        super().__init__(task)
        self._segment = uuid.uuid4().hex
        self._staged = 0
        self._seq = 0
        self._staged_columns: set[str] = set()
        self._cdc_entries: list[dict[str, Any]] = []
        """Per target and staging table, the seq range staged in this segment, in order."""
        self._cdc_open: dict[str, dict[str, Any]] = {}
        self._deferring = False
        """This segment defers what it is given (a DDL came)."""
        self._deferred = 0
        """Records this segment deferred."""
        self._waiting: set[str] = set()
        """Our prepared segments with deferred records that are not committed yet."""

    def write_rows(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        writer = self.writer
        target = writer.target()
        rows, dirty, originals = as_rows(batch, target.table)
        writer.ensure_staging()
        with writer.engine().begin() as conn:
            if writer.params.write_mode == "insert":
                rejected = self._known_duplicates(conn, rows)
                if rejected:
                    for index, error in rejected.items():
                        dirty.append(
                            DirtyRecord(row_of(batch, originals[index]), error, "duplicate")
                        )
                    rows = [r for i, r in enumerate(rows) if i not in rejected]
                    originals = [o for i, o in enumerate(originals) if i not in rejected]
            self._tag(rows)
            failed = self.insert(conn, target.staging, rows, batch, originals)
            dirty.extend(failed)
        written = len(rows) - len(failed)
        if written > 0:
            self._staged += written
            self._staged_columns.update(batch.schema.names)
        return dirty

    def write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Stage changes; a DDL and everything after it are deferred until their segment is
        committed (:mod:`writers.sql.deferred`) — also in later segments while one of ours
        with a deferred DDL waits for its commit (the DDL has not run yet)."""
        if self._deferring or self._waiting or cdc.is_ddl(batch.schema):
            self._deferring = True
            self._deferred += self.writer.deferred.store(self._segment, self._deferred, batch)
            return []
        return super().write_changes(batch)

    def changes(
        self,
        target: CdcTarget,
        batch: pa.RecordBatch,
        rows: Rows,
        upsert: list[bool],
        originals: list[int],
    ) -> list[DirtyRecord]:
        writer = self.writer
        writer.changes.ensure_staging(target)
        low = self._tag(rows, upsert)
        with writer.engine().connect() as conn:
            writer.dialect.change_session(conn)
            with conn.begin():
                dirty = self.insert(conn, target.staging, rows, batch, originals)
        name = writer.changes.target_name(target.info.qualified)
        entry = self._cdc_open.get(name)
        columns = list(batch.schema.names)
        if entry is None or entry["staging"] != target.staging_name:
            entry = {
                "table": name,
                "staging": target.staging_name,
                "columns": columns,
                "key": list(target.key),
                "seq": [low, self._seq - 1],
            }
            self._cdc_entries.append(entry)
            self._cdc_open[name] = entry
        else:
            entry["seq"][1] = self._seq - 1
            entry["columns"] = list(dict.fromkeys([*entry["columns"], *columns]))
        return dirty

    def prepare(self, checkpoint_id: int) -> SqlHandle | None:
        changes = bool(self._cdc_entries or self._deferred)
        if changes and self._staged:
            msg = "a writer subtask received both CDC changes and plain rows"
            raise JobFailedError(msg)
        if not (changes or self._staged):
            return None
        handle = self._handle(checkpoint_id)
        if self._deferred:
            self._waiting.add(handle.segment)
        self._new_segment()
        return handle

    def committed(self, handle: SqlHandle | None) -> None:
        if handle:
            self._waiting.discard(handle.segment)

    def aborted(self, handle: SqlHandle | None) -> None:
        if handle:
            self._waiting.discard(handle.segment)

    def discard(self) -> None:
        if self._cdc_entries or self._deferred or self._staged:
            self.writer.staging.abort(self._handle(0))
            self._new_segment()

    def _handle(self, checkpoint_id: int) -> SqlHandle:
        """The handle of the open segment: of its staged changes, else of its staged rows."""
        writer = self.writer
        ctx = writer.ctx
        common: dict[str, Any] = {
            "schema": writer.staging_schema(),
            "job": ctx.job_name,
            "run": ctx.run_id,
            "subtask": self.task.subtask,
            "checkpoint": checkpoint_id,
            "segment": self._segment,
        }
        if self._cdc_entries or self._deferred:
            entries = tuple(CdcEntry(**dict(e, seq=list(e["seq"]))) for e in self._cdc_entries)
            return CdcHandle(**common, targets=entries, deferred=self._deferred)
        target = writer.target()
        order = list(target.table.c.keys())
        columns = sorted(self._staged_columns, key=order.index)
        return RowsHandle(**common, table=target.staging_name, columns=columns)

    def _new_segment(self) -> None:
        self._segment = uuid.uuid4().hex
        self._seq = 0
        self._staged = 0
        self._staged_columns = set()
        self._cdc_entries, self._cdc_open = [], {}
        self._deferring, self._deferred = False, 0

    def _tag(self, rows: Rows, upsert: Sequence[bool] | None = None) -> int:
        """Tag rows to stage with this segment and their order (and, for changes, whether
        each upserts); the first sequence number given."""
        ctx = self.writer.ctx
        meta = {
            "_syncx_job": ctx.job_name,
            "_syncx_run": ctx.run_id,
            "_syncx_subtask": self.task.subtask,
            "_syncx_segment": self._segment,
        }
        first = self._seq
        for index, row in enumerate(rows):
            row.update(meta)
            if upsert is not None:
                row["_syncx_op"] = "u" if upsert[index] else "d"
            row["_syncx_seq"] = self._seq
            self._seq += 1
        return first

    def _known_duplicates(self, conn: Connection, rows: Rows) -> dict[int, str]:
        """Rows whose unique key repeats in the batch, exists in the target, or is staged."""
        writer = self.writer
        target = writer.target()
        written = set(rows[0]) if rows else set()
        bad: dict[int, str] = {}
        for key in target.info.unique_keys:
            if not set(key) <= written:
                continue
            first: dict[tuple[Any, ...], int] = {}
            for index, row in enumerate(rows):
                if index in bad:
                    continue
                value = tuple(row[c] for c in key)
                if any(v is None for v in value):
                    continue
                if value in first:
                    bad[index] = (
                        f"duplicate key ({', '.join(key)})=({_show(value)}) within the input"
                    )
                else:
                    first[value] = index
            if not first:
                continue
            for table, where in (
                (target.table, "already exists in"),
                (target.staging, "is already staged for"),
            ):
                for found in writer.dialect.existing_keys(conn, table, key, list(first)):
                    hit = first.get(found)
                    if hit is not None and hit not in bad:
                        bad[hit] = (
                            f"duplicate key ({', '.join(key)})=({_show(found)}) {where} table "
                            f"'{target.info.qualified}'"
                        )
        return bad


class DirectStrategy(Strategy):
    """At-least-once: straight into the target (see the module docs)."""

    def session(self, task: SqlWriterTask) -> Session:
        return _DirectSession(task)


class _DirectSession(_SqlSession):
    """One connection in an open transaction, committed at ``prepare``."""

    def __init__(self, task: SqlWriterTask) -> None:
        super().__init__(task)
        self._conn: Connection | None = None
        self._pending = False

    def write_rows(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        writer = self.writer
        target = writer.target()
        rows, dirty, originals = as_rows(batch, target.table)
        if target.key:
            rows, originals = last_per_key(rows, originals, target.key)
            insert: Insert = writer.upsert_rows
        else:
            insert = writer.dialect.insert_rows
        with self._transaction(changes=False) as conn:
            return dirty + self.insert(conn, target.table, rows, batch, originals, insert)

    def before_ddl(self) -> None:
        self._commit()

    def changes(
        self,
        target: CdcTarget,
        batch: pa.RecordBatch,
        rows: Rows,
        upsert: list[bool],
        originals: list[int],
    ) -> list[DirtyRecord]:
        """Delete every touched key, insert each key's last upsert (idempotent: a replay after
        a restore ends in the same rows)."""
        with self._transaction(changes=True) as conn:
            return apply_by_key(self.writer, conn, target, batch, rows, upsert, originals)

    def prepare(self, checkpoint_id: int) -> SqlHandle | None:
        del checkpoint_id
        self._commit()
        return None

    def discard(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._pending = False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _commit(self) -> None:
        if self._conn is not None and self._pending:
            self._conn.commit()
            self._pending = False

    @contextlib.contextmanager
    def _transaction(self, *, changes: bool) -> Iterator[Connection]:
        """The subtask's connection in its open transaction, committed at ``prepare``; rolled
        back when the body fails; committed at once on SQLite, where one writer holds the
        database lock."""
        if self._conn is None:
            self._conn = self.writer.engine().connect()
            if changes:
                self.writer.dialect.change_session(self._conn)
        conn = self._conn
        if not conn.in_transaction():
            conn.begin()
        self._pending = True
        try:
            yield conn
        except BaseException:
            conn.rollback()
            self._pending = False
            raise
        if conn.dialect.name == "sqlite":
            conn.commit()
            self._pending = False


def _show(value: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in value)
