"""``mysqlwriter`` / ``mysqlsink``: rows into a MySQL or MariaDB table, with ChunJun's parameters.

Built on :class:`writers.sql.SqlWriter` (reflection, column mapping, type conversion, ``preSql``
/ ``postSql``); this module adds MySQL's statements, the fast path and XA. A ChunJun
``mysqlwriter`` job runs unchanged: ``connection[{jdbcUrl, table}]`` (or ``host``/``port``/
``database``), ``username``, ``password``, ``column`` (names or ``{name, type}``: matched by
position to the incoming columns; the target's own types are what rows are converted to),
``writeMode`` / ``mode``, ``updateKey`` / ``uniqueKey``, ``batchSize``, ``preSql``, ``postSql``,
``semantic``; ``fullcolumn`` and ``flushIntervalMills`` are accepted and ignored (commits follow
checkpoints).

**Modes.** ``insert``: ``INSERT`` (a duplicate key is a dirty record); ``replace``: ``REPLACE
INTO``; ``update``: ``INSERT ... ON DUPLICATE KEY UPDATE`` of the written non-key columns. With
no ``updateKey`` the key is the primary key, else the first unique key; a table with neither is
written with inserts (ChunJun does the same). MySQL applies ``ON DUPLICATE KEY`` / ``REPLACE`` on
*any* unique key of the table, not only ``updateKey``.

**Fast path.** ``insert`` and ``replace`` load each batch with ``LOAD DATA LOCAL INFILE`` from
text that Arrow writes column-wise (tab-separated, ``\\`` escapes, ``\\N`` NULLs, binary columns as
hex loaded with ``UNHEX``, ``BIT`` columns through ``CAST(... AS UNSIGNED)``), inside the same
transaction as everything else. ``LOAD DATA LOCAL`` turns errors into warnings (a duplicate row
is skipped, a too-long value truncated), so each load runs in a ``SAVEPOINT``: when the server
reports any warning the load is rolled back to it and the batch is written again with multi-row
``INSERT`` statements (``batchSize`` rows each, values rendered by Arrow too), which fail on a bad
row; a failed statement is split in halves until the rejected rows are found. A rejected row
becomes a dirty record with the server's message (kind ``duplicate``, ``null`` or ``other``) and
the rest of its batch is written. ``update`` always uses the statements. ``loadData: false``
turns the fast path off; a server with ``local_infile`` off falls back by itself.

**Exactly-once** (``semantic: exactly-once``): each writer subtask writes in an XA transaction
per checkpoint: ``XA START`` at the first row after a checkpoint; at the barrier
(``prepare``) a row into ``_syncx_commits`` (job, run, subtask, checkpoint, xid), ``XA END``,
``XA PREPARE``; after the checkpoint is stored, ``XA COMMIT`` from a second connection (the
subtask's own is already in the next transaction). The xid is ``syncx-<job>-<run>`` /
``<subtask>-<attempt>-<sequence>`` (the checkpoint id is not known when ``XA START`` runs; the
handle maps the xid to it). ``begin`` (every start and restore) lists this job's prepared
transactions with ``XA RECOVER``, commits those of the restored checkpoint and rolls back every
other (work of checkpoints that never completed). A checkpoint without rows has no xid.

MariaDB keeps a prepared transaction attached to the connection that prepared it (others are
told "unknown XID" until it disconnects), so a subtask closes its connection after ``XA
PREPARE`` and opens a new one for the next transaction; a commit that finds the xid still
listed by ``XA RECOVER`` asks again for a while.

*Commit ambiguity.* A commit whose reply was lost, or a commit repeated after a restore, finds
the xid gone (``XAER_NOTA``): it counts as committed only if the transaction's own row in
``_syncx_commits`` is there (it became visible with the commit); otherwise the prepared work was
rolled back by someone else (``XA ROLLBACK`` by hand) and the job fails loudly instead of
reporting rows it does not have. Markers of other runs are removed after 7 days.

**At-least-once** (``semantic: at-least-once``, ChunJun's default): one local transaction per
subtask and checkpoint, committed at ``prepare``; rows after the last checkpoint may be written
again on restore (idempotent with ``replace`` / ``update``).

Sessions use the UTC time zone (TIMESTAMP values are UTC), ``STRICT_TRANS_TABLES`` and
``NO_AUTO_VALUE_ON_ZERO`` (a 0 in an ``AUTO_INCREMENT`` column stays 0, as ``mysqldump`` does).
A lost connection fails the attempt as retriable: ``setting.restart`` restarts the job from its
last checkpoint (the open transaction is rolled back by the server, a prepared one waits).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from pydantic import AliasChoices, Field
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.sql.expression import Executable
from typing_extensions import override

from sync import cdc
from sync.errors import FatalError, JobFailedError, JobFileError, RetriableError
from sync.mysql import (
    Form,
    MysqlConfigError,
    MysqlEndpoint,
    Xid,
    column_form,
    connect,
    dirty_kind,
    errno,
    error_text,
    is_connection_lost,
    is_row_error,
    job_identity,
    mysql_type,
    query_failure,
    quote_ident,
    sql_values,
    tsv_text,
    with_retries,
    xa_recover,
)
from sync.plugin import DirtyRecord, Handle, JobContext, Semantic
from sync.sql import ColumnInfo, TableInfo
from sync.types import row_of
from writers.sql import SqlWriter, SqlWriterParams, SqlWriterTask

__all__ = ["MysqlWriter", "MysqlWriterParams", "MysqlWriterTask"]

log = logging.getLogger(__name__)

XAER_NOTA = 1397
XA_DETACH_WAIT = 30.0
"""Seconds to wait for a prepared transaction's connection to let go of it."""
XA_GONE_WAIT = 5.0
"""Seconds an xid to commit may be in neither list before it counts as gone (the connection of
a killed process is being cleaned up)."""
LOCAL_INFILE_REFUSED = frozenset({1148, 2068, 3948, 3950})
MARKER_RETENTION = dt.timedelta(days=7)
SQL_MODE_ON = ("STRICT_TRANS_TABLES", "NO_AUTO_VALUE_ON_ZERO")
SQL_MODE_OFF = ("NO_BACKSLASH_ESCAPES",)
"""Writer sessions: bad values are errors, 0 stays 0 in AUTO_INCREMENT columns, and string
literals take backslash escapes (as syncx writes them)."""


