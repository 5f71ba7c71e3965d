"""``sqlwriter``: rows into an existing table of any SQLAlchemy database, exactly once, without XA.

SQLite works with nothing installed; PostgreSQL needs ``psycopg``. Dialect plugins
(``mysqlwriter``) subclass :class:`SqlWriter` / :class:`SqlWriterTask` and override their hooks
(:meth:`SqlWriter.upsert_statement`, :meth:`SqlWriter.insert_rows`,
:meth:`SqlWriter.classify_error`, :meth:`SqlWriterTask.prepare` ...).

The writer never creates the target table (a missing one is an error at ``check()``); the only
things it creates are, in the target's schema, a **staging table**
``_syncx_stage_<hash of target>_<hash of its column names and types>`` (the target's columns,
all nullable and without constraints, plus ``_syncx_job``, ``_syncx_run``, ``_syncx_subtask``,
``_syncx_segment``, ``_syncx_seq``; a changed target gets a new one) and the **marker table**
``_syncx_commits``.

**Exactly-once** (``semantic: exactly-once``, the default), for any SQL database:

- ``write``: the batch goes into the staging table, tagged with this subtask's current
  *segment* (a fresh random id), in a short transaction per batch: staged rows are durable but
  invisible in the target.
- ``prepare(n)``: seals the segment and returns the handle ``{table, schema, job, run, subtask,
  checkpoint, segment, columns}`` (``None`` when nothing was written since the last one).
- ``commit(handle)``: one transaction: if ``_syncx_commits`` has no row for (job, run, subtask,
  checkpoint, segment), insert that marker, ``INSERT INTO target (cols) SELECT cols FROM
  staging`` for the segment (upsert modes keep the last row per key), and delete the staged
  rows. A second commit of the same handle finds the marker (and no staged rows): a no-op.
- ``abort(handle)`` deletes the segment's staged rows; ``discard()`` those of the unsealed one.
- ``begin(handles, fresh)`` commits ``handles``, then deletes every staged row of this job that
  is not in them (work of an attempt that died before its checkpoint) and the markers of older
  runs; on a fresh run it then runs ``preSql``. ``postSql`` runs in ``finish()``.

**Dirty rows.** Values that do not convert to the target's column types (:func:`sync.types.conform`)
and NULLs in NOT NULL columns are dirty before anything is written. A row the database rejects
(too long, bad value, and in direct writes duplicate keys, NOT NULL, CHECK) is found by writing
each chunk of ``batchSize`` rows inside a SAVEPOINT and, when that fails, each row in its own:
the rejected rows become dirty records with the database's message (kind ``duplicate`` for
unique violations, ``null`` for NOT NULL, else ``other``) and the rest is written.

*Uniqueness in exactly-once insert mode* is checked when rows are written, not only at commit:
before a batch is staged, its rows whose primary or unique key (every key whose columns are all
written) already exists in the target, is already staged (by any subtask), or repeats within the
batch, become ``duplicate`` dirty records. What that check cannot see — a concurrent writer
inserting the same key between the check and the commit, or CHECK and foreign-key constraints
(the staging table has none) — makes ``commit`` fail loudly with the database's message: the
staged rows stay where they are, so nothing is lost, and a restore commits them once the
conflict is removed.

Rows are written with one executemany per ``batchSize`` rows, or ``COPY ... FROM STDIN`` on
PostgreSQL with psycopg (:meth:`SqlWriter.insert_rows`).

**At-least-once** (``semantic: at-least-once``): rows go straight into the target in one
transaction per subtask that commits at ``prepare`` (per batch on SQLite, where one writer holds
the database lock); no staging, nothing to recover, rows after the last checkpoint may repeat.

``writeMode``: ``insert``; ``replace`` and ``update`` both upsert on ``updateKey`` (or the
primary key) with ``INSERT ... ON CONFLICT (key) DO UPDATE`` on SQLite and PostgreSQL, setting
the written columns (a dialect plugin may give ``replace`` its own meaning, as MySQL's ``REPLACE
INTO``). The key must be the primary key or a unique key of the target, and be written.
``column`` maps the incoming columns by position (ChunJun); absent, the incoming column names are
used. A ``type`` given in ``column`` is informational: the target's reflected types are what rows
are converted to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
import sqlalchemy as sa
from pydantic import AliasChoices, Field, field_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.expression import Executable
from typing_extensions import override

from sync.errors import ConfigIssue, JobFailedError, JobFileError
from sync.plugin import DirtyKind, DirtyRecord, Handle, JobContext, Semantic, Writer, WriterTask
from sync.sql import (
    ColumnInfo,
    SqlConnectionParams,
    TableInfo,
    arrow_type_of,
    ident,
    open_engine,
    reflect_table,
    run_statement,
    safe_url,
    scrub,
    split_table_name,
)
from sync.types import conform, row_of
from writers.stream import WriterColumn

__all__ = ["SqlWriter", "SqlWriterParams", "SqlWriterTask", "Target"]

log = logging.getLogger(__name__)

STAGE_PREFIX = "_syncx_stage_"
MARKER_TABLE = "_syncx_commits"
_META = ("_syncx_job", "_syncx_run", "_syncx_subtask", "_syncx_segment", "_syncx_seq")
_IN_CHUNK = 500
"""Key values per ``IN (...)`` of the duplicate check (below every driver's parameter limit)."""

WriteMode = Literal["insert", "replace", "update"]


class SqlWriterParams(SqlConnectionParams):
    """``parameter`` of ``sqlwriter``."""

    column: list[WriterColumn | str] | None = Field(
        default=None,
        description="Target columns, matched to the incoming columns by position; "
        "default: the incoming column names.",
    )
    write_mode: WriteMode = Field(
        default="insert",
        validation_alias=AliasChoices("writeMode", "mode", "write_mode"),
        description="insert | replace | update (both upsert on updateKey).",
    )
    update_key: list[str] | None = Field(
        default=None,
        validation_alias=AliasChoices("updateKey", "uniqueKey", "update_key", "unique_key"),
        description='Key columns for replace/update: ["id"] or ChunJun\'s {"key": ["id"]}; '
        "default: the primary key.",
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(
        default=1024, description="Rows per INSERT statement (executemany)."
    )
    pre_sql: list[str] = Field(
        default_factory=list, description="Statements run before a fresh run (never on restore)."
    )
    post_sql: list[str] = Field(
        default_factory=list, description="Statements run once after the final commit."
    )
    semantic: Semantic = Field(
        default="exactly-once",
        description="exactly-once (staging table + commit marker) or at-least-once (direct).",
    )

    @field_validator("write_mode", mode="before")
    @classmethod
    def _mode_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("update_key", mode="before")
    @classmethod
    def _chunjun_key_map(cls, value: Any) -> Any:
        """``{"key": ["id"]}`` (ChunJun) or ``"id"`` as a list of column names."""
        if isinstance(value, dict):
            return [column for columns in value.values() for column in columns] or None
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value or None

    @field_validator("pre_sql", "post_sql", mode="before")
    @classmethod
    def _statements(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [s for s in value if not (isinstance(s, str) and not s.strip())]
        return value

    def column_names(self) -> list[str] | None:
        """The configured target columns, or None (use the incoming names)."""
        if not self.column or self.column == ["*"]:
            return None
        return [c if isinstance(c, str) else c.name for c in self.column]


@dataclass(frozen=True)
class Target:
    """The reflected target table and what the writer derived from it."""

    info: TableInfo
    table: sa.Table
    """All target columns, identifiers always quoted."""
    fields: dict[str, pa.Field]
    """Arrow field per column (its type and nullability), for :func:`sync.types.conform`."""
    key: list[str]
    """The upsert key (replace/update), else empty."""
    staging_name: str
    staging: sa.Table
    markers: sa.Table

    def resolve(self, name: str) -> str | None:
        """The target column called ``name`` (case-insensitively when unambiguous)."""
        found = self.info.column(name)
        return found.name if found is not None else None


class SqlWriter(Writer[SqlWriterParams]):
    """Writes into one existing table of a SQLAlchemy database (see the module docs)."""

    Parameters = SqlWriterParams
    semantic: ClassVar[Semantic] = "exactly-once"
    plugin_name: ClassVar[str] = "sqlwriter"
    param_path: ClassVar[str] = "job.content[0].writer.parameter"
    task_class: ClassVar[type[SqlWriterTask]]

    def __init__(self, params: SqlWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._target: Target | None = None
        self._staging_ready = False

    # -- framework ---------------------------------------------------------------------------

    @override
    def effective_semantic(self) -> Semantic:
        return self.params.semantic

    @override
    def check(self) -> None:
        target = self.target()
        names = self.params.column_names()
        if names is not None:
            self.check_key_written(self.resolve_columns(names, configured=True), configured=True)
        if target.key:
            self.upsert_statement(target.table, target.key, list(target.table.c.keys()))

    @override
    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        target = self.target()
        if self.params.semantic == "exactly-once":
            self.ensure_staging()
            live = [h for h in handles if h]
            for handle in live:
                self.commit_handle(handle)
            self._clean_staging(target, {str(h["segment"]) for h in live})
            self._prune_markers(target, {str(h["run"]) for h in live} | {self.ctx.run_id})
        if fresh:
            self._run_statements(self.params.pre_sql, "preSql")

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        return self.task_class(self, subtask, schema)

    @override
    def finish(self) -> None:
        self._run_statements(self.params.post_sql, "postSql")

    def close(self) -> None:
        """Close the connection pool (not part of the contract: tests and embedders call it)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

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
        )

    def upsert_statement(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET col = excluded.col`` for ``columns``:
        of bound rows (executemany) or, with ``select``, of the selected rows."""
        dialect = self.engine().dialect.name
        dialects: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
        insert = dialects.get(dialect)
        if insert is None:
            msg = (
                f"writeMode {self.params.write_mode} needs an upsert statement for {dialect}, "
                "which "
                f"{self.plugin_name} does not know; use writeMode insert or the {dialect} plugin"
            )
            raise JobFileError([ConfigIssue(f"{self.param_path}.writeMode", msg)])
        statement = insert(table)
        if select is not None:
            statement = statement.from_select(list(columns), select)
        index = [table.c[k] for k in key]
        updates = {c: statement.excluded[c] for c in columns if c not in key}
        if updates:
            return statement.on_conflict_do_update(index_elements=index, set_=updates)
        return statement.on_conflict_do_nothing(index_elements=index)

    def insert_rows(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (all with the same keys): ``COPY FROM STDIN`` on PostgreSQL with
        psycopg (3-4x faster than executemany), else one executemany. Database errors surface
        as SQLAlchemy's exceptions either way. The MySQL plugin overrides this."""
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
            _copy_rows(conn, table, rows)
        else:
            conn.execute(sa.insert(table), rows)

    def upsert_rows(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` into the target (at-least-once replace/update)."""
        target = self.target()
        conn.execute(self.upsert_statement(table, target.key, list(rows[0])), rows)

    def existing_keys(
        self, conn: Connection, table: sa.Table, key: Sequence[str], values: list[tuple[Any, ...]]
    ) -> set[tuple[Any, ...]]:
        """Which of the key ``values`` exist in ``table`` (the insert-mode duplicate check).

        ``key IN (...)`` in chunks; on PostgreSQL a single-column key is one ``= ANY(array)``.
        """
        columns = [table.c[c] for c in key]
        found: set[tuple[Any, ...]] = set()
        if len(columns) == 1 and conn.dialect.name == "postgresql":
            array = sa.bindparam(
                "keys", [v[0] for v in values], type_=postgresql.ARRAY(columns[0].type)
            )
            query = sa.select(columns[0]).where(columns[0] == sa.any_(array))
            found.update(tuple(r) for r in conn.execute(query))
            return found
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            if len(columns) == 1:
                condition = columns[0].in_([v[0] for v in chunk])
            else:
                condition = sa.tuple_(*columns).in_(chunk)
            found.update(tuple(r) for r in conn.execute(sa.select(*columns).where(condition)))
        return found

    def classify_error(self, exc: sa_exc.StatementError) -> DirtyKind:
        """What kind of dirty record a rejected row is (SQLSTATE, else the message)."""
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if code == "23505":
            return "duplicate"
        if code == "23502":
            return "null"
        text = str(orig if orig is not None else exc).lower()
        if "unique" in text or "duplicate" in text:
            return "duplicate"
        if "not null" in text or "null value" in text:
            return "null"
        return "other"

    def value_converters(self, names: Sequence[str]) -> list[Callable[[Any], Any] | None]:
        """How Arrow's Python values become what a column's SQLAlchemy type binds."""
        target = self.target()
        converters: list[Callable[[Any], Any] | None] = []
        for name in names:
            sql_type = target.table.c[name].type
            if isinstance(sql_type, sqltypes.JSON):
                converters.append(json.loads)
            elif isinstance(sql_type, sqltypes.Uuid) and sql_type.as_uuid:
                converters.append(uuid.UUID)
            else:
                converters.append(None)
        return converters

    def staging_name(self, info: TableInfo) -> str:
        """``_syncx_stage_<hash of target>_<hash of its columns and types>``."""
        dialect = self.engine().dialect
        target = hashlib.sha256(info.qualified.encode()).hexdigest()[:10]
        signature = "|".join(f"{c.name}:{_type_text(c.type, dialect)}" for c in info.columns)
        columns = hashlib.sha256(signature.encode()).hexdigest()[:10]
        return f"{STAGE_PREFIX}{target}_{columns}"

    # -- shared state ------------------------------------------------------------------------

    def engine(self) -> Engine:
        """The connection pool (opened on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = self.create_engine()
            return self._engine

    def target(self) -> Target:
        """The reflected target (connects and checks on first use)."""
        with self._lock:
            if self._target is None:
                self._target = self._reflect_target()
            return self._target

    def resolve_columns(self, names: Sequence[str], *, configured: bool) -> list[str]:
        """Target column names for ``names`` (configured ones, or the incoming batch's)."""
        target = self.target()
        resolved = []
        for index, name in enumerate(names):
            found = target.resolve(name)
            if found is None:
                listed = ", ".join(c.name for c in target.info.columns)
                msg = (
                    f"column '{name}' not found in table '{target.info.qualified}' "
                    f"(its columns: {listed})"
                )
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

    def ensure_staging(self) -> None:
        """Create the staging and marker tables when missing (exactly-once only; once)."""
        with self._lock:
            if self._staging_ready:
                return
            target = self.target()
            with self.engine().begin() as conn:
                target.staging.create(conn, checkfirst=True)
                target.markers.create(conn, checkfirst=True)
            self._staging_ready = True

    def commit_handle(self, handle: Handle) -> None:
        """Move a sealed segment from staging into the target, once (see the module docs)."""
        if not handle:
            return
        target = self.target()
        staging = _staging_view(handle)
        markers = target.markers
        marker_key = {
            "job": handle["job"],
            "run": handle["run"],
            "subtask": int(handle["subtask"]),
            "checkpoint": int(handle["checkpoint"]),
            "segment": handle["segment"],
        }
        mine = sa.and_(
            staging.c._syncx_job == handle["job"], staging.c._syncx_segment == handle["segment"]
        )
        columns = list(handle["columns"])
        selected = sa.select(*[staging.c[c] for c in columns]).where(mine)
        if target.key:
            latest = (
                sa.select(sa.func.max(staging.c._syncx_seq))
                .where(mine)
                .group_by(*[staging.c[k] for k in target.key])
            )
            nulls = [staging.c[k].is_(None) for k in target.key]  # NULL keys never conflict
            selected = selected.where(sa.or_(staging.c._syncx_seq.in_(latest), *nulls))
            statement = self.upsert_statement(target.table, target.key, columns, selected)
        else:
            statement = sa.insert(target.table).from_select(
                columns, selected.order_by(staging.c._syncx_seq)
            )
        with self.engine().connect() as conn:
            conn.begin()
            done = conn.execute(
                sa.select(sa.literal(1))
                .select_from(markers)
                .where(*[markers.c[k] == v for k, v in marker_key.items()])
            ).first()
            if done is not None:
                conn.rollback()
                return
            try:
                conn.execute(
                    sa.insert(markers).values(
                        **marker_key,
                        target=target.info.qualified,
                        committed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    )
                )
            except sa_exc.IntegrityError:  # committed concurrently by another process
                conn.rollback()
                return
            try:
                moved = conn.execute(statement).rowcount
                conn.execute(sa.delete(staging).where(mine))
                conn.commit()
            except sa_exc.DBAPIError as exc:
                conn.rollback()
                msg = (
                    f"commit of checkpoint {handle['checkpoint']} (subtask {handle['subtask']}) "
                    "into "
                    f"'{target.info.qualified}' failed: {self.db_message(exc)}. The rows stay in "
                    f"the staging table '{handle['table']}' "
                    f"(_syncx_segment = '{handle['segment']}'); "
                    "remove the conflict and run again with --restore latest"
                )
                raise JobFailedError(msg) from exc
        log.debug(
            "committed %s rows of checkpoint %s subtask %s",
            moved,
            handle["checkpoint"],
            handle["subtask"],
        )

    def abort_handle(self, handle: Handle) -> None:
        """Delete a segment's staged rows (idempotent)."""
        if not handle:
            return
        staging = _staging_view(handle)
        with self.engine().begin() as conn:
            conn.execute(
                sa.delete(staging).where(
                    staging.c._syncx_job == handle["job"],
                    staging.c._syncx_segment == handle["segment"],
                )
            )

    # -- implementation ----------------------------------------------------------------------

    def db_message(self, exc: sa_exc.StatementError) -> str:
        """The database's own message for ``exc`` (no SQL, no parameters, no password), one line."""
        orig = getattr(exc, "orig", None)
        text = " ".join(str(orig if orig is not None else exc).split()).rstrip(".")
        return scrub(text, [self.params.secret()])

    def _reflect_target(self) -> Target:
        params = self.params
        table_text = params.table_name()
        if table_text is None:
            msg = "is required (the table to write into)"
            raise JobFileError([ConfigIssue(f"{self.param_path}.table", msg)])
        schema, name = split_table_name(table_text, params.schema_name())
        engine = self.engine()
        with engine.connect() as conn:
            info = reflect_table(
                conn,
                schema,
                name,
                path=f"{self.param_path}.{params.table_param()}",
                where=safe_url(engine.url),
            )
        table = info.sa_table()
        fields = {
            c.name: pa.field(c.name, arrow_type_of(c.type), nullable=c.nullable)
            for c in info.columns
        }
        key: list[str] = []
        if params.write_mode != "insert":
            key = self._upsert_key(info)
        staging_name = self.staging_name(info)
        return Target(
            info=info,
            table=table,
            fields=fields,
            key=key,
            staging_name=staging_name,
            staging=_staging_table(info, staging_name, engine.dialect.name),
            markers=_marker_table(info.schema),
        )

    def _upsert_key(self, info: TableInfo) -> list[str]:
        params = self.params
        if params.update_key:
            key = []
            for index, name in enumerate(params.update_key):
                found = info.column(name)
                if found is None:
                    msg = f"column '{name}' not found in table '{info.qualified}'"
                    raise JobFileError([ConfigIssue(f"{self.param_path}.updateKey[{index}]", msg)])
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
        if info.primary_key:
            return list(info.primary_key)
        msg = (
            f"writeMode {params.write_mode} needs updateKey, and table '{info.qualified}' has no "
            "primary key to default to"
        )
        raise JobFileError([ConfigIssue(f"{self.param_path}.updateKey", msg)])

    def _run_statements(self, statements: list[str], name: str) -> None:
        for index, statement in enumerate(statements):
            try:
                with self.engine().begin() as conn:
                    run_statement(conn, statement)
            except sa_exc.DBAPIError as exc:
                msg = f"{self.param_path}.{name}[{index}] failed: {self.db_message(exc)}"
                raise JobFailedError(msg) from exc

    def _clean_staging(self, target: Target, keep: set[str]) -> None:
        """Delete this job's staged rows outside ``keep`` in every staging table of the target."""
        prefix = target.staging_name.rsplit("_", 1)[0]
        with self.engine().begin() as conn:
            names = sa.inspect(conn).get_table_names(schema=target.info.schema)
            for name in names:
                if not name.startswith(prefix):
                    continue
                staging = _staging_view(
                    {"table": name, "schema": target.info.schema, "columns": []}
                )
                condition = staging.c._syncx_job == self.ctx.job_name
                if keep:
                    condition = sa.and_(condition, staging.c._syncx_segment.not_in(sorted(keep)))
                deleted = conn.execute(sa.delete(staging).where(condition)).rowcount
                if deleted:
                    log.info(
                        "removed %d staged row(s) of unfinished checkpoints from %s", deleted, name
                    )

    def _prune_markers(self, target: Target, runs: set[str]) -> None:
        markers = target.markers
        with self.engine().begin() as conn:
            conn.execute(
                sa.delete(markers).where(
                    markers.c.job == self.ctx.job_name, markers.c.run.not_in(sorted(runs))
                )
            )


def _type_text(sql_type: Any, dialect: Any) -> str:
    try:
        return str(sql_type.compile(dialect=dialect))
    except sa_exc.CompileError:
        return type(sql_type).__name__


def _staging_column_type(column: ColumnInfo, dialect: str) -> Any:
    if isinstance(column.type, sqltypes.NullType):
        return sqltypes.BLOB() if dialect == "sqlite" else sqltypes.Text()
    return column.type


def _staging_table(info: TableInfo, name: str, dialect: str) -> sa.Table:
    """The staging table: the target's columns (nullable, no constraints) + segment metadata."""
    metadata = sa.MetaData()
    columns: list[sa.Column[Any]] = [
        sa.Column(ident(c.name), _staging_column_type(c, dialect), nullable=True)
        for c in info.columns
    ]
    meta: list[sa.Column[Any]] = [
        sa.Column("_syncx_job", sa.String(200), nullable=False),
        sa.Column("_syncx_run", sa.String(64), nullable=False),
        sa.Column("_syncx_subtask", sa.Integer, nullable=False),
        sa.Column("_syncx_segment", sa.String(32), nullable=False),
        sa.Column("_syncx_seq", sa.BigInteger, nullable=False),
    ]
    table = sa.Table(
        ident(name), metadata, *columns, *meta, schema=ident(info.schema) if info.schema else None
    )
    sa.Index(ident(f"{name}_seg"), table.c._syncx_job, table.c._syncx_segment)
    for position, key in enumerate(info.unique_keys):
        sa.Index(ident(f"{name}_k{position}"), *[table.c[k] for k in key])
    return table


def _marker_table(schema: str | None) -> sa.Table:
    return sa.Table(
        MARKER_TABLE,
        sa.MetaData(),
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("run", sa.String(64), primary_key=True),
        sa.Column("subtask", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("checkpoint", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("segment", sa.String(32), primary_key=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("committed_at", sa.String(40), nullable=False),
        schema=ident(schema) if schema else None,
    )


def _staging_view(handle: dict[str, Any]) -> sa.Table:
    """Enough of a staging table to select, insert from and delete by a handle (no types needed)."""
    columns: list[sa.Column[Any]] = [sa.Column(ident(c)) for c in handle["columns"]]
    meta: list[sa.Column[Any]] = [sa.Column(name) for name in _META]
    schema = handle.get("schema")
    return sa.Table(
        ident(handle["table"]),
        sa.MetaData(),
        *columns,
        *meta,
        schema=ident(schema) if schema else None,
    )


_ROW_ERRORS = (sa_exc.IntegrityError, sa_exc.DataError)


def _is_row_error(exc: BaseException) -> bool:
    """A statement error caused by the data (a bad row), not by the connection or the SQL."""
    if isinstance(exc, _ROW_ERRORS):
        return True
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


class SqlWriterTask(WriterTask):
    """One writer subtask (see the module docs for both semantics)."""

    def __init__(self, writer: SqlWriter, subtask: int, schema: pa.Schema | None) -> None:
        self.writer = writer
        self.subtask = subtask
        self.exactly_once = writer.params.semantic == "exactly-once"
        # Without ``column`` the names come from the first batch, not from ``schema``: a
        # transformSql between reader and writer changes the columns after ``schema`` was known.
        del schema
        self._names: list[str] | None = None
        configured = writer.params.column_names()
        if configured is not None:
            self._names = writer.resolve_columns(configured, configured=True)
        self._segment = uuid.uuid4().hex
        self._staged = 0
        self._seq = 0
        self._conn: Connection | None = None
        self._pending = False
        self._staged_columns: set[str] = set()

    # -- contract ----------------------------------------------------------------------------

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if batch.num_rows == 0:
            return []
        batch, dirty = self._conform(batch)
        if batch.num_rows == 0:
            return dirty
        names = batch.schema.names
        columns, conversion_dirty, keep = self._python_columns(batch)
        dirty.extend(conversion_dirty)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        originals = list(range(batch.num_rows))
        if keep is not None:
            rows = [rows[i] for i in keep]
            originals = keep
        if self.exactly_once:
            dirty.extend(self._stage(batch, rows, originals))
        else:
            dirty.extend(self._write_direct(batch, rows, originals))
        return dirty

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        if not self.exactly_once:
            if self._conn is not None and self._pending:
                self._conn.commit()
                self._pending = False
            return None
        if self._staged == 0:
            return None
        ctx = self.writer.ctx
        target = self.writer.target()
        handle = {
            "table": target.staging_name,
            "schema": target.info.schema,
            "job": ctx.job_name,
            "run": ctx.run_id,
            "subtask": self.subtask,
            "checkpoint": checkpoint_id,
            "segment": self._segment,
            "columns": sorted(self._staged_columns, key=list(target.table.c.keys()).index),
        }
        self._segment = uuid.uuid4().hex
        self._staged = 0
        self._seq = 0
        self._staged_columns = set()
        return handle

    @override
    def commit(self, handle: Handle) -> None:
        self.writer.commit_handle(handle)

    @override
    def abort(self, handle: Handle) -> None:
        self.writer.abort_handle(handle)

    @override
    def discard(self) -> None:
        if not self.exactly_once:
            if self._conn is not None:
                self._conn.rollback()
                self._pending = False
            return
        if self._staged:
            target = self.writer.target()
            self.writer.abort_handle(
                {
                    "table": target.staging_name,
                    "schema": target.info.schema,
                    "job": self.writer.ctx.job_name,
                    "segment": self._segment,
                    "columns": [],
                }
            )
            self._staged = 0

    @override
    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- implementation ----------------------------------------------------------------------

    def _conform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
        writer = self.writer
        target = writer.target()
        if self._names is None:
            self._names = writer.resolve_columns(batch.schema.names, configured=False)
            writer.check_key_written(self._names, configured=False)
        names = self._names
        if batch.num_columns != len(names):
            msg = (
                f"the reader delivers {batch.num_columns} column(s) {batch.schema.names} but "
                f"{writer.param_path}.column names {len(names)} {names}"
            )
            raise JobFailedError(msg)
        renamed = batch.rename_columns(names)
        return conform(renamed, pa.schema([target.fields[n] for n in names]))

    def _python_columns(
        self, batch: pa.RecordBatch
    ) -> tuple[list[list[Any]], list[DirtyRecord], list[int] | None]:
        """Column-wise Python values; values the column's type cannot bind become dirty."""
        converters = self.writer.value_converters(batch.schema.names)
        columns: list[list[Any]] = []
        bad: dict[int, DirtyRecord] = {}
        for position, convert in enumerate(converters):
            values = batch.column(position).to_pylist()
            if convert is not None:
                converted: list[Any] = []
                for index, value in enumerate(values):
                    try:
                        converted.append(None if value is None else convert(value))
                    except (ValueError, TypeError) as exc:
                        name = batch.schema.names[position]
                        bad.setdefault(
                            index,
                            DirtyRecord(row_of(batch, index), f"{name}: {exc}", "conversion", name),
                        )
                        converted.append(None)
                values = converted
            columns.append(values)
        keep = [i for i in range(batch.num_rows) if i not in bad] if bad else None
        return columns, list(bad.values()), keep

    def _chunks(
        self, rows: list[dict[str, Any]], originals: list[int]
    ) -> list[tuple[list[dict[str, Any]], list[int]]]:
        size = self.writer.params.batch_size
        return [(rows[i : i + size], originals[i : i + size]) for i in range(0, len(rows), size)]

    def _stage(
        self, batch: pa.RecordBatch, rows: list[dict[str, Any]], originals: list[int]
    ) -> list[DirtyRecord]:
        writer = self.writer
        target = writer.target()
        ctx = writer.ctx
        dirty: list[DirtyRecord] = []
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
            meta = {
                "_syncx_job": ctx.job_name,
                "_syncx_run": ctx.run_id,
                "_syncx_subtask": self.subtask,
                "_syncx_segment": self._segment,
            }
            for row in rows:
                row.update(meta)
                row["_syncx_seq"] = self._seq
                self._seq += 1
            rejected_rows = 0
            for chunk, chunk_originals in self._chunks(rows, originals):
                failed = self._insert(
                    conn, target.staging, chunk, batch, chunk_originals, writer.insert_rows
                )
                rejected_rows += len(failed)
                dirty.extend(failed)
        written = len(rows) - rejected_rows
        if written > 0:
            self._staged += written
            self._staged_columns.update(batch.schema.names)
        return dirty

    def _write_direct(
        self, batch: pa.RecordBatch, rows: list[dict[str, Any]], originals: list[int]
    ) -> list[DirtyRecord]:
        writer = self.writer
        target = writer.target()
        upsert = bool(target.key)
        if upsert:
            rows, originals = _last_per_key(rows, originals, target.key)
        if self._conn is None:
            self._conn = writer.engine().connect()
        conn = self._conn
        if not conn.in_transaction():
            conn.begin()
        self._pending = True
        insert = writer.upsert_rows if upsert else writer.insert_rows
        dirty: list[DirtyRecord] = []
        try:
            for chunk, chunk_originals in self._chunks(rows, originals):
                dirty.extend(
                    self._insert(conn, target.table, chunk, batch, chunk_originals, insert)
                )
        except BaseException:
            conn.rollback()
            self._pending = False
            raise
        if conn.dialect.name == "sqlite":  # one writer at a time: do not hold the lock
            conn.commit()
            self._pending = False
        return dirty

    def _insert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        batch: pa.RecordBatch,
        originals: list[int],
        insert: Callable[[Connection, sa.Table, list[dict[str, Any]]], None],
    ) -> list[DirtyRecord]:
        """Insert a chunk in a SAVEPOINT; when the database rejects it, row by row."""
        if not rows:
            return []
        try:
            with conn.begin_nested():
                insert(conn, table, rows)
            return []
        except sa_exc.StatementError as exc:
            if not _is_row_error(exc):
                raise
        dirty = []
        for row, original in zip(rows, originals, strict=True):
            try:
                with conn.begin_nested():
                    insert(conn, table, [row])
            except sa_exc.StatementError as exc:
                if not _is_row_error(exc):
                    raise
                kind = self.writer.classify_error(exc)
                dirty.append(
                    DirtyRecord(row_of(batch, original), self.writer.db_message(exc), kind)
                )
        return dirty

    def _known_duplicates(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[int, str]:
        """Rows whose unique key repeats in the batch, exists in the target, or is staged."""
        target = self.writer.target()
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
                for found in self.writer.existing_keys(conn, table, key, list(first)):
                    hit = first.get(found)
                    if hit is not None and hit not in bad:
                        bad[hit] = (
                            f"duplicate key ({', '.join(key)})=({_show(found)}) {where} table "
                            f"'{target.info.qualified}'"
                        )
        return bad


def _copy_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """psycopg's ``COPY ... FROM STDIN`` of ``rows``, values bound as SQLAlchemy would bind them."""
    dialect = conn.dialect
    preparer = dialect.identifier_preparer
    names = list(rows[0])
    columns = ", ".join(preparer.quote_identifier(name) for name in names)
    statement = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"
    values: list[list[Any]] = []
    for name in names:
        column = [row[name] for row in rows]
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values.append(column if process is None else [process(v) for v in column])
    dbapi_error = dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in zip(*values, strict=True):
                copy.write_row(row)
    except dbapi_error as exc:
        raise sa_exc.DBAPIError.instance(statement, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def _last_per_key(
    rows: list[dict[str, Any]], originals: list[int], key: Sequence[str]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Keep the last row of each key (one upsert statement cannot touch a row twice)."""
    last: dict[Any, int] = {}
    for index, row in enumerate(rows):
        value = tuple(row[k] for k in key)
        last[value if None not in value else ("\0null", index)] = index
    if len(last) == len(rows):
        return rows, originals
    keep = sorted(last.values())
    return [rows[i] for i in keep], [originals[i] for i in keep]


def _show(value: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in value)


SqlWriter.task_class = SqlWriterTask
