"""``mysqlwriter``'s transaction strategies: XA (exactly-once) or a local transaction per
checkpoint (at-least-once), and what both do at the start of an attempt.

Both write through a :class:`~writers.mysql.session.MysqlSession` per subtask; they differ in how
a transaction starts and ends (``XA START`` … ``XA PREPARE`` and a handle, or ``START
TRANSACTION`` … ``COMMIT``). The XA side — committing from a control connection, commit
ambiguity, recovery with ``XA RECOVER``, changes deferred behind a DDL and their replay — is
described in the package docs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from libs import cdc
from libs.mysql.connect import errno, error_text, query_failure, with_retries
from libs.mysql.xa import Xid, xa_recover
from sync.errors import FatalError, JobFailedError, RetriableError
from writers.mysql.handles import XaHandle
from writers.mysql.load import Execute, apply_changes, qualified
from writers.sql import CDC_STAGE_PREFIX, SqlHandle, Strategy, conform_changes
from writers.sql.ddl import apply_ddl
from writers.sql.deferred import DEFERRED_TABLE, deferred_table, read_payload

if TYPE_CHECKING:
    from writers.mysql.session import MysqlSession
    from writers.mysql.writer import MysqlWriter
    from writers.sql import Session, SqlWriterTask

__all__ = ["LocalStrategy", "MysqlStrategy", "XaStrategy"]

log = logging.getLogger(__name__)

XAER_NOTA = 1397
XA_DETACH_WAIT = 30.0
"""Seconds to wait for a prepared transaction's connection to let go of it."""
XA_GONE_WAIT = 5.0
"""Seconds an xid to commit may be in neither list before it counts as gone (the connection of
a killed process is being cleaned up)."""
MARKER_RETENTION = dt.timedelta(days=7)