class MysqlWriterParams(MysqlEndpoint, SqlWriterParams):
    """``parameter`` of ``mysqlwriter`` (ChunJun's names; see the module docs)."""

    semantic: Semantic = Field(
        default="at-least-once",
        description="at-least-once (one transaction per checkpoint; ChunJun's default) or "
        "exactly-once (XA: prepared at the checkpoint, committed after it).",
    )
    batch_size: int = Field(
        default=1024, gt=0, description="Rows per INSERT statement (LOAD DATA takes a batch)."
    )
    load_data: bool = Field(
        default=True,
        validation_alias=AliasChoices("loadData", "load_data"),
        description="Use LOAD DATA LOCAL INFILE for insert/replace (the fast path).",
    )
    fullcolumn: list[str] | None = Field(
        default=None, description="ChunJun's full column list (accepted, not needed)."
    )
    flush_interval_mills: int | str | None = Field(
        default=None, description="Accepted for ChunJun compatibility: commits follow checkpoints."
    )


class MysqlWriter(SqlWriter):
    """Writes into one MySQL table: LOAD DATA / multi-row statements, XA exactly-once."""

    Parameters = MysqlWriterParams
    plugin_name: ClassVar[str] = "mysqlwriter"
    task_class: ClassVar[type[SqlWriterTask]]
    params: MysqlWriterParams

    def __init__(self, params: MysqlWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._local = threading.local()
        self._controls: list[Any] = []
        self._bits: set[str] | None = None

    # -- framework ---------------------------------------------------------------------------

    @override
    def check(self) -> None:
        try:
            super().check()
        except MysqlConfigError:
            raise
        except JobFileError as exc:
            if any("writer.parameter" in issue.path for issue in exc.issues):
                raise MysqlConfigError(exc.issues, exc.source) from exc
            raise

    @override
    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        if self.routes_by_source():
            super().begin(handles, fresh=fresh)
            return
        live = [h for h in handles if h]
        xa = [h for h in live if h.get("kind") == "xa"]
        other = [h for h in live if h.get("kind") != "xa"]
        if self.params.semantic == "exactly-once" or xa or other:
            self.target()
            self.ensure_markers()
            for handle in other:  # CDC changes staged by the generic writer
                super().commit_handle(handle)
            if other or self.params.semantic == "exactly-once":
                self._clean_cdc_staging({str(h["segment"]) for h in other})
            self._recover(xa)
            self._prune_xa_markers({str(h["run"]) for h in live} | {self.ctx.run_id})
        if fresh:
            self._run_statements(self.params.pre_sql, "preSql")

    @override
    def close(self) -> None:
        for conn in self._controls:
            with contextlib.suppress(Exception):
                conn.close()
        self._controls.clear()
        self._local = threading.local()
        super().close()

    # -- hooks -------------------------------------------------------------------------------

    @override
    def column_field(self, column: ColumnInfo) -> pa.Field:
        return pa.field(column.name, mysql_type(column.type).arrow, nullable=column.nullable)

    @override
    def upsert_statement(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable:
        """``INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)`` for the non-key columns."""
        statement = mysql_dialect.insert(table)
        if select is not None:
            statement = statement.from_select(list(columns), select)
        updates = {c: statement.inserted[c] for c in columns if c not in key}
        if not updates:
            first = key[0]
            updates = {first: table.c[first]}
        return statement.on_duplicate_key_update(updates)

    @override
    def commit_handle(self, handle: Handle) -> None:
        if handle and handle.get("kind") == "xa":
            self.commit_xa(handle)
        else:
            super().commit_handle(handle)

    @override
    def abort_handle(self, handle: Handle) -> None:
        if handle and handle.get("kind") == "xa":
            self.abort_xa(handle)
        else:
            super().abort_handle(handle)

    @override
    def _upsert_key(self, info: TableInfo) -> list[str]:
        if self.params.update_key or info.primary_key:
            return super()._upsert_key(info)
        if info.unique_keys:
            return list(info.unique_keys[0])
        log.warning(
            "%s: table '%s' has no primary or unique key: writeMode %s writes plain inserts",
            self.plugin_name,
            info.qualified,
            self.params.write_mode,
        )
        return []

    # -- XA ----------------------------------------------------------------------------------

    def xid_prefix(self) -> str:
        """``syncx-<job identity>-``: every xid of this job (any run) starts so."""
        return f"syncx-{job_identity(self.ctx.job_name, self.ctx.state_dir)}-"

    def new_xid(self, subtask: int, token: str, sequence: int) -> Xid:
        """The xid of a subtask's ``sequence``-th transaction in this attempt."""
        return Xid(f"{self.xid_prefix()}{self.ctx.run_id}", f"{subtask}-{token}-{sequence}")

    def connect(self, *, autocommit: bool = True, local_infile: bool = False) -> Any:
        """A pymysql connection to the target with the writer's session settings."""
        url = self.engine().url
        try:
            conn = connect(url, autocommit=autocommit, local_infile=local_infile)
            cursor = conn.cursor()
            try:
                cursor.execute("SELECT @@SESSION.sql_mode")
                (current,) = cursor.fetchone()
                modes = [m for m in str(current or "").split(",") if m and m not in SQL_MODE_OFF]
                modes += [m for m in SQL_MODE_ON if m not in modes]
                cursor.execute("SET SESSION sql_mode = %s", (",".join(modes),))
            finally:
                cursor.close()
            return conn
        except Exception as exc:
            if is_connection_lost(exc):
                msg = (
                    f"{self.plugin_name}: cannot connect: {error_text(exc, [self.params.secret()])}"
                )
                raise RetriableError(msg) from exc
            raise

    def control(self) -> Any:
        """This thread's autocommit connection for XA COMMIT / ROLLBACK / RECOVER."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
            with self._lock:
                self._controls.append(conn)
        return conn

    def reset_control(self) -> None:
        """Drop this thread's control connection (after it was lost)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def commit_xa(self, handle: Handle) -> None:
        """``XA COMMIT`` a prepared handle; idempotent (see "commit ambiguity" in the docs)."""
        xid = Xid.from_json(handle["xid"])

        def attempt() -> None:
            cursor = self.control().cursor()
            try:
                done = self._xa_command(
                    cursor,
                    "COMMIT",
                    xid,
                    settled=lambda: self._marker_exists(cursor, handle),
                    patience=XA_GONE_WAIT,
                )
                if done or self._marker_exists(cursor, handle):
                    return
                msg = (
                    f"{self.plugin_name}: the prepared XA transaction {xid} (checkpoint "
                    f"{handle['checkpoint']}, subtask {handle['subtask']}, {handle.get('rows', '?')}"
                    " rows) is gone without having been committed: it was rolled back outside "
                    "syncx, so its rows are not in the target; run the job anew"
                )
                raise FatalError(msg)
            finally:
                cursor.close()

        with_retries(
            attempt,
            what=f"committing XA transaction {xid}",
            where=self.engine().url,
            secrets=[self.params.secret()],
            stopping=None,
            on_retry=self.reset_control,
        )
        log.debug("committed xid %s (checkpoint %s)", xid, handle["checkpoint"])

    def abort_xa(self, handle: Handle) -> None:
        """``XA ROLLBACK`` a prepared handle; one that is gone is fine."""
        self._rollback(Xid.from_json(handle["xid"]))

    def _xa_command(
        self,
        cursor: Any,
        command: str,
        xid: Xid,
        *,
        settled: Callable[[], bool] | None = None,
        patience: float = 1.0,
    ) -> bool:
        """``XA COMMIT|ROLLBACK xid``: True when done, False when the xid does not exist.

        MariaDB keeps a prepared transaction attached to the connection that prepared it until
        that connection is gone, and answers "unknown XID" to the others meanwhile; the writer
        closes it after ``XA PREPARE``, and a killed process's connection closes with it. So
        "unknown XID" is asked again: while ``XA RECOVER`` lists the xid (up to
        :data:`XA_DETACH_WAIT`), and for ``patience`` seconds more while it does not (a dead
        connection being cleaned up shows in neither list for a moment) — unless ``settled``
        says the work is done (its commit marker is there).
        """
        delay = 0.02
        waited = 0.0
        while True:
            try:
                cursor.execute(f"XA {command} {xid.sql()}")
                return True
            except Exception as exc:
                if errno(exc) != XAER_NOTA:
                    raise
            if settled is not None and settled():
                return False
            listed = xid in xa_recover(cursor)
            if not listed and waited >= patience:
                return False
            if waited >= XA_DETACH_WAIT:
                msg = (
                    f"{self.plugin_name}: XA transaction {xid} is still held by another "
                    f"connection after {XA_DETACH_WAIT:.0f}s"
                )
                raise JobFailedError(msg)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.5)

    def _rollback(self, xid: Xid) -> None:
        def attempt() -> None:
            cursor = self.control().cursor()
            try:
                self._xa_command(cursor, "ROLLBACK", xid)
            finally:
                cursor.close()

        with_retries(
            attempt,
            what=f"rolling back XA transaction {xid}",
            where=self.engine().url,
            secrets=[self.params.secret()],
            on_retry=self.reset_control,
        )

    def _recover(self, handles: list[Handle]) -> None:
        """Commit the restored checkpoint's transactions, roll back this job's other ones."""
        wanted = {Xid.from_json(h["xid"]) for h in handles}
        for handle in handles:
            self.commit_xa(handle)
        cursor = self.control().cursor()
        try:
            prepared = [x for x in xa_recover(cursor) if x.gtrid.startswith(self.xid_prefix())]
        except Exception as exc:
            msg = (
                f"{self.plugin_name}: XA RECOVER failed ({error_text(exc, [self.params.secret()])})"
                "; exactly-once needs it (MySQL 8: the XA_RECOVER_ADMIN privilege)"
            )
            raise query_failure(exc, msg) from exc
        finally:
            cursor.close()
        for xid in prepared:
            if xid in wanted:
                continue
            log.info("rolling back XA transaction %s of an unfinished checkpoint", xid)
            self._rollback(xid)

    def _marker_exists(self, cursor: Any, handle: Handle) -> bool:
        markers = self.markers()
        table = _qualified(markers.schema, markers.name)
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE `job` = %s AND `run` = %s AND `subtask` = %s "
            "AND `checkpoint` = %s AND `segment` = %s",
            (
                handle["job"],
                handle["run"],
                int(handle["subtask"]),
                int(handle["checkpoint"]),
                handle["segment"],
            ),
        )
        return cursor.fetchone() is not None

    def _prune_xa_markers(self, runs: set[str]) -> None:
        """Remove markers of this job's other runs older than :data:`MARKER_RETENTION`.

        Best effort: the old markers are found with a consistent (non-locking) read and deleted
        by primary key in READ COMMITTED, so marker rows of prepared transactions (of this or
        another job) are neither waited for nor touched.
        """
        markers = self.markers()
        cutoff = (dt.datetime.now(dt.UTC) - MARKER_RETENTION).isoformat(timespec="seconds")
        key = [markers.c[c] for c in ("job", "run", "subtask", "checkpoint", "segment")]
        found = sa.select(*key).where(
            markers.c.job == self.ctx.job_name,
            markers.c.run.not_in(sorted(runs)),
            markers.c.committed_at < cutoff,
        )
        try:
            with self.engine().connect() as base:
                conn = base.execution_options(isolation_level="READ COMMITTED")
                old = [tuple(row) for row in conn.execute(found.limit(10_000))]
                conn.rollback()
                if not old:
                    return
                conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
                try:
                    conn.execute(sa.delete(markers).where(sa.tuple_(*key).in_(old)))
                    conn.commit()
                finally:
                    conn.rollback()
                    conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = DEFAULT")
                    conn.commit()
        except sa.exc.DBAPIError as exc:
            log.info("old commit markers not removed now: %s", error_text(exc))

    def bit_columns(self) -> set[str]:
        """Target columns of type BIT (loaded through ``CAST(... AS UNSIGNED)``)."""
        with self._lock:
            if self._bits is None:
                info = self.target().info
                self._bits = {c.name for c in info.columns if mysql_type(c.type).wire == "bit"}
            return self._bits


