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

**Changes** (CDC batches from ``binlogreader``; ``table: "*"`` routes each source table to the
target table of its name) are applied by key in the transaction rows would go to: the XA
transaction of the checkpoint (exactly-once) or the local one (at-least-once). Per batch, each
key's last change is applied (a primary-key change is a delete of the old key and an upsert of
the new; :func:`libs.cdc.net_effect`): deletes with ``DELETE ... WHERE (key) IN (...)``, upserts
with the row path's ``LOAD DATA ... REPLACE`` / multi-row ``REPLACE`` (which locks only the keys
it writes: subtasks copying a snapshot into one table never wait on each other); batches apply
in arrival order, so each key's changes keep theirs. Sessions applying changes run in READ
COMMITTED (no gap locks). Nothing is staged: ``XA PREPARE`` makes the
checkpoint's changes durable and ``XA COMMIT`` visible, with the marker and recovery of rows.
The target needs a primary key, or ``keyColumns``.

*Held changes.* A prepared transaction keeps its row locks until ``XA COMMIT``, which this
subtask's own thread runs once the checkpoint is stored; a change arriving in between may touch
a key it locked, and waiting for that lock would wait for the commit that only comes after the
wait. So in exactly-once, changes that arrive while one of the subtask's transactions is prepared
and not committed are held in memory, and the commit applies them right after its own work (they
come after the barrier: a kill loses nothing the reader will not send again). If the next
barrier comes first, or they pass :data:`HELD_BYTES`, they are deferred (below) instead.