class MysqlStrategy(Strategy):
    """What both of ``mysqlwriter``'s strategies share: sessions on raw connections, control
    connections for XA statements, recovery and the commit of every kind of handle."""

    writer: MysqlWriter
    exactly_once: ClassVar[bool]
    """Whether transactions are XA (prepared at the barrier, committed after the checkpoint)."""

    def __init__(self, writer: MysqlWriter) -> None:
        super().__init__(writer)
        self._local = threading.local()
        self._controls: list[Any] = []
        self._deferred_ready = False

    def session(self, task: SqlWriterTask) -> Session:
        from writers.mysql.session import MysqlSession  # noqa: PLC0415 - the session needs us

        return MysqlSession(task, self)

    @abstractmethod
    def start(self, session: MysqlSession) -> None:
        """Start the session's transaction (its connection is open)."""

    @abstractmethod
    def end(self, session: MysqlSession, checkpoint_id: int) -> SqlHandle | None:
        """End the session's transaction at a barrier: prepared (its handle) or committed."""

    def recover(self, handles: list[SqlHandle]) -> None:
        """Commit the restored handles (XA; changes staged by ``sqlwriter``'s path in runs
        before this writer applied them itself), roll back and remove everything else of this
        job: prepared transactions, staged and deferred changes."""
        if not (self.exactly_once or handles):
            return
        writer = self.writer
        keep = {h.segment for h in handles}
        writer.ensure_markers()
        xa = [h for h in handles if isinstance(h, XaHandle)]
        for handle in handles:
            if not isinstance(handle, XaHandle):
                writer.staging.commit(handle)
        writer.staging.clean(writer.staging_schema(), CDC_STAGE_PREFIX, keep)
        self._recover(xa)
        self._clean_deferred(keep)
        self._prune_xa_markers({h.run for h in handles} | {writer.ctx.run_id})

    def commit(self, handle: SqlHandle) -> None:
        if isinstance(handle, XaHandle):
            self.commit_xa(handle)
        else:
            super().commit(handle)

    def abort(self, handle: SqlHandle) -> None:
        if isinstance(handle, XaHandle):
            self._rollback(handle.xa)
        else:
            super().abort(handle)

    def close(self) -> None:
        for conn in self._controls:
            with contextlib.suppress(Exception):
                conn.close()
        self._controls.clear()
        self._local = threading.local()

    def owner(self) -> str:
        """What marks this job's deferred records (its identity: name and state folder)."""
        return self.writer.ctx.job_id

    def control(self) -> Any:
        """This thread's autocommit connection for XA COMMIT / ROLLBACK / RECOVER."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.writer.connect()
            self._local.conn = conn
            with self.writer.lock:
                self._controls.append(conn)
        return conn

    def reset_control(self) -> None:
        """Drop this thread's control connection (after it was lost)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def commit_xa(self, handle: XaHandle) -> None:
        """``XA COMMIT`` a prepared handle, then replay what it deferred; idempotent (see
        "commit ambiguity" and "DDL" in the module docs)."""
        xid = handle.xa

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
                    f"{self.writer.plugin_name}: the prepared XA transaction {xid} (checkpoint "
                    f"{handle.checkpoint}, subtask {handle.subtask}, {handle.rows}"
                    " rows) is gone without having been committed: it was rolled back outside "
                    "syncx, so its rows are not in the target; run the job anew"
                )
                raise FatalError(msg)
            finally:
                cursor.close()

        with_retries(
            attempt,
            what=f"committing XA transaction {xid}",
            where=self.writer.engine().url,
            secrets=[self.writer.params.secret()],
            stopping=None,
            on_retry=self.reset_control,
        )
        log.debug("committed xid %s (checkpoint %s)", xid, handle.checkpoint)
        if handle.deferred:
            with_retries(
                lambda: self._replay(handle),
                what=f"applying the changes deferred in XA transaction {xid}",
                where=self.writer.engine().url,
                secrets=[self.writer.params.secret()],
            )

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
                    f"{self.writer.plugin_name}: XA transaction {xid} is still held by another "
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
            where=self.writer.engine().url,
            secrets=[self.writer.params.secret()],
            on_retry=self.reset_control,
        )

    def _recover(self, handles: list[XaHandle]) -> None:
        """Commit the restored checkpoint's transactions, roll back this job's other ones."""
        wanted = {h.xa for h in handles}
        for handle in handles:
            self.commit_xa(handle)
        cursor = self.control().cursor()
        try:
            prepared = [
                x for x in xa_recover(cursor) if x.gtrid.startswith(self.writer.xid_prefix())
            ]
        except Exception as exc:
            msg = (
                f"{self.writer.plugin_name}: XA RECOVER failed ({error_text(exc, [self.writer.params.secret()])})"
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

    def _marker_exists(self, cursor: Any, handle: XaHandle) -> bool:
        markers = self.writer.markers()
        table = qualified(markers.schema, markers.name)
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE `job` = %s AND `run` = %s AND `subtask` = %s "
            "AND `checkpoint` = %s AND `segment` = %s",
            (
                handle.job,
                handle.run,
                handle.subtask,
                handle.checkpoint,
                handle.segment,
            ),
        )
        return cursor.fetchone() is not None

    def _prune_xa_markers(self, runs: set[str]) -> None:
        """Remove markers of this job's other runs older than :data:`MARKER_RETENTION`.

        Best effort: the old markers are found with a consistent (non-locking) read and deleted
        by primary key in READ COMMITTED, so marker rows of prepared transactions (of this or
        another job) are neither waited for nor touched.
        """
        markers = self.writer.markers()
        cutoff = (dt.datetime.now(dt.UTC) - MARKER_RETENTION).isoformat(timespec="seconds")
        key = [markers.c[c] for c in ("job", "run", "subtask", "checkpoint", "segment")]
        found = sa.select(*key).where(
            markers.c.job == self.writer.ctx.job_name,
            markers.c.run.not_in(sorted(runs)),
            markers.c.committed_at < cutoff,
        )
        try:
            with self.writer.engine().connect() as base:
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

    def deferred_table(self) -> sa.Table:
        """``_syncx_deferred`` beside the marker table."""
        return deferred_table(self.writer.markers().schema)

    def ensure_deferred(self) -> None:
        """Create the deferred-records table when missing (once; on a connection of its own:
        the subtask's is inside an XA transaction)."""
        with self.writer.lock:
            if not self._deferred_ready:
                with self.writer.engine().begin() as conn:
                    self.deferred_table().create(conn, checkfirst=True)
                self._deferred_ready = True

    def _replay(self, handle: XaHandle) -> None:
        """Apply, in order, what a committed transaction deferred; each record is deleted as it
        is applied (a DDL just after it ran), so an interrupted replay resumes where it stopped."""
        deferred = self.deferred_table()
        table = qualified(deferred.schema, deferred.name)
        mine = (self.owner(), handle.segment)
        conn = self.writer.connect(read_committed=True)
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
                change = read_payload(payload)
                if isinstance(change, cdc.DdlChange):
                    apply_ddl(self.writer, change)
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
                f"{self.writer.plugin_name}: applying the changes deferred by checkpoint "
                f"{handle.checkpoint} failed: {error_text(exc, [self.writer.params.secret()])}"
            )
            raise query_failure(exc, msg) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # an open transaction is rolled back by the server

    def _apply_deferred(self, execute: Execute, change: cdc.Changes, handle: XaHandle) -> None:
        target = self.writer.changes.target(change.table)
        rows, upsert, dirty = conform_changes(target, change)
        size, secret = self.writer.params.batch_size, self.writer.params.secret()
        dirty += apply_changes(
            execute,
            target,
            rows,
            upsert,
            lambda batch, into: into.insert(execute, batch, size=size, secret=secret),
            size=size,
        )
        if dirty:
            msg = (
                f"{self.writer.plugin_name}: a change of {change.table} deferred behind a DDL "
                f"(checkpoint {handle.checkpoint}) is rejected by '{target.info.qualified}': "
                f"{dirty[0].error}. It stays in {DEFERRED_TABLE}: change the target to accept it "
                "and run again with --restore latest"
            )
            raise FatalError(msg)

    def _clean_deferred(self, keep: set[str]) -> None:
        """Delete this job's deferred records outside the ``keep`` segments (left by a replay a
        fresh run will never finish): found with a non-locking read, deleted by primary key, so
        rows of other jobs' prepared transactions are never waited for."""
        deferred = self.deferred_table()
        with self.writer.engine().connect() as base:
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