def _qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def _as_duration(array: pa.Array) -> pa.Array | None:
    """A time of day or a (day-time) interval as ``duration('us')``; None for other types."""
    t = array.type
    if pa.types.is_time(t):
        return array.cast(pa.time64("us")).cast(pa.int64()).cast(pa.duration("us"))
    if t == pa.month_day_nano_interval():
        layout = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
        values = np.frombuffer(array.buffers()[1], dtype=layout, count=len(array) + array.offset)[
            array.offset :
        ]
        micros = values["days"].astype(np.int64) * 86_400_000_000 + values["nanos"] // 1000
        mask = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
        return pa.array(micros, type=pa.duration("us"), mask=mask)
    return None


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


class MysqlWriterTask(SqlWriterTask):
    """One writer subtask: a connection, a transaction (XA or local) per checkpoint."""

    writer: MysqlWriter
    loads: ClassVar[int] = 0
    """Batches written by LOAD DATA in this process (tests check that the fast path ran)."""
    reloads: ClassVar[int] = 0
    """Batches LOAD DATA warned about and that were written again with statements."""

    def __init__(self, writer: SqlWriter, subtask: int, schema: pa.Schema | None) -> None:
        super().__init__(writer, subtask, schema)
        assert isinstance(writer, MysqlWriter)
        self._raw: Any = None
        self._xid: Xid | None = None
        self._open = False
        self._rows = 0
        self._token = uuid.uuid4().hex[:8]
        self._sequence = 0
        self._load_data = writer.params.load_data and writer.params.write_mode != "update"
        self._scratch: Path | None = None

    # -- contract ----------------------------------------------------------------------------

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if batch.num_rows == 0:
            return []
        if cdc.is_cdc(batch.schema) or self.writer.routes_by_source():
            return super().write(batch)
        batch, dirty = self._conform(batch)
        if batch.num_rows == 0:
            return dirty
        try:
            self._start()
            dirty.extend(self._write_rows(batch))
        except Exception as exc:
            raise self._failure(exc, "writing") from exc
        return dirty

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        if self._cdc_entries or self._staged:
            return super().prepare(checkpoint_id)
        if not self._open:
            return None
        try:
            if self.exactly_once:
                return self._prepare_xa(checkpoint_id)
            self._execute("COMMIT")
        except Exception as exc:
            raise self._failure(exc, "preparing the checkpoint") from exc
        self._open = False
        self._rows = 0
        return None

    @override
    def commit(self, handle: Handle) -> None:
        self.writer.commit_handle(handle)

    @override
    def abort(self, handle: Handle) -> None:
        self.writer.abort_handle(handle)

    @override
    def discard(self) -> None:
        if self._cdc_entries or self._staged:
            super().discard()
        if not self._open or self._raw is None:
            return
        with contextlib.suppress(Exception):
            if self._xid is not None:
                self._execute(f"XA END {self._xid.sql()}")
                self._execute(f"XA ROLLBACK {self._xid.sql()}")
            else:
                self._execute("ROLLBACK")
        self._open = False
        self._xid = None
        self._rows = 0

    @override
    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()  # an open transaction is rolled back by the server
            self._raw = None
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                self._scratch.unlink()
        super().close()

    @override
    def _conform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
        """The generic conversion, after times of day and intervals (DuckDB's ``transformSql``
        turns durations into them) going into ``TIME`` columns became durations."""
        writer = self.writer
        names = self._names or writer.resolve_columns(batch.schema.names, configured=False)
        fields = writer.target().fields
        arrays = list(batch.columns)
        changed = False
        for index, name in enumerate(names[: len(arrays)]):
            target = fields[name].type
            if pa.types.is_duration(target) and not pa.types.is_duration(arrays[index].type):
                converted = _as_duration(arrays[index])
                if converted is not None:
                    arrays[index] = converted
                    changed = True
        if changed:
            batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        return super()._conform(batch)

    # -- transactions ------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.writer.connect(autocommit=True, local_infile=self._load_data)
        return self._raw

    def _execute(self, statement: str | bytes, args: Any = None) -> int:
        cursor = self._connection().cursor()
        try:
            return int(cursor.execute(statement, args) or 0)
        finally:
            cursor.close()

    def _start(self) -> None:
        if self._open:
            return
        if self.exactly_once:
            self._sequence += 1
            self._xid = self.writer.new_xid(self.subtask, self._token, self._sequence)
            self._execute(f"XA START {self._xid.sql()}")
        else:
            self._execute("START TRANSACTION")
        self._open = True

    def _prepare_xa(self, checkpoint_id: int) -> Handle:
        xid = self._xid
        assert xid is not None
        writer = self.writer
        ctx = writer.ctx
        markers = writer.markers()
        handle = {
            "kind": "xa",
            "xid": xid.to_json(),
            "job": ctx.job_name,
            "run": ctx.run_id,
            "subtask": self.subtask,
            "checkpoint": checkpoint_id,
            "segment": xid.bqual,
            "rows": self._rows,
        }
        self._execute(
            f"INSERT INTO {_qualified(markers.schema, markers.name)} "
            "(`job`, `run`, `subtask`, `checkpoint`, `segment`, `target`, `committed_at`) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                ctx.job_name,
                ctx.run_id,
                self.subtask,
                checkpoint_id,
                xid.bqual,
                writer.target().info.qualified,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            ),
        )
        self._execute(f"XA END {xid.sql()}")
        self._execute(f"XA PREPARE {xid.sql()}")
        # MariaDB lets another connection commit a prepared transaction only once the
        # connection that prepared it is gone: close it (the next write opens a new one).
        self._drop_connection()
        return handle

    def _failure(self, exc: Exception, what: str) -> Exception:
        """A lost connection fails the attempt as retriable; other errors say what failed."""
        if isinstance(exc, RetriableError | JobFailedError):
            return exc
        detail = error_text(exc, [self.writer.params.secret()])
        if is_connection_lost(exc):
            self._drop_connection()
            msg = (
                f"{self.writer.plugin_name}: lost the connection while {what} (subtask "
                f"{self.subtask}): {detail}; the open transaction is rolled back by the server"
            )
            return RetriableError(msg)
        if errno(exc) is None:
            return exc
        msg = f"{self.writer.plugin_name}: {what} failed (subtask {self.subtask}): {detail}"
        return query_failure(exc, msg)

    def _drop_connection(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
        self._raw = None
        self._open = False
        self._xid = None
        self._rows = 0

    # -- writing -----------------------------------------------------------------------------

    def _forms(self, batch: pa.RecordBatch) -> list[Form]:
        bits = self.writer.bit_columns()
        return [column_form(f, f.name in bits) for f in batch.schema]

    def _write_rows(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        forms = self._forms(batch)
        if self._load_data:
            loaded = self._load(batch, forms)
            if loaded is not None:
                return loaded
        dirty = self._statements(batch, forms)
        self._rows += batch.num_rows - len(dirty)
        return dirty

    def _load(self, batch: pa.RecordBatch, forms: list[Form]) -> list[DirtyRecord] | None:
        """``LOAD DATA LOCAL INFILE`` in a savepoint; ``None`` when it must be done with
        statements (a warning: some row was changed or skipped; or LOCAL is refused)."""
        writer = self.writer
        target = writer.target()
        if self._scratch is None:
            self._scratch = _scratch_dir() / f"syncx-load-{os.getpid()}-{uuid.uuid4().hex}.tsv"
        data = tsv_text(batch, forms)
        with self._scratch.open("wb") as out:
            out.write(data)
        columns: list[str] = []
        sets: list[str] = []
        for index, (name, form) in enumerate(zip(batch.schema.names, forms, strict=True)):
            if form == "hex":
                columns.append(f"@v{index}")
                sets.append(f"{quote_ident(name)} = UNHEX(@v{index})")
            elif form == "bit":
                columns.append(f"@v{index}")
                sets.append(f"{quote_ident(name)} = CAST(@v{index} AS UNSIGNED)")
            else:
                columns.append(quote_ident(name))
        replace = "REPLACE " if writer.params.write_mode == "replace" and target.key else ""
        statement = (
            f"LOAD DATA LOCAL INFILE %s {replace}INTO TABLE "
            f"{_qualified(target.info.schema, target.info.name)} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(columns)})" + (f" SET {', '.join(sets)}" if sets else "")
        )
        self._execute("SAVEPOINT syncx_load")
        cursor = self._connection().cursor()
        try:
            loaded = cursor.execute(statement, (str(self._scratch),))
            warnings = cursor.warning_count
        except Exception as exc:
            cursor.close()
            if errno(exc) in LOCAL_INFILE_REFUSED:
                log.warning(
                    "%s: the server refuses LOAD DATA LOCAL (%s): writing with INSERT statements",
                    writer.plugin_name,
                    error_text(exc),
                )
                self._load_data = False
                self._execute("ROLLBACK TO SAVEPOINT syncx_load")
                return None
            raise
        cursor.close()
        if warnings == 0 and (replace or loaded == batch.num_rows):
            self._execute("RELEASE SAVEPOINT syncx_load")
            self._rows += batch.num_rows
            MysqlWriterTask.loads += 1
            return []
        self._execute("ROLLBACK TO SAVEPOINT syncx_load")
        MysqlWriterTask.reloads += 1
        log.debug("LOAD DATA warned (%s warnings): writing the batch with statements", warnings)
        return None

    def _statements(self, batch: pa.RecordBatch, forms: list[Form]) -> list[DirtyRecord]:
        """Multi-row statements of ``batchSize`` rows; a failing one is split until the bad
        rows are found (they become dirty records)."""
        writer = self.writer
        target = writer.target()
        names = batch.schema.names
        columns = ", ".join(quote_ident(n) for n in names)
        table = _qualified(target.info.schema, target.info.name)
        mode = writer.params.write_mode
        verb = "REPLACE" if mode == "replace" and target.key else "INSERT"
        prefix = f"{verb} INTO {table} ({columns}) VALUES ".encode()
        suffix = b""
        if mode == "update" and target.key:
            updates = [n for n in names if n not in target.key] or [target.key[0]]
            suffix = (
                " ON DUPLICATE KEY UPDATE "
                + ", ".join(f"{quote_ident(n)} = VALUES({quote_ident(n)})" for n in updates)
            ).encode()
        rows = sql_values(batch, forms)
        dirty: list[DirtyRecord] = []
        size = writer.params.batch_size
        pending = [(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]
        while pending:
            start, end = pending.pop(0)
            statement = prefix + b",".join(rows[start:end]) + suffix
            try:
                self._execute(statement)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                if end - start == 1:
                    dirty.append(
                        DirtyRecord(
                            row_of(batch, start),
                            error_text(exc, [writer.params.secret()]),
                            dirty_kind(exc),
                        )
                    )
                    continue
                middle = (start + end) // 2
                pending[0:0] = [(start, middle), (middle, end)]
        return dirty


MysqlWriter.task_class = MysqlWriterTask