*DDL* (``ddl: apply``) cannot run inside an XA transaction (it commits implicitly), nor before
the transaction holding the changes that precede it is committed (a prepared transaction keeps
its tables' metadata locks). So in exactly-once a DDL record and every record after it in the
same transaction (held ones included) are **deferred**: stored as Arrow IPC in
``_syncx_deferred`` (owner = job identity, segment = the xid's branch, seq, payload) *inside*
the XA transaction, so they are prepared and committed with the changes before them. The commit
of that handle, after ``XA COMMIT``, replays them in order: a DDL runs (idempotently,
:meth:`writers.sql.SqlWriter.apply_ddl`) and then its record is deleted; a batch of changes is
applied in a local transaction that also deletes its record. A record gone means done, so a
commit interrupted anywhere — and repeated by a restore, which always holds that handle, since a
writer acknowledges its next checkpoint only after the commit returned — resumes where it
stopped, repeating at most the last DDL, which then finds its work done. Changes arriving while
such a handle waits for its commit are held as above, so they apply after the replay. A
transaction rolled back takes its deferred records with it; ``begin`` removes records of this job
that no restored handle names. A deferred change the target rejects at replay stops the job with
the reason (it stays deferred for the next run). In at-least-once the open transaction is
committed and the DDL runs at once.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from pydantic import AliasChoices, Field
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.sql.expression import Executable
from typing_extensions import override

from libs import cdc
from libs.mysql.connect import (
    MysqlConfigError,
    MysqlEndpoint,
    connect,
    dirty_kind,
    errno,
    error_text,
    is_connection_lost,
    is_row_error,
    query_failure,
    with_retries,
)
from libs.mysql.text import Form, column_form, quote_ident, sql_values, tsv_text
from libs.mysql.types import mysql_type
from libs.mysql.xa import Xid, xa_recover
from libs.sql import ColumnInfo, TableInfo
from libs.types import row_of
from sync.contract import DirtyRecord, Handle, JobContext, Semantic
from sync.errors import FatalError, JobFailedError, JobFileError, RetriableError
from writers.sql import (
    CdcTarget,
    SqlWriter,
    SqlWriterParams,
    SqlWriterTask,
    WriteMode,
    conform_changes,
)

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
DEFERRED_TABLE = "_syncx_deferred"
"""Records deferred behind a DDL inside an XA transaction (see "DDL" in the module docs)."""
DEFERRED_BYTES = 4 << 20
"""A deferred batch is stored in slices of about this many bytes (below max_allowed_packet)."""
HELD_BYTES = 64 << 20
"""Changes held in memory while a prepared transaction waits for its commit; beyond this
they are deferred instead."""

Execute = Callable[..., int]
"""Runs one statement (with optional parameters) in some transaction; the affected row count."""


@dataclass(frozen=True)
class _Destination:
    """A table that rows are loaded or inserted into, and how they meet the rows there."""

    table: str
    """Quoted and qualified."""
    mode: WriteMode
    key: tuple[str, ...]
    """The key of replace/update (empty: plain inserts)."""
    bits: frozenset[str]
    """Columns of type BIT (loaded through ``CAST(... AS UNSIGNED)``)."""

    def forms(self, schema: pa.Schema) -> list[Form]:
        """How each column of ``schema`` is written."""
        return [column_form(f, f.name in self.bits) for f in schema]

    def insert(
        self, execute: Execute, batch: pa.RecordBatch, *, size: int, secret: str | None
    ) -> list[DirtyRecord]:
        """Multi-row statements of ``size`` rows; a failing one is split until the bad rows are
        found (they become dirty records)."""
        names = batch.schema.names
        columns = ", ".join(quote_ident(n) for n in names)
        verb = "REPLACE" if self.mode == "replace" and self.key else "INSERT"
        prefix = f"{verb} INTO {self.table} ({columns}) VALUES ".encode()
        suffix = b""
        if self.mode == "update" and self.key:
            updates = [n for n in names if n not in self.key] or [self.key[0]]
            suffix = (
                " ON DUPLICATE KEY UPDATE "
                + ", ".join(f"{quote_ident(n)} = VALUES({quote_ident(n)})" for n in updates)
            ).encode()
        rows = sql_values(batch, self.forms(batch.schema))
        dirty: list[DirtyRecord] = []
        pending = [(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]
        while pending:
            start, end = pending.pop(0)
            try:
                execute(prefix + b",".join(rows[start:end]) + suffix)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                if end - start == 1:
                    dirty.append(
                        DirtyRecord(
                            row_of(batch, start), error_text(exc, [secret]), dirty_kind(exc)
                        )
                    )
                    continue
                middle = (start + end) // 2
                pending[0:0] = [(start, middle), (middle, end)]
        return dirty


Insert = Callable[[pa.RecordBatch, _Destination], list[DirtyRecord]]
"""Writes rows into a destination in the caller's transaction; the rejected rows."""


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
        self._rows_destination: _Destination | None = None
        self._deferred_ready = False

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
        """Commit the restored handles (XA; changes staged by ``sqlwriter``'s path in runs
        before this writer applied them itself), roll back and remove everything else of this
        job: prepared transactions, staged and deferred changes."""
        live = [h for h in handles if h]
        if self.params.semantic == "exactly-once" or live:
            keep = {str(h["segment"]) for h in live}
            self.ensure_markers()
            for handle in live:
                if handle.get("kind") != "xa":
                    super().commit_handle(handle)
            self._clean_cdc_staging(keep)
            self._recover([h for h in live if h.get("kind") == "xa"])
            self._clean_deferred(keep)
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
        return f"syncx-{self.ctx.job_id}-"

    def new_xid(self, subtask: int, token: str, sequence: int) -> Xid:
        """The xid of a subtask's ``sequence``-th transaction in this attempt."""
        return Xid(f"{self.xid_prefix()}{self.ctx.run_id}", f"{subtask}-{token}-{sequence}")

    def connect(
        self, *, autocommit: bool = True, local_infile: bool = False, read_committed: bool = False
    ) -> Any:
        """A pymysql connection to the target with the writer's session settings (and READ
        COMMITTED for applying changes)."""
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
                if read_committed:
                    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
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
        """``XA COMMIT`` a prepared handle, then replay what it deferred; idempotent (see
        "commit ambiguity" and "DDL" in the module docs)."""
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
        if handle.get("deferred"):
            with_retries(
                lambda: self._replay(handle),
                what=f"applying the changes deferred in XA transaction {xid}",
                where=self.engine().url,
                secrets=[self.params.secret()],
            )

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

    # -- where rows and changes go ------------------------------------------------------------

    def rows_destination(self) -> _Destination:
        """The job's table, written as ``writeMode`` says."""
        with self._lock:
            if self._rows_destination is None:
                target = self.target()
                self._rows_destination = _Destination(
                    _qualified(target.info.schema, target.info.name),
                    self.params.write_mode,
                    tuple(target.key),
                    _bit_columns(target.info),
                )
            return self._rows_destination

    def apply_changes(
        self,
        execute: Execute,
        target: CdcTarget,
        rows: pa.RecordBatch,
        upsert: list[bool],
        insert: Insert,
    ) -> list[DirtyRecord]:
        """Apply conformed changes to ``target`` in the caller's transaction: of each key's last
        change, delete the keys it deletes and ``REPLACE`` the rows it upserts; the rejected
        rows. ``REPLACE`` locks only the keys it writes, where a ``DELETE`` of keys that are not
        there may scan a small table and wait on every row another subtask is writing."""
        table = _qualified(target.info.schema, target.info.name)
        into = _Destination(table, "replace", tuple(target.key), _bit_columns(target.info))
        keys = rows.select(target.key)
        values = list(zip(*(column.to_pylist() for column in keys.columns), strict=True))
        deletes, upserts = cdc.net_effect(values, upsert)
        literals = sql_values(keys.take(pa.array(deletes, pa.int64())), into.forms(keys.schema))
        where = ", ".join(quote_ident(k) for k in target.key)
        prefix = f"DELETE FROM {table} WHERE ({where}) IN (".encode()
        size = self.params.batch_size
        for start in range(0, len(literals), size):
            execute(prefix + b",".join(literals[start : start + size]) + b")")
        if not upserts:
            return []
        return insert(rows.take(pa.array(upserts, pa.int64())), into)

    # -- deferred changes ----------------------------------------------------------------------

    def owner(self) -> str:
        """What marks this job's deferred records (its identity: name and state folder)."""
        return self.ctx.job_id

    def deferred_table(self) -> sa.Table:
        """``_syncx_deferred`` beside the marker table."""
        return sa.Table(
            DEFERRED_TABLE,
            sa.MetaData(),
            sa.Column("owner", sa.String(32), primary_key=True),
            sa.Column("segment", sa.String(64), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("payload", sa.LargeBinary(length=2**32 - 1), nullable=False),
            schema=self.markers().schema,
        )

    def ensure_deferred(self) -> None:
        """Create the deferred-records table when missing (once; on a connection of its own:
        the subtask's is inside an XA transaction)."""
        with self._lock:
            if not self._deferred_ready:
                with self.engine().begin() as conn:
                    self.deferred_table().create(conn, checkfirst=True)
                self._deferred_ready = True

    def _replay(self, handle: Handle) -> None:
        """Apply, in order, what a committed transaction deferred; each record is deleted as it
        is applied (a DDL just after it ran), so an interrupted replay resumes where it stopped."""
        deferred = self.deferred_table()
        table = _qualified(deferred.schema, deferred.name)
        mine = (self.owner(), str(handle["segment"]))
        conn = self.connect(read_committed=True)
        try:
            cursor = conn.cursor()
            while True:
                cursor.execute(
                    f"SELECT `seq`, `payload` FROM {table} WHERE `owner` = %s AND `segment` = %s "
                    "ORDER BY `seq` LIMIT 1",
                    mine,
                )
                found = cursor.fetchone()
                if found is None:
                    return
                seq, payload = found
                done = f"DELETE FROM {table} WHERE `owner` = %s AND `segment` = %s AND `seq` = %s"
                change = cdc.decode(pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch())
                if isinstance(change, cdc.DdlChange):
                    self.apply_ddl(change)
                    cursor.execute(done, (*mine, seq))
                    continue
                assert change is not None
                cursor.execute("START TRANSACTION")
                self._apply_deferred(cursor.execute, change, handle)
                cursor.execute(done, (*mine, seq))
                cursor.execute("COMMIT")
        except (FatalError, RetriableError):
            raise
        except Exception as exc:
            if errno(exc) is None:
                raise
            msg = (
                f"{self.plugin_name}: applying the changes deferred by checkpoint "
                f"{handle['checkpoint']} failed: {error_text(exc, [self.params.secret()])}"
            )
            raise query_failure(exc, msg) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # an open transaction is rolled back by the server

    def _apply_deferred(self, execute: Execute, change: cdc.Changes, handle: Handle) -> None:
        target = self.cdc_target(change.table)
        rows, upsert, dirty = conform_changes(target, change)
        size, secret = self.params.batch_size, self.params.secret()
        dirty += self.apply_changes(
            execute,
            target,
            rows,
            upsert,
            lambda batch, into: into.insert(execute, batch, size=size, secret=secret),
        )
        if dirty:
            msg = (
                f"{self.plugin_name}: a change of {change.table} deferred behind a DDL "
                f"(checkpoint {handle['checkpoint']}) is rejected by '{target.info.qualified}': "
                f"{dirty[0].error}. It stays in {DEFERRED_TABLE}: change the target to accept it "
                "and run again with --restore latest"
            )
            raise FatalError(msg)

    def _clean_deferred(self, keep: set[str]) -> None:
        """Delete this job's deferred records outside the ``keep`` segments (left by a replay a
        fresh run will never finish): found with a non-locking read, deleted by primary key, so
        rows of other jobs' prepared transactions are never waited for."""
        deferred = self.deferred_table()
        with self.engine().connect() as base:
            conn = base.execution_options(isolation_level="READ COMMITTED")
            if not sa.inspect(conn).has_table(deferred.name, schema=deferred.schema):
                return
            found = sa.select(deferred.c.owner, deferred.c.segment, deferred.c.seq).where(
                deferred.c.owner == self.owner()
            )
            if keep:
                found = found.where(deferred.c.segment.not_in(sorted(keep)))
            old = [tuple(row) for row in conn.execute(found)]
            if old:
                key = sa.tuple_(deferred.c.owner, deferred.c.segment, deferred.c.seq)
                conn.execute(sa.delete(deferred).where(key.in_(old)))
                log.info("removed %d deferred record(s) of an unfinished commit", len(old))
            conn.commit()


def _qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def _bit_columns(info: TableInfo) -> frozenset[str]:
    return frozenset(c.name for c in info.columns if mysql_type(c.type).wire == "bit")


def _payloads(batch: pa.RecordBatch) -> Iterator[bytes]:
    """``batch`` as Arrow IPC streams of about :data:`DEFERRED_BYTES` each, in order."""
    rows = max(1, batch.num_rows * DEFERRED_BYTES // max(batch.nbytes, 1))
    for start in range(0, batch.num_rows, rows):
        part = batch.slice(start, rows)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as stream:
            stream.write_batch(part)
        yield sink.getvalue().to_pybytes()


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
        self._load_data = writer.params.load_data
        self._scratch: Path | None = None
        self._changes = False
        """This subtask applies CDC changes (its sessions run in READ COMMITTED)."""
        self._deferring = False
        """The open transaction defers what it is given (see "DDL" in the module docs)."""
        self._deferred = 0
        self._uncommitted: set[str] = set()
        """Segments of this subtask's prepared transactions that are not committed yet."""
        self._held: list[pa.RecordBatch] = []
        """Changes received while a prepared transaction holds its locks (see the docs)."""
        self._held_bytes = 0

    # -- contract ----------------------------------------------------------------------------

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if batch.num_rows == 0:
            return []
        if cdc.is_cdc(batch.schema):
            try:
                return self._write_changes(batch)
            except Exception as exc:
                raise self._failure(exc, "applying changes") from exc
        if self.writer.routes_by_source():
            return super().write(batch)  # refuses plain rows
        batch, dirty = self._conform(batch)
        if batch.num_rows == 0:
            return dirty
        try:
            self._start()
            rejected = self._write_rows(batch, self.writer.rows_destination())
        except Exception as exc:
            raise self._failure(exc, "writing") from exc
        self._rows += batch.num_rows - len(rejected)
        return dirty + rejected

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        if not (self._open or self._held):
            return None
        try:
            if self.exactly_once:
                return self._prepare_xa(checkpoint_id)
            self._commit_local()
        except Exception as exc:
            raise self._failure(exc, "preparing the checkpoint") from exc
        return None

    @override
    def commit(self, handle: Handle) -> None:
        self.writer.commit_handle(handle)
        if handle:
            self._uncommitted.discard(str(handle["segment"]))
        if self._held and not self._uncommitted:
            held, self._held, self._held_bytes = self._held, [], 0
            report = self.writer.ctx.report_dirty
            try:
                for batch in held:
                    for record in self._apply(batch):
                        report(record)
            except Exception as exc:
                raise self._failure(exc, "applying changes") from exc

    @override
    def abort(self, handle: Handle) -> None:
        self.writer.abort_handle(handle)
        if handle:
            self._uncommitted.discard(str(handle["segment"]))

    @override
    def discard(self) -> None:
        self._held, self._held_bytes = [], 0  # after the last checkpoint: read again on restore
        if not self._open or self._raw is None:
            return
        with contextlib.suppress(Exception):
            if self._xid is not None:
                self._execute(f"XA END {self._xid.sql()}")
                self._execute(f"XA ROLLBACK {self._xid.sql()}")
            else:
                self._execute("ROLLBACK")
        self._end_transaction()

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
            self._raw = self.writer.connect(
                autocommit=True, local_infile=self._load_data, read_committed=self._changes
            )
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

    def _commit_local(self) -> None:
        """At-least-once: commit the open transaction."""
        if self._open:
            self._execute("COMMIT")
            self._end_transaction()

    def _end_transaction(self) -> None:
        self._open = False
        self._xid = None
        self._rows = 0
        self._deferring = False
        self._deferred = 0

    def _prepare_xa(self, checkpoint_id: int) -> Handle:
        self._defer_held()
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
        if self._deferred:
            handle["deferred"] = self._deferred
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
                "*" if writer.routes_by_source() else writer.target().info.qualified,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            ),
        )
        self._execute(f"XA END {xid.sql()}")
        self._execute(f"XA PREPARE {xid.sql()}")
        self._uncommitted.add(xid.bqual)
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
        self._end_transaction()

    # -- changes -----------------------------------------------------------------------------

    def _write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """A CDC batch: applied in the open transaction, held, or deferred (module docs)."""
        self._changes = True
        ddl = cdc.is_ddl(batch.schema)
        if not self.exactly_once:
            if not ddl:
                return self._apply(batch)
            change = cdc.decode(batch)
            assert isinstance(change, cdc.DdlChange)
            self._commit_local()  # our row locks would block the DDL
            self.writer.apply_ddl(change)
            return []
        if self._deferring or ddl:
            self._defer_held()
            self._defer(batch)
        elif self._uncommitted:
            self._held.append(batch)
            self._held_bytes += batch.nbytes
            if self._held_bytes > HELD_BYTES:
                self._defer_held()
        else:
            return self._apply(batch)
        return []

    def _apply(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Apply a batch of changes in the open transaction (started when needed)."""
        writer = self.writer
        change = cdc.decode(batch)
        assert isinstance(change, cdc.Changes)
        target = writer.cdc_target(change.table)
        rows, upsert, dirty = conform_changes(target, change)
        if rows.num_rows:
            self._start()
            dirty += writer.apply_changes(self._execute, target, rows, upsert, self._write_rows)
            self._rows += len(upsert)
        return dirty

    def _defer_held(self) -> None:
        """Defer the held changes (from now on this transaction defers all it is given)."""
        held, self._held, self._held_bytes = self._held, [], 0
        for batch in held:
            self._defer(batch)

    def _defer(self, batch: pa.RecordBatch) -> None:
        """Store ``batch`` in ``_syncx_deferred`` inside the open XA transaction."""
        writer = self.writer
        writer.ensure_deferred()
        self._start()
        assert self._xid is not None
        self._deferring = True
        deferred = writer.deferred_table()
        statement = (
            f"INSERT INTO {_qualified(deferred.schema, deferred.name)} "
            "(`owner`, `segment`, `seq`, `payload`) VALUES (%s, %s, %s, %s)"
        )
        for payload in _payloads(batch):
            self._execute(statement, (writer.owner(), self._xid.bqual, self._deferred, payload))
            self._deferred += 1

    # -- writing -----------------------------------------------------------------------------

    def _write_rows(self, batch: pa.RecordBatch, into: _Destination) -> list[DirtyRecord]:
        """Rows into ``into`` in the open transaction: LOAD DATA, else statements; the
        rejected rows."""
        forms = into.forms(batch.schema)
        if self._load_data and into.mode != "update":
            loaded = self._load(batch, forms, into)
            if loaded is not None:
                return loaded
        params = self.writer.params
        return into.insert(self._execute, batch, size=params.batch_size, secret=params.secret())

    def _load(
        self, batch: pa.RecordBatch, forms: list[Form], into: _Destination
    ) -> list[DirtyRecord] | None:
        """``LOAD DATA LOCAL INFILE`` in a savepoint; ``None`` when it must be done with
        statements (a warning: some row was changed or skipped; or LOCAL is refused)."""
        writer = self.writer
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
        replace = "REPLACE " if into.mode == "replace" and into.key else ""
        statement = (
            f"LOAD DATA LOCAL INFILE %s {replace}INTO TABLE {into.table} CHARACTER SET utf8mb4 "
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
            MysqlWriterTask.loads += 1
            return []
        self._execute("ROLLBACK TO SAVEPOINT syncx_load")
        MysqlWriterTask.reloads += 1
        log.debug("LOAD DATA warned (%s warnings): writing the batch with statements", warnings)
        return None


MysqlWriter.task_class = MysqlWriterTask