class XaStrategy(MysqlStrategy):
    """Exactly-once: one XA transaction per subtask and checkpoint."""

    exactly_once = True

    def start(self, session: MysqlSession) -> None:
        session.xid = self.writer.new_xid(session.task.subtask, session.token, session.next())
        session.execute(f"XA START {session.xid.sql()}")

    def end(self, session: MysqlSession, checkpoint_id: int) -> SqlHandle | None:
        """Write the commit marker, ``XA END``, ``XA PREPARE``; close the connection (MariaDB
        lets another connection commit a prepared transaction only once the one that prepared
        it is gone)."""
        session.defer_held()
        xid = session.xid
        assert xid is not None
        writer = self.writer
        ctx = writer.ctx
        markers = writer.markers()
        handle = XaHandle(
            xid=xid.to_json(),
            job=ctx.job_name,
            run=ctx.run_id,
            subtask=session.task.subtask,
            checkpoint=checkpoint_id,
            segment=xid.bqual,
            rows=session.rows,
            deferred=session.deferred,
        )
        session.execute(
            f"INSERT INTO {qualified(markers.schema, markers.name)} "
            "(`job`, `run`, `subtask`, `checkpoint`, `segment`, `target`, `committed_at`) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                ctx.job_name,
                ctx.run_id,
                session.task.subtask,
                checkpoint_id,
                xid.bqual,
                "*" if writer.routes_by_source() else writer.target().info.qualified,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            ),
        )
        session.execute(f"XA END {xid.sql()}")
        session.execute(f"XA PREPARE {xid.sql()}")
        session.prepared(handle)
        return handle


class LocalStrategy(MysqlStrategy):
    """At-least-once: a local transaction per subtask and checkpoint, committed at the barrier."""

    exactly_once = False

    def start(self, session: MysqlSession) -> None:
        session.execute("START TRANSACTION")

    def end(self, session: MysqlSession, checkpoint_id: int) -> SqlHandle | None:
        del checkpoint_id
        session.commit_local()
        return None
