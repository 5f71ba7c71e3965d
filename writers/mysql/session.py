"""One ``mysqlwriter`` subtask: a connection, and a transaction per checkpoint that its strategy
starts and ends (XA or local); rows by ``LOAD DATA`` or statements, changes applied by key,
held or deferred (see the package docs)."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from libs import cdc
from libs.mysql.connect import errno, error_text, is_connection_lost, query_failure
from libs.mysql.text import Form, quote_ident, tsv_text
from libs.mysql.xa import Xid
from sync.contract import DirtyRecord
from sync.errors import JobFailedError, RetriableError
from writers.mysql.load import Destination, apply_changes, qualified, scratch_dir
from writers.sql import Session, SqlHandle, SqlWriterTask, conform_changes
from writers.sql.ddl import apply_ddl
from writers.sql.deferred import payloads

if TYPE_CHECKING:
    from writers.mysql.writer import MysqlWriter
    from writers.mysql.xa import MysqlStrategy

__all__ = ["HELD_BYTES", "MysqlSession"]

log = logging.getLogger(__name__)

LOCAL_INFILE_REFUSED = frozenset({1148, 2068, 3948, 3950})
HELD_BYTES = 64 << 20
"""Changes held in memory while a prepared transaction waits for its commit; beyond this
they are deferred instead."""


class MysqlSession(Session):
    """One writer subtask's connection and transaction (see the package docs)."""

    writer: MysqlWriter

    def __init__(self, task: SqlWriterTask, strategy: MysqlStrategy) -> None:
        super().__init__(task)
        self.strategy = strategy
        self.exactly_once = strategy.exactly_once
        self.token = uuid.uuid4().hex[:8]
        """Names this attempt's transactions (the xid's branch)."""
        self.xid: Xid | None = None
        self.rows = 0
        """Rows and changes written in the open transaction."""
        self.deferred = 0
        """Records deferred in the open transaction."""
        self._raw: Any = None
        self._open = False
        self._sequence = 0
        self._load_data = self.writer.params.load_data
        self._scratch: Path | None = None
        self._changes = False
        """This subtask applies CDC changes (its sessions run in READ COMMITTED)."""
        self._deferring = False
        """The open transaction defers what it is given (see "DDL" in the package docs)."""
        self._uncommitted: set[str] = set()
        """Segments of this subtask's prepared transactions that are not committed yet."""
        self._held: list[pa.RecordBatch] = []
        """Changes received while a prepared transaction holds its locks (see the docs)."""
        self._held_bytes = 0

    # -- the session contract ------------------------------------------------------------------

    def write_rows(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        try:
            self._start()
            rejected = self._write(batch, self.writer.rows_destination())
        except Exception as exc:
            raise self._failure(exc, "writing") from exc
        self.rows += batch.num_rows - len(rejected)
        return rejected

    def write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        try:
            return self._write_changes(batch)
        except Exception as exc:
            raise self._failure(exc, "applying changes") from exc

    def prepare(self, checkpoint_id: int) -> SqlHandle | None:
        if not (self._open or self._held):
            return None
        try:
            if not self._open:
                self._start()  # only held changes: they are deferred into a transaction
            return self.strategy.end(self, checkpoint_id)
        except Exception as exc:
            raise self._failure(exc, "preparing the checkpoint") from exc

    def committed(self, handle: SqlHandle | None) -> None:
        if handle:
            self._uncommitted.discard(handle.segment)
        if self._held and not self._uncommitted:
            held, self._held, self._held_bytes = self._held, [], 0
            report = self.writer.ctx.report_dirty
            try:
                for batch in held:
                    for record in self._apply(batch):
                        report(record)
            except Exception as exc:
                raise self._failure(exc, "applying changes") from exc

    def aborted(self, handle: SqlHandle | None) -> None:
        if handle:
            self._uncommitted.discard(handle.segment)

    def discard(self) -> None:
        self._held, self._held_bytes = [], 0  # after the last checkpoint: read again on restore
        if not self._open or self._raw is None:
            return
        with contextlib.suppress(Exception):
            if self.xid is not None:
                self.execute(f"XA END {self.xid.sql()}")
                self.execute(f"XA ROLLBACK {self.xid.sql()}")
            else:
                self.execute("ROLLBACK")
        self._end_transaction()

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()  # an open transaction is rolled back by the server
            self._raw = None
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                self._scratch.unlink()

    # -- what the strategy calls -----------------------------------------------------------------

    def execute(self, statement: str | bytes, args: Any = None) -> int:
        """Run one statement on the subtask's connection; the affected row count."""
        cursor = self._connection().cursor()
        try:
            return int(cursor.execute(statement, args) or 0)
        finally:
            cursor.close()

    def next(self) -> int:
        """The sequence number of the next transaction of this attempt."""
        self._sequence += 1
        return self._sequence

    def commit_local(self) -> None:
        """Commit the open (local) transaction."""
        if self._open:
            self.execute("COMMIT")
            self._end_transaction()

    def prepared(self, handle: SqlHandle) -> None:
        """The open transaction is prepared as ``handle``: its connection is closed (the next
        write opens a new one) and its changes' locks are held until its commit."""
        self._uncommitted.add(handle.segment)
        self._drop_connection()

    def defer_held(self) -> None:
        """Defer the held changes (from now on this transaction defers all it is given)."""
        held, self._held, self._held_bytes = self._held, [], 0
        for batch in held:
            self._defer(batch)

    # -- transactions ------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.writer.connect(
                autocommit=True, local_infile=self._load_data, read_committed=self._changes
            )
        return self._raw

    def _start(self) -> None:
        if not self._open:
            self.strategy.start(self)
            self._open = True

    def _end_transaction(self) -> None:
        self._open = False
        self.xid = None
        self.rows = 0
        self._deferring = False
        self.deferred = 0

    def _failure(self, exc: Exception, what: str) -> Exception:
        """A lost connection fails the attempt as retriable; other errors say what failed."""
        if isinstance(exc, RetriableError | JobFailedError):
            return exc
        writer = self.writer
        detail = error_text(exc, [writer.params.secret()])
        if is_connection_lost(exc):
            self._drop_connection()
            msg = (
                f"{writer.plugin_name}: lost the connection while {what} (subtask "
                f"{self.task.subtask}): {detail}; the open transaction is rolled back by the server"
            )
            return RetriableError(msg)
        if errno(exc) is None:
            return exc
        msg = f"{writer.plugin_name}: {what} failed (subtask {self.task.subtask}): {detail}"
        return query_failure(exc, msg)

    def _drop_connection(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
        self._raw = None
        self._end_transaction()

    # -- changes -----------------------------------------------------------------------------

    def _write_changes(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """A CDC batch: applied in the open transaction, held, or deferred (package docs)."""
        self._changes = True
        ddl = cdc.is_ddl(batch.schema)
        if not self.exactly_once:
            if not ddl:
                return self._apply(batch)
            change = cdc.decode(batch)
            assert isinstance(change, cdc.DdlChange)
            self.commit_local()  # our row locks would block the DDL
            apply_ddl(self.writer, change)
            return []
        if self._deferring or ddl:
            self.defer_held()
            self._defer(batch)
        elif self._uncommitted:
            self._held.append(batch)
            self._held_bytes += batch.nbytes
            if self._held_bytes > HELD_BYTES:
                self.defer_held()
        else:
            return self._apply(batch)
        return []

    def _apply(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Apply a batch of changes in the open transaction (started when needed)."""
        writer = self.writer
        change = cdc.decode(batch)
        assert isinstance(change, cdc.Changes)
        target = writer.changes.target(change.table)
        rows, upsert, dirty = conform_changes(target, change)
        if rows.num_rows:
            self._start()
            dirty += apply_changes(
                self.execute, target, rows, upsert, self._write, size=writer.params.batch_size
            )
            self.rows += len(upsert)
        return dirty

    def _defer(self, batch: pa.RecordBatch) -> None:
        """Store ``batch`` in ``_syncx_deferred`` inside the open XA transaction."""
        strategy = self.strategy
        strategy.ensure_deferred()
        self._start()
        assert self.xid is not None
        self._deferring = True
        deferred = strategy.deferred_table()
        statement = (
            f"INSERT INTO {qualified(deferred.schema, deferred.name)} "
            "(`owner`, `segment`, `seq`, `payload`) VALUES (%s, %s, %s, %s)"
        )
        for payload in payloads(batch):
            self.execute(statement, (strategy.owner(), self.xid.bqual, self.deferred, payload))
            self.deferred += 1

    # -- writing -----------------------------------------------------------------------------

    def _write(self, batch: pa.RecordBatch, into: Destination) -> list[DirtyRecord]:
        """Rows into ``into`` in the open transaction: LOAD DATA, else statements; the
        rejected rows."""
        forms = into.forms(batch.schema)
        if self._load_data and into.mode != "update":
            loaded = self._load(batch, forms, into)
            if loaded is not None:
                return loaded
        params = self.writer.params
        return into.insert(self.execute, batch, size=params.batch_size, secret=params.secret())

    def _load(
        self, batch: pa.RecordBatch, forms: list[Form], into: Destination
    ) -> list[DirtyRecord] | None:
        """``LOAD DATA LOCAL INFILE`` in a savepoint; ``None`` when it must be done with
        statements (a warning: some row was changed or skipped; or LOCAL is refused)."""
        writer = self.writer
        if self._scratch is None:
            self._scratch = scratch_dir() / f"syncx-load-{os.getpid()}-{uuid.uuid4().hex}.tsv"
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
        self.execute("SAVEPOINT syncx_load")
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
                self.execute("ROLLBACK TO SAVEPOINT syncx_load")
                return None
            raise
        cursor.close()
        if warnings == 0 and (replace or loaded == batch.num_rows):
            self.execute("RELEASE SAVEPOINT syncx_load")
            return []
        self.execute("ROLLBACK TO SAVEPOINT syncx_load")
        log.debug("LOAD DATA warned (%s warnings): writing the batch with statements", warnings)
        return None
