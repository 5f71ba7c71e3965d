"""The ``sqlwriter`` plugin: its target, its dialect and its transaction strategy, chosen once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import Executable
from typing_extensions import override

from libs.sql import (
    ColumnInfo,
    Dialect,
    EngineHolder,
    TableInfo,
    arrow_type_of,
    dialect_of,
    open_engine,
    reflect_named,
    run_statement,
    safe_url,
    scrub,
)
from sync.contract import Handle, JobContext, Semantic, Writer, WriterTask
from sync.errors import ConfigIssue, JobFailedError, JobFileError
from writers.sql.changes import ChangeTables
from writers.sql.deferred import Deferred
from writers.sql.handles import SqlHandle
from writers.sql.params import SqlWriterParams
from writers.sql.staging import Staging
from writers.sql.strategy import DirectStrategy, StagedStrategy, Strategy
from writers.sql.tables import STAGE_PREFIX, Target, marker_table, staging_table, type_text
from writers.sql.task import SqlWriterTask

__all__ = ["SqlWriter"]

log = logging.getLogger(__name__)


class SqlWriter(EngineHolder, Writer[SqlWriterParams]):
    """Writes into one existing table of a SQLAlchemy database (see the package docs).

    Composed of: its :class:`~libs.sql.Dialect` (from the URL), its :class:`Strategy` (from
    ``semantic``, :meth:`new_strategy`), :class:`Staging` (markers, staged segments) and
    :class:`ChangeTables` (CDC targets). A dialect plugin (``mysqlwriter``) gives its own
    strategy and parameters and may override the public hooks :meth:`column_field` and
    :meth:`default_key`.
    """

    Parameters = SqlWriterParams
    semantic: ClassVar[Semantic] = "exactly-once"
    handle_type: ClassVar[type[SqlHandle]] = SqlHandle
    plugin_name: ClassVar[str] = "sqlwriter"
    param_path: ClassVar[str] = "job.content[0].writer.parameter"

    def __init__(self, params: SqlWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.dialect: Dialect = dialect_of(params.candidate_urls()[0])
        self.staging = Staging(self)
        self.changes = ChangeTables(self)
        self.deferred = Deferred(self)
        self.strategy: Strategy = self.new_strategy()
        self._target: Target | None = None
        self._ready: set[str] = set()

    def new_strategy(self) -> Strategy:
        """The transaction strategy of this writer (called once, by the constructor)."""
        if self.params.semantic == "exactly-once":
            return StagedStrategy(self)
        return DirectStrategy(self)

    # -- framework ---------------------------------------------------------------------------

    @override
    def effective_semantic(self) -> Semantic:
        return self.params.semantic

    @override
    def read_back(
        self, table: str | None = None, columns: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]] | None:
        """The table, through the matching reader; for a CDC job the target of source table
        ``table`` (``table: "*"``: the table of its name), its ``columns`` by name (changes are
        applied by name)."""
        reader = self.plugin_name.replace("writer", "reader")
        if table is None:
            return None if self.routes_by_source() else (reader, {})
        extra: dict[str, Any] = {"table": self.changes.target_name(table)}
        return reader, extra | ({"column": list(columns)} if columns else {})

    @override
    def check(self) -> None:
        if self.routes_by_source():
            self.engine()
            return
        target = self.target()
        names = self.params.column_names()
        if names is not None:
            self.check_key_written(self.resolve_columns(names, configured=True), configured=True)
        if target.key:
            self.upsert_statement(target.table, target.key, list(target.table.c.keys()))

    @override
    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        self.strategy.recover([h for h in handles if h])
        if fresh:
            self.run_statements(self.params.pre_sql, "preSql")

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        del subtasks, schema  # the columns come from the first batch (a transform may change them)
        return SqlWriterTask(self, subtask)

    @override
    def finish(self) -> None:
        self.run_statements(self.params.post_sql, "postSql")

    @override
    def close(self) -> None:
        self.strategy.close()
        super().close()

    def commit_handle(self, handle: Handle) -> None:
        """Make a prepared handle's work visible (idempotent; ``None``: nothing to do)."""
        if handle:
            self.strategy.commit(handle)

    def abort_handle(self, handle: Handle) -> None:
        """Throw a prepared handle's work away (idempotent)."""
        if handle:
            self.strategy.abort(handle)

    # -- hooks -------------------------------------------------------------------------------

    def create_engine(self) -> Engine:
        """Connect (trying each candidate URL); errors name the URL without the password."""
        path = f"{self.param_path}.{'url' if self.params.url else 'connection[0].jdbcUrl'}"
        return open_engine(
            self.params.candidate_urls(),
            path=path,
            plugin=self.plugin_name,
            secret=self.params.secret(),
            write=True,
            connect=self.dbapi_connect(),
        )

    def column_field(self, column: ColumnInfo) -> pa.Field:
        """The Arrow field rows are converted to before they are written into ``column``."""
        return pa.field(column.name, arrow_type_of(column.type), nullable=column.nullable)

    def default_key(self, info: TableInfo) -> list[str]:
        """The key replace/update upsert on when ``updateKey`` is not given: the primary key."""
        if info.primary_key:
            return list(info.primary_key)
        msg = (
            f"writeMode {self.params.write_mode} needs updateKey, and table '{info.qualified}' "
            "has no primary key to default to"
        )
        raise JobFileError([ConfigIssue(f"{self.param_path}.updateKey", msg)])

    # -- SQL -----------------------------------------------------------------------------------

    def upsert_statement(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable:
        """The dialect's upsert of ``columns`` on ``key`` (bound rows, or ``select``'s rows);
        a config error when the database has none."""
        statement = self.dialect.upsert(table, key, columns, select)
        if statement is None:
            dialect = self.engine().dialect.name
            msg = (
                f"writeMode {self.params.write_mode} needs an upsert statement for {dialect}, "
                f"which {self.plugin_name} does not know; use writeMode insert or the {dialect} "
                "plugin"
            )
            raise JobFileError([ConfigIssue(f"{self.param_path}.writeMode", msg)])
        return statement

    def upsert_rows(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` into the target (at-least-once replace/update)."""
        conn.execute(self.upsert_statement(table, self.target().key, list(rows[0])), rows)

    def db_message(self, exc: sa_exc.StatementError) -> str:
        """The database's own message for ``exc`` (no SQL, no parameters, no password), one line."""
        orig = getattr(exc, "orig", None)
        text = " ".join(str(orig if orig is not None else exc).split()).rstrip(".")
        return scrub(text, [self.params.secret()])

    def run_statements(self, statements: list[str], name: str) -> None:
        """Run ``preSql`` / ``postSql``, each in its own transaction."""
        for index, statement in enumerate(statements):
            try:
                with self.engine().begin() as conn:
                    run_statement(conn, statement)
            except sa_exc.DBAPIError as exc:
                msg = f"{self.param_path}.{name}[{index}] failed: {self.db_message(exc)}"
                raise JobFailedError(msg) from exc

    # -- the target ----------------------------------------------------------------------------

    def target(self) -> Target:
        """The reflected target (connects and checks on first use)."""
        with self.lock:
            if self._target is None:
                self._target = self._reflect_target()
            return self._target

    def reflect(self, name: str) -> TableInfo:
        """The target table ``name`` (as the job names it), reflected."""
        engine = self.engine()
        with engine.connect() as conn:
            return reflect_named(
                conn, self.params, name, param_path=self.param_path, where=safe_url(engine.url)
            )

    def routes_by_source(self) -> bool:
        """``table: "*"``: each source table's changes go to the target table of its name."""
        return (self.params.table_name() or "").strip() == "*"

    def qualified_target(self, name: str) -> str:
        """``schema.name`` of a target table, unquoted (names its staging tables)."""
        schema = self.params.schema_name()
        return f"{schema}.{name}" if schema else name

    def resolve_columns(self, names: Sequence[str], *, configured: bool) -> list[str]:
        """Target column names for ``names`` (configured ones, or the incoming batch's)."""
        target = self.target()
        resolved = []
        for index, name in enumerate(names):
            found = target.resolve(name)
            if found is None:
                msg = target.info.missing(name)
                if configured:
                    raise JobFileError([ConfigIssue(f"{self.param_path}.column[{index}]", msg)])
                msg = f"incoming {msg}; map the columns with {self.param_path}.column"
                raise JobFailedError(msg)
            resolved.append(found)
        return resolved

    def check_key_written(self, names: Sequence[str], *, configured: bool) -> None:
        """replace/update: every key column must be among the written columns."""
        missing = [k for k in self.target().key if k not in names]
        if not missing:
            return
        msg = (
            f"writeMode {self.params.write_mode} upserts on ({', '.join(self.target().key)}), but "
            f"{', '.join(missing)} is not among the columns written {list(names)}"
        )
        if configured:
            raise JobFileError([ConfigIssue(f"{self.param_path}.column", msg)])
        raise JobFailedError(msg)

    # -- staging and markers -------------------------------------------------------------------

    def markers(self) -> sa.Table:
        """The commit-marker table (in the target's schema)."""
        if self.routes_by_source():
            return marker_table(self.params.schema_name())
        return self.target().markers

    def staging_schema(self) -> str | None:
        """The schema of the staging and marker tables: the target's."""
        return self.params.schema_name() if self.routes_by_source() else self.target().info.schema

    def ensure_staging(self) -> None:
        """Create the staging and marker tables when missing (once)."""
        target = self.target()
        self._ensure("<staging>", target.staging, target.markers)

    def ensure_markers(self) -> None:
        """Create the marker table when missing (once)."""
        self._ensure("<markers>", self.markers())

    def _ensure(self, name: str, *tables: sa.Table) -> None:
        with self.lock:
            if name in self._ready:
                return
            with self.engine().begin() as conn:
                for table in tables:
                    table.create(conn, checkfirst=True)
            self._ready.add(name)

    def staging_name(self, info: TableInfo) -> str:
        """``_syncx_stage_<hash of target>_<hash of its columns and types>``."""
        dialect = self.engine().dialect
        target = hashlib.sha256(info.qualified.encode()).hexdigest()[:10]
        signature = "|".join(f"{c.name}:{type_text(c.type, dialect)}" for c in info.columns)
        columns = hashlib.sha256(signature.encode()).hexdigest()[:10]
        return f"{STAGE_PREFIX}{target}_{columns}"

    def _reflect_target(self) -> Target:
        params = self.params
        table_text = params.table_name()
        if table_text is None:
            msg = "is required (the table to write into)"
            raise JobFileError([ConfigIssue(f"{self.param_path}.table", msg)])
        info = self.reflect(table_text)
        key: list[str] = []
        if params.write_mode != "insert":
            key = self._upsert_key(info)
        staging_name = self.staging_name(info)
        return Target(
            info=info,
            table=info.sa_table(),
            fields={c.name: self.column_field(c) for c in info.columns},
            key=key,
            staging_name=staging_name,
            staging=staging_table(info, staging_name, self.engine().dialect.name),
            markers=marker_table(info.schema),
        )

    def _upsert_key(self, info: TableInfo) -> list[str]:
        """``updateKey`` (it must be a unique key of the table), else :meth:`default_key`."""
        if not self.params.update_key:
            return self.default_key(info)
        key = []
        for index, name in enumerate(self.params.update_key):
            found = info.column(name)
            if found is None:
                path = f"{self.param_path}.updateKey[{index}]"
                raise JobFileError([ConfigIssue(path, info.missing(name))])
            key.append(found.name)
        if tuple(key) not in info.unique_keys and tuple(sorted(key)) not in {
            tuple(sorted(k)) for k in info.unique_keys
        }:
            listed = "; ".join(", ".join(k) for k in info.unique_keys) or "none"
            msg = (
                f"({', '.join(key)}) is not the primary key or a unique key of table "
                f"'{info.qualified}' (its keys: {listed}); replace/update need one to detect "
                "existing rows"
            )
            raise JobFileError([ConfigIssue(f"{self.param_path}.updateKey", msg)])
        return key
