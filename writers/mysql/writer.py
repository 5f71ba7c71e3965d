"""The ``mysqlwriter`` plugin: ``sqlwriter`` with MySQL's parameters, types and strategies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import pyarrow as pa
from typing_extensions import override

from libs.mysql.connect import MysqlConfigError, connect, error_text, is_connection_lost
from libs.mysql.stall import StallWatch
from libs.mysql.types import mysql_type
from libs.mysql.xa import Xid
from libs.sql import ColumnInfo, TableInfo
from sync.contract import JobContext
from sync.errors import JobFileError, RetriableError
from writers.mysql.handles import MysqlHandle
from writers.mysql.load import Destination, bit_columns, qualified
from writers.mysql.params import MysqlWriterParams
from writers.mysql.xa import LocalStrategy, XaStrategy
from writers.sql import SqlHandle, SqlWriter, Strategy

__all__ = ["MysqlWriter"]

log = logging.getLogger(__name__)

SQL_MODE_ON = ("STRICT_TRANS_TABLES", "NO_AUTO_VALUE_ON_ZERO")
SQL_MODE_OFF = ("NO_BACKSLASH_ESCAPES",)
"""Writer sessions: bad values are errors, 0 stays 0 in AUTO_INCREMENT columns, and string
literals take backslash escapes (as syncx writes them)."""


class MysqlWriter(SqlWriter):
    """Writes into one MySQL table: LOAD DATA / multi-row statements, XA exactly-once.

    ``sqlwriter`` composed with MySQL's parts: the MySQL dialect (from the URL), the
    :class:`~writers.mysql.xa.XaStrategy` (exactly-once) or
    :class:`~writers.mysql.xa.LocalStrategy` (at-least-once), MySQL's type mapping
    (:meth:`column_field`) and ChunJun's default key (:meth:`default_key`).
    """

    Parameters = MysqlWriterParams
    plugin_name: ClassVar[str] = "mysqlwriter"
    handle_type: ClassVar[type[SqlHandle]] = MysqlHandle
    params: MysqlWriterParams

    def __init__(self, params: MysqlWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._rows_destination: Destination | None = None
        self._watch: StallWatch | None = None

    @override
    def new_strategy(self) -> Strategy:
        if self.params.semantic == "exactly-once":
            return XaStrategy(self)
        return LocalStrategy(self)

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
    def close(self) -> None:
        super().close()
        with self.lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    # -- hooks -------------------------------------------------------------------------------

    @override
    def dbapi_connect(self) -> Callable[..., Any]:
        """The pool's connections are watched for stalls too (reflection, DDL, markers)."""
        return lambda **settings: self.stall_watch().connect(**settings)

    @override
    def column_field(self, column: ColumnInfo) -> pa.Field:
        return pa.field(column.name, mysql_type(column.type).arrow, nullable=column.nullable)

    @override
    def default_key(self, info: TableInfo) -> list[str]:
        """The primary key, else the first unique key; a table with neither is written with
        inserts (ChunJun does the same)."""
        if info.primary_key:
            return list(info.primary_key)
        if info.unique_keys:
            return list(info.unique_keys[0])
        log.warning(
            "%s: table '%s' has no primary or unique key: writeMode %s writes plain inserts",
            self.plugin_name,
            info.qualified,
            self.params.write_mode,
        )
        return []

    # -- connections and transactions ----------------------------------------------------------

    def stall_watch(self) -> StallWatch:
        """What finds this writer's stalled connections (``readTimeout``; one per attempt)."""
        with self.lock:
            if self._watch is None:
                self._watch = StallWatch(
                    self.params.stall_timeout(),
                    name=self.plugin_name,
                    secrets=[self.params.secret()],
                )
            return self._watch

    def connect(
        self, *, autocommit: bool = True, local_infile: bool = False, read_committed: bool = False
    ) -> Any:
        """A pymysql connection to the target with the writer's session settings (and READ
        COMMITTED for applying changes)."""
        url = self.engine().url
        try:
            conn = connect(
                url, autocommit=autocommit, local_infile=local_infile, watch=self.stall_watch()
            )
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

    def xid_prefix(self) -> str:
        """``syncx-<job identity>-``: every xid of this job (any run) starts so."""
        return f"syncx-{self.ctx.job_id}-"

    def new_xid(self, subtask: int, token: str, sequence: int) -> Xid:
        """The xid of a subtask's ``sequence``-th transaction in this attempt."""
        return Xid(f"{self.xid_prefix()}{self.ctx.run_id}", f"{subtask}-{token}-{sequence}")

    def rows_destination(self) -> Destination:
        """The job's table, written as ``writeMode`` says."""
        with self._lock:
            if self._rows_destination is None:
                target = self.target()
                self._rows_destination = Destination(
                    qualified(target.info.schema, target.info.name),
                    self.params.write_mode,
                    tuple(target.key),
                    bit_columns(target.info),
                )
            return self._rows_destination
