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

**Dirty rows.** Values that do not convert to the target's column types (:func:`libs.types.conform`)
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

**Changes** (CDC batches, :mod:`libs.cdc`; ``table: "*"`` routes each source table to the target
table of its name; the target needs a primary key or ``keyColumns``): exactly-once stages them,
in order, in a change-staging table per target (``_syncx_cdc_<hash of target>_<hash of its
layout>``: the target's columns, ``_syncx_op`` and the segment metadata); the commit, in one
transaction with the marker, deletes per target every key with a staged change and inserts each
key's last upsert (a deadlock with another subtask's commit is retried). At-least-once applies
each batch the same way at once. ``ddl: apply`` runs a DDL when it arrives
(:meth:`SqlWriter.apply_ddl`, idempotent). ``mysqlwriter`` applies changes inside its own
transactions instead, XA when exactly-once, with nothing staged.

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
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import AliasChoices, Field, field_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.expression import Executable
from typing_extensions import override

from libs import cdc
from libs.sql import (
    ColumnInfo,
    EngineHolder,
    SqlConnectionParams,
    TableInfo,
    arrow_type_of,
    ident,
    open_engine,
    reflect_named,
    run_statement,
    safe_url,
    scrub,
)
from libs.types import conform, row_of
from sync.contract import DirtyKind, DirtyRecord, Handle, JobContext, Semantic, Writer, WriterTask
from sync.errors import ConfigIssue, JobFailedError, JobFileError
from writers.stream import WriterColumn

__all__ = [
    "CdcTarget",
    "SqlWriter",
    "SqlWriterParams",
    "SqlWriterTask",
    "Target",
    "WriteMode",
    "conform_changes",
]

log = logging.getLogger(__name__)

STAGE_PREFIX = "_syncx_stage_"
MARKER_TABLE = "_syncx_commits"
_META = ("_syncx_op", "_syncx_job", "_syncx_run", "_syncx_subtask", "_syncx_segment")
"""Metadata columns of the staging tables besides ``_syncx_seq`` (``_syncx_op``: changes only)."""
_IN_CHUNK = 500
"""Key values per ``IN (...)`` (below every driver's parameter limit)."""

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
    key_columns: list[str] | None = Field(
        default=None,
        description="CDC input: the columns changes are applied by (default: the target's "
        "primary key); needed for a target without one.",
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

    @field_validator("key_columns", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
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
class _Reflected:
    """A reflected table the writer writes into, and its staging table."""

    info: TableInfo
    table: sa.Table
    """All its columns, identifiers always quoted."""
    fields: dict[str, pa.Field]
    """Arrow field per column (its type and nullability), for :func:`libs.types.conform`."""
    key: list[str]
    staging_name: str
    staging: sa.Table

    def resolve(self, name: str) -> str | None:
        """The column called ``name`` (case-insensitively when unambiguous)."""
        found = self.info.column(name)
        return found.name if found is not None else None


@dataclass(frozen=True)
class Target(_Reflected):
    """The job's table for rows: ``key`` is the upsert key (replace/update), else empty; with
    its staging table of rows and the marker table."""

    markers: sa.Table


@dataclass(frozen=True)
class CdcTarget(_Reflected):
    """A table that CDC changes are applied to: ``key`` is what they are applied by (primary
    key, or ``keyColumns``); with its change-staging table."""


class SqlWriter(EngineHolder, Writer[SqlWriterParams]):
    """Writes into one existing table of a SQLAlchemy database (see the module docs)."""

    Parameters = SqlWriterParams
    semantic: ClassVar[Semantic] = "exactly-once"
    plugin_name: ClassVar[str] = "sqlwriter"
    param_path: ClassVar[str] = "job.content[0].writer.parameter"
    task_class: ClassVar[type[SqlWriterTask]]

    def __init__(self, params: SqlWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._target: Target | None = None
        self._staging_ready = False
        self._cdc_targets: dict[str, CdcTarget] = {}
        self._cdc_staging_ready: set[str] = set()

    # -- framework ---------------------------------------------------------------------------

    @override
    def effective_semantic(self) -> Semantic:
        return self.params.semantic

    @override
    def read_back(self) -> tuple[str, dict[str, Any]] | None:
        """The table, through the matching reader (a CDC job's many tables cannot be)."""
        if self.routes_by_source():
            return None
        return self.plugin_name.replace("writer", "reader"), {}

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
        if self.params.semantic == "exactly-once":
            live = [h for h in handles if h]
            keep = {str(h["segment"]) for h in live}
            if self.routes_by_source():
                self.ensure_markers()
            else:
                self.ensure_staging()
            for handle in live:
                if handle.get("kind") == "cdc":
                    self.commit_cdc_handle(handle)
                else:
                    self.commit_handle(handle)
            if not self.routes_by_source():
                target = self.target()
                self._clean_staged(target.info.schema, target.staging_name.rsplit("_", 1)[0], keep)
            self._clean_cdc_staging(keep)
            self._prune_markers({str(h["run"]) for h in live} | {self.ctx.run_id})
        if fresh:
            self._run_statements(self.params.pre_sql, "preSql")

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        return self.task_class(self, subtask, schema)

    @override
    def finish(self) -> None:
        self._run_statements(self.params.post_sql, "postSql")

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

    def stage_changes(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert CDC changes into a change-staging table: on MySQL with pymysql one raw
        ``executemany`` of tuples (pymysql batches it into multi-row INSERTs; about 1.5x faster
        than going through SQLAlchemy), else :meth:`insert_rows` (always when a dialect plugin
        overrides it: its fast path wins)."""
        overridden = type(self).insert_rows is not SqlWriter.insert_rows
        if (
            not overridden
            and conn.dialect.name in ("mysql", "mariadb")
            and conn.dialect.driver == "pymysql"
        ):
            _executemany_tuples(conn, table, rows)
        else:
            self.insert_rows(conn, table, rows)

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
        for condition in _key_in(columns, values):
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

    def value_converters(
        self, names: Sequence[str], table: sa.Table | None = None
    ) -> list[Callable[[Any], Any] | None]:
        """How Arrow's Python values become what a column's SQLAlchemy type binds (columns of
        ``table``, default the target)."""
        table = table if table is not None else self.target().table
        converters: list[Callable[[Any], Any] | None] = []
        for name in names:
            sql_type = table.c[name].type
            if isinstance(sql_type, sqltypes.JSON):
                converters.append(json.loads)
            elif isinstance(sql_type, sqltypes.Uuid) and sql_type.as_uuid:
                converters.append(uuid.UUID)
            else:
                converters.append(None)
        return converters

    def column_field(self, column: ColumnInfo) -> pa.Field:
        """The Arrow field rows are converted to before they are written into ``column``."""
        return pa.field(column.name, arrow_type_of(column.type), nullable=column.nullable)

    def staging_name(self, info: TableInfo) -> str:
        """``_syncx_stage_<hash of target>_<hash of its columns and types>``."""
        dialect = self.engine().dialect
        target = hashlib.sha256(info.qualified.encode()).hexdigest()[:10]
        signature = "|".join(f"{c.name}:{_type_text(c.type, dialect)}" for c in info.columns)
        columns = hashlib.sha256(signature.encode()).hexdigest()[:10]
        return f"{STAGE_PREFIX}{target}_{columns}"

    # -- shared state ------------------------------------------------------------------------

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
        if handle.get("kind") == "cdc":
            self.commit_cdc_handle(handle)
            return
        target = self.target()
        staging = _staging_view(handle["table"], handle.get("schema"), handle["columns"])
        mine = _segment_rows(staging, handle)
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
            if not self._claim(conn, handle, target.info.qualified):
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

    def _claim(self, conn: Connection, handle: Handle, target: str) -> bool:
        """Insert a handle's commit marker in ``conn``'s open transaction; False (and the
        transaction rolled back) when it is there: committed before, or at this moment by
        another process."""
        assert handle is not None
        markers = self.markers()
        key = {
            "job": handle["job"],
            "run": handle["run"],
            "subtask": int(handle["subtask"]),
            "checkpoint": int(handle["checkpoint"]),
            "segment": handle["segment"],
        }
        done = conn.execute(
            sa.select(sa.literal(1))
            .select_from(markers)
            .where(*[markers.c[k] == v for k, v in key.items()])
        ).first()
        if done is None:
            try:
                conn.execute(
                    sa.insert(markers).values(
                        **key,
                        target=target,
                        committed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    )
                )
                return True
            except sa_exc.IntegrityError:
                pass
        conn.rollback()
        return False

    def abort_handle(self, handle: Handle) -> None:
        """Delete a segment's staged rows (idempotent)."""
        if not handle:
            return
        if handle.get("kind") == "cdc":
            self.abort_cdc_handle(handle)
            return
        self._delete_staged(
            handle.get("schema"),
            lambda name: name == handle["table"],
            lambda staging: _segment_rows(staging, handle),
        )

    def _delete_staged(
        self,
        schema: str | None,
        chosen: Callable[[str], bool],
        where: Callable[[sa.Table], sa.ColumnElement[bool]],
    ) -> int:
        """Delete the rows ``where`` selects from every staging table (rows or changes) of
        ``schema`` that ``chosen`` picks by name; how many were deleted."""
        deleted = 0
        with self.engine().begin() as conn:
            for name in sa.inspect(conn).get_table_names(schema=schema):
                if chosen(name):
                    staging = _staging_view(name, schema)
                    deleted += conn.execute(sa.delete(staging).where(where(staging))).rowcount
        return deleted

    def _clean_staged(self, schema: str | None, prefix: str, keep: set[str]) -> None:
        """Delete this job's staged rows or changes outside the ``keep`` segments from every
        staging table of ``schema`` whose name starts with ``prefix`` (work of checkpoints that
        never completed)."""

        def unfinished(staging: sa.Table) -> sa.ColumnElement[bool]:
            condition = staging.c._syncx_job == self.ctx.job_name
            if keep:
                condition = sa.and_(condition, staging.c._syncx_segment.not_in(sorted(keep)))
            return condition

        deleted = self._delete_staged(schema, lambda name: name.startswith(prefix), unfinished)
        if deleted:
            log.info("removed %d staged row(s) of unfinished checkpoints", deleted)

    # -- CDC: applying changes by key -------------------------------------------------------

    def routes_by_source(self) -> bool:
        """``table: "*"``: each source table's changes go to the target table of its name."""
        return (self.params.table_name() or "").strip() == "*"

    def markers(self) -> sa.Table:
        """The commit-marker table (in the target's schema)."""
        if self.routes_by_source():
            return _marker_table(self.params.schema_name())
        return self.target().markers

    def ensure_markers(self) -> None:
        """Create the marker table when missing (once)."""
        with self._lock:
            if "<markers>" in self._cdc_staging_ready:
                return
            with self.engine().begin() as conn:
                self.markers().create(conn, checkfirst=True)
            self._cdc_staging_ready.add("<markers>")

    def cdc_target_name(self, source_table: str) -> str:
        """The target table of a source table's changes (``db.table``)."""
        if self.routes_by_source():
            return source_table.rpartition(".")[2]
        name = self.params.table_name()
        assert name is not None
        return name

    def cdc_target(self, source_table: str) -> CdcTarget:
        """The reflected target of ``source_table``'s changes (cached until a DDL changes it)."""
        name = self.cdc_target_name(source_table)
        with self._lock:
            found = self._cdc_targets.get(name)
            if found is None:
                found = self._reflect_cdc_target(name)
                self._cdc_targets[name] = found
            return found

    def forget_cdc_target(self, name: str) -> None:
        """Reflect ``name`` again on next use (its layout changed)."""
        with self._lock:
            self._cdc_targets.pop(name, None)

    def ensure_cdc_staging(self, target: CdcTarget) -> None:
        """Create the target's change-staging table and the marker table when missing."""
        with self._lock:
            if target.staging_name in self._cdc_staging_ready:
                return
            with self.engine().begin() as conn:
                target.staging.create(conn, checkfirst=True)
                self.markers().create(conn, checkfirst=True)
            self._cdc_staging_ready.add(target.staging_name)

    def cdc_session(self, conn: Connection) -> None:
        """Per-connection settings for applying changes: on MySQL, UTC for TIMESTAMP columns
        (the binlog carries them in UTC)."""
        if conn.dialect.name in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET time_zone = '+00:00'")
            # no gap locks: concurrent subtasks applying to one table do not deadlock as often
            conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            conn.commit()

    def cdc_delete(
        self,
        conn: Connection,
        target: sa.Table,
        staging: sa.Table,
        key: Sequence[str],
        mine: sa.ColumnElement[bool],
    ) -> None:
        """Delete from ``target`` every row whose key has a staged change (a hook: the
        statement that an index makes fast differs per dialect)."""
        dialect = conn.dialect.name
        if dialect in ("mysql", "mariadb", "postgresql"):
            join = [target.c[k] == staging.c[k] for k in key]
            conn.execute(sa.delete(target).where(*join, mine))
            return
        keys = sa.select(*[staging.c[k] for k in key]).where(mine)
        if len(key) == 1:
            condition = target.c[key[0]].in_(keys)
        else:
            condition = sa.tuple_(*[target.c[k] for k in key]).in_(keys)
        conn.execute(sa.delete(target).where(condition))

    def cdc_field(self, column: ColumnInfo) -> pa.Field:
        """The Arrow field changes are converted to for ``column``: :meth:`column_field`, except
        where the generic mapping cannot hold a MySQL value (BIT as an integer, not text; TIME
        as a duration, which may be negative or beyond a day)."""
        field = self.column_field(column)
        if type(column.type).__name__ == "BIT" and pa.types.is_string(field.type):
            field = pa.field(column.name, pa.int64())
        elif isinstance(column.type, sqltypes.Time) and pa.types.is_time(field.type):
            field = pa.field(column.name, pa.duration("us"))
        return field.with_nullable(True)

    def commit_cdc_handle(self, handle: Handle) -> None:
        """Apply a sealed segment of staged changes, once: per target (in order of first use),
        delete every key with a staged change, then insert each key's last upsert. A deadlock
        with another subtask's commit is retried (the transaction was rolled back whole)."""
        for attempt in range(1, _CDC_COMMIT_ATTEMPTS + 1):
            try:
                self._commit_cdc_once(handle)
                return
            except _TransientCommitError as exc:
                if attempt == _CDC_COMMIT_ATTEMPTS:
                    raise JobFailedError(str(exc)) from exc.__cause__
                log.info("cdc: commit of checkpoint %s retried: %s", handle["checkpoint"], exc)
                time.sleep(0.05 * attempt + random.random() * 0.1)

    def _commit_cdc_once(self, handle: Handle) -> None:
        with self.engine().connect() as conn:
            self.cdc_session(conn)
            conn.begin()
            if not self._claim(conn, handle, "cdc"):
                return
            try:
                for entry in handle["targets"]:
                    self._apply_cdc_entry(conn, handle, entry)
                conn.commit()
            except sa_exc.DBAPIError as exc:
                conn.rollback()
                if _is_transient(exc):
                    raise _TransientCommitError(self.db_message(exc)) from exc
                msg = (
                    f"applying the changes of checkpoint {handle['checkpoint']} (subtask "
                    f"{handle['subtask']}) failed: {self.db_message(exc)}. They stay staged "
                    f"(_syncx_segment = '{handle['segment']}'); remove the cause and run again "
                    "with --restore latest"
                )
                raise JobFailedError(msg) from exc

    def abort_cdc_handle(self, handle: Handle) -> None:
        """Delete a CDC segment's staged changes (idempotent)."""
        assert handle is not None
        names = {e["staging"] for e in handle.get("targets", [])}
        self._delete_staged(
            handle.get("schema"),
            lambda name: name in names,
            lambda staging: _segment_rows(staging, handle),
        )

    def purge_cdc_staged(self, target_name: str) -> None:
        """Delete every staged change of this job for ``target_name`` (a DROP or TRUNCATE of
        the table makes them moot; committing them later would be wrong)."""
        prefix = f"{CDC_STAGE_PREFIX}{_name_hash(self._qualified_target(target_name))}_"
        self._delete_staged(
            self.params.schema_name(),
            lambda name: name.startswith(prefix),
            lambda staging: staging.c._syncx_job == self.ctx.job_name,
        )

    def apply_ddl(self, change: cdc.DdlChange) -> None:
        """Apply a captured schema change to its target table, idempotently (``ddl: apply``):
        CREATE/DROP/TRUNCATE TABLE and ADD/DROP/MODIFY/CHANGE/RENAME COLUMN; index changes are
        left to the target's owner; RENAME TABLE is refused."""
        statement = cdc.parse_ddl(change.statement, change.db)
        source = f"{change.db}.{change.table}"
        name = self.cdc_target_name(source)
        qualified = self._quoted_target(name)
        where = f"{change.source.get('file')}:{change.source.get('pos')}"
        engine = self.engine()
        with engine.connect() as conn:
            exists = _table_exists(conn, name, self.params.schema_name())
        commands: list[str] = []
        if statement.kind == "create":
            if not exists:
                commands.append(_create_for(change.statement, qualified))
        elif statement.kind == "drop":
            self.purge_cdc_staged(name)
            commands.append(f"DROP TABLE IF EXISTS {qualified}")
        elif statement.kind == "truncate":
            self.purge_cdc_staged(name)
            if exists:
                dialect = engine.dialect.name
                commands.append(
                    f"DELETE FROM {qualified}"
                    if dialect == "sqlite"
                    else f"TRUNCATE TABLE {qualified}"
                )
        elif statement.kind == "alter":
            if not exists:
                log.warning("ddl: target table %s is missing; skipped %s", name, change.statement)
            else:
                with engine.connect() as conn:
                    columns = {
                        c["name"].lower()
                        for c in sa.inspect(conn).get_columns(
                            name, schema=self.params.schema_name()
                        )
                    }
                for kind, column, clause in statement.actions:
                    present = column is not None and column.lower() in columns
                    if kind == "add" and present:
                        continue
                    if kind in ("drop", "change", "rename") and not present:
                        continue
                    if kind in ("index", "other"):
                        log.warning(
                            "ddl: left to the target's owner: ALTER TABLE %s %s", name, clause
                        )
                        continue
                    commands.append(f"ALTER TABLE {qualified} {clause}")
        elif statement.kind == "rename":
            msg = (
                f"DDL at {where} renames a captured table ({change.statement!r}); ddl: apply does "
                "not rename targets: rename the target by hand and resume"
            )
            raise JobFailedError(msg)
        for command in commands:
            try:
                with engine.begin() as conn:
                    run_statement(conn, command)
            except sa_exc.DBAPIError as exc:
                msg = (
                    f"applying DDL from {where} ({change.statement!r}) to '{name}' failed: "
                    f"{self.db_message(exc)} (statement: {command})"
                )
                raise JobFailedError(msg) from exc
            log.info("ddl: applied to %s: %s", name, command)
        self.forget_cdc_target(name)

    def _qualified_target(self, name: str) -> str:
        schema = self.params.schema_name()
        return f"{schema}.{name}" if schema else name

    def _quoted_target(self, name: str) -> str:
        preparer = self.engine().dialect.identifier_preparer
        schema = self.params.schema_name()
        quoted = preparer.quote_identifier(name)
        return f"{preparer.quote_identifier(schema)}.{quoted}" if schema else quoted

    def _reflect_cdc_target(self, name: str) -> CdcTarget:
        engine = self.engine()
        info = self._reflect(name)
        if self.params.key_columns:
            key = []
            for index, column in enumerate(self.params.key_columns):
                found = info.column(column)
                if found is None:
                    path = f"{self.param_path}.keyColumns[{index}]"
                    raise JobFileError([ConfigIssue(path, info.missing(column))])
                key.append(found.name)
        elif info.primary_key:
            key = list(info.primary_key)
        elif self.params.update_key:
            key = [c for c in (self.resolve_in(info, k) for k in self.params.update_key) if c]
        else:
            msg = (
                f"table '{info.qualified}' has no primary key, so changes cannot be applied to it "
                f"by key: add a primary key to it, or name the key columns in "
                f"{self.param_path}.keyColumns"
            )
            raise JobFailedError(msg)
        fields = {c.name: self.cdc_field(c) for c in info.columns}
        signature = (
            "|".join(f"{c.name}:{_type_text(c.type, engine.dialect)}" for c in info.columns)
            + "|key:"
            + ",".join(key)
        )
        staging_name = (
            f"{CDC_STAGE_PREFIX}{_name_hash(info.qualified)}_"
            f"{hashlib.sha256(signature.encode()).hexdigest()[:10]}"
        )
        staging = _cdc_staging_table(info, staging_name, engine.dialect.name, key)
        return CdcTarget(info, info.sa_table(), fields, key, staging_name, staging)

    @staticmethod
    def resolve_in(info: TableInfo, name: str) -> str | None:
        """``name`` as a column of ``info``, or None."""
        found = info.column(name)
        return found.name if found is not None else None

    def _apply_cdc_entry(
        self, conn: Connection, handle: dict[str, Any], entry: dict[str, Any]
    ) -> None:
        schema = handle.get("schema")
        name = entry["table"]
        if not _table_exists(conn, entry["staging"], schema):
            return
        if not _table_exists(conn, name, schema):
            log.warning("cdc: target table %s is gone; its staged changes are dropped", name)
            return
        current = {c["name"] for c in sa.inspect(conn).get_columns(name, schema=schema)}
        columns = [c for c in entry["columns"] if c in current]
        key = list(entry["key"])
        staging = _staging_view(entry["staging"], schema, [*entry["columns"], *key])
        target = sa.Table(
            ident(name),
            sa.MetaData(),
            *[sa.Column(ident(c)) for c in sorted(set(columns) | set(key))],
            schema=ident(schema) if schema else None,
        )
        low, high = entry["seq"]
        mine = sa.and_(
            staging.c._syncx_job == handle["job"],
            staging.c._syncx_segment == handle["segment"],
            staging.c._syncx_seq.between(low, high),
        )
        self.cdc_delete(conn, target, staging, key, mine)
        later = staging.alias("later")
        newer = (
            sa.select(sa.literal(1))
            .select_from(later)
            .where(
                later.c._syncx_job == staging.c._syncx_job,
                later.c._syncx_segment == staging.c._syncx_segment,
                *[later.c[k] == staging.c[k] for k in key],
                later.c._syncx_seq > staging.c._syncx_seq,
                later.c._syncx_seq <= high,
            )
        )
        selected = sa.select(*[staging.c[c] for c in columns]).where(
            mine, staging.c._syncx_op == "u", ~sa.exists(newer)
        )
        conn.execute(sa.insert(target).from_select(columns, selected))
        conn.execute(sa.delete(staging).where(mine))

    def staging_schema(self) -> str | None:
        """The schema of the staging and marker tables: the target's."""
        return self.params.schema_name() if self.routes_by_source() else self.target().info.schema

    def _clean_cdc_staging(self, keep: set[str]) -> None:
        """Delete this job's staged changes outside ``keep`` from every change-staging table."""
        self._clean_staged(self.staging_schema(), CDC_STAGE_PREFIX, keep)

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
        info = self._reflect(table_text)
        table = info.sa_table()
        fields = {c.name: self.column_field(c) for c in info.columns}
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
            staging=_staging_table(info, staging_name, self.engine().dialect.name),
            markers=_marker_table(info.schema),
        )

    def _reflect(self, name: str) -> TableInfo:
        """The target table ``name`` (as the job names it), reflected."""
        engine = self.engine()
        with engine.connect() as conn:
            return reflect_named(
                conn, self.params, name, param_path=self.param_path, where=safe_url(engine.url)
            )

    def _upsert_key(self, info: TableInfo) -> list[str]:
        params = self.params
        if params.update_key:
            key = []
            for index, name in enumerate(params.update_key):
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

    def _prune_markers(self, runs: set[str]) -> None:
        markers = self.markers()
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


def _new_staging(info: TableInfo, name: str, dialect: str, *, changes: bool) -> sa.Table:
    """A staging table: the target's columns (nullable, no constraints), ``_syncx_op`` when it
    holds changes, and the segment metadata."""
    columns: list[sa.Column[Any]] = [
        sa.Column(ident(c.name), _staging_column_type(c, dialect), nullable=True)
        for c in info.columns
    ]
    if changes:
        columns.append(sa.Column("_syncx_op", sa.String(1), nullable=False))
    columns += [
        sa.Column("_syncx_job", sa.String(200), nullable=False),
        sa.Column("_syncx_run", sa.String(64), nullable=False),
        sa.Column("_syncx_subtask", sa.Integer, nullable=False),
        sa.Column("_syncx_segment", sa.String(32), nullable=False),
        sa.Column("_syncx_seq", sa.BigInteger, nullable=False),
    ]
    return sa.Table(
        ident(name), sa.MetaData(), *columns, schema=ident(info.schema) if info.schema else None
    )


def _staging_table(info: TableInfo, name: str, dialect: str) -> sa.Table:
    """The staging table of rows, indexed by segment and by the target's unique keys."""
    table = _new_staging(info, name, dialect, changes=False)
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


_CDC_COMMIT_ATTEMPTS = 10


class _TransientCommitError(Exception):
    """A commit lost a deadlock or timed out on a lock: try it again."""


def _is_transient(exc: sa_exc.DBAPIError) -> bool:
    """A deadlock or lock wait timeout (MySQL 1213/1205, PostgreSQL 40P01/40001, SQLite busy)."""
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args else None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = str(orig).lower()
    return code in (1213, 1205) or state in ("40P01", "40001") or "database is locked" in text


CDC_STAGE_PREFIX = "_syncx_cdc_"
"""Change-staging tables: ``_syncx_cdc_<hash of target>_<hash of its columns and key>``."""


def _name_hash(qualified: str) -> str:
    return hashlib.sha256(qualified.encode()).hexdigest()[:10]


def _cdc_staging_table(info: TableInfo, name: str, dialect: str, key: list[str]) -> sa.Table:
    """The change-staging table, indexed by (job, segment, key, seq) for the commit's joins."""
    table = _new_staging(info, name, dialect, changes=True)
    sa.Index(
        ident(f"{name}_k"),
        table.c._syncx_job,
        table.c._syncx_segment,
        *[table.c[k] for k in key],
        table.c._syncx_seq,
    )
    return table


def _staging_view(name: str, schema: str | None, columns: Sequence[str] = ()) -> sa.Table:
    """Enough of a staging table (of rows or of changes) to select from and delete by:
    ``columns`` and the metadata, untyped."""
    return sa.Table(
        ident(name),
        sa.MetaData(),
        *[sa.Column(ident(c)) for c in dict.fromkeys(columns)],
        *[sa.Column(c) for c in _META],
        sa.Column("_syncx_seq", sa.BigInteger),
        schema=ident(schema) if schema else None,
    )


def _segment_rows(staging: sa.Table, handle: dict[str, Any]) -> sa.ColumnElement[bool]:
    """The staged rows of a handle's segment."""
    return sa.and_(
        staging.c._syncx_job == handle["job"], staging.c._syncx_segment == handle["segment"]
    )


def _key_in(
    columns: Sequence[sa.ColumnElement[Any]], values: Sequence[tuple[Any, ...]]
) -> Iterator[sa.ColumnElement[bool]]:
    """``key IN (...)`` conditions for ``values`` of the key ``columns``, in chunks that stay
    below every driver's parameter limit."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        if len(columns) == 1:
            yield columns[0].in_([v[0] for v in chunk])
        else:
            yield sa.tuple_(*columns).in_(chunk)


def _table_exists(conn: Connection, name: str, schema: str | None) -> bool:
    return bool(sa.inspect(conn).has_table(name, schema=schema))


_CREATE_NAME = re.compile(
    r"^(\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?)"
    r"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)",
    re.IGNORECASE,
)


def _create_for(statement: str, qualified: str) -> str:
    """A captured ``CREATE TABLE`` naming the target table instead."""
    match = _CREATE_NAME.match(statement)
    if match is None:
        msg = f"cannot read the table name of {statement!r}"
        raise JobFailedError(msg)
    return f"{match.group(1)}{qualified}{statement[match.end() :]}"


def conform_changes(
    target: CdcTarget, changes: cdc.Changes
) -> tuple[pa.RecordBatch, list[bool], list[DirtyRecord]]:
    """The changes' rows under the target's column names and types, with whether each upserts;
    rows that do not convert are dirty. Delete rows keep only their key (other columns cannot
    be bad)."""
    rows = changes.rows
    names: list[str] = []
    missing: list[str] = []
    for name in rows.schema.names:
        found = target.resolve(name)
        if found is None:
            missing.append(name)
        names.append(found or name)
    if missing:
        msg = (
            f"changes of {changes.table} carry column(s) {', '.join(missing)} that target "
            f"table '{target.info.qualified}' lacks: the source table's layout changed (a DDL "
            "skipped with ddl: skip?). Change the target to match (or use ddl: apply) and "
            "resume with --restore latest"
        )
        raise JobFailedError(msg)
    absent = [k for k in target.key if k not in names]
    if absent:
        msg = (
            f"changes of {changes.table} lack the key column(s) {', '.join(absent)} of "
            f"target '{target.info.qualified}'"
        )
        raise JobFailedError(msg)
    mask = pa.array(changes.upsert, pa.bool_())
    arrays = []
    for name, column in zip(names, rows.columns, strict=True):
        if name not in target.key and not all(changes.upsert):
            arrays.append(pc.if_else(mask, column, pa.nulls(len(column), column.type)))
        else:
            arrays.append(column)
    marker = "__syncx_row"
    arrays.append(pa.array(range(rows.num_rows), pa.int64()))
    tagged = pa.RecordBatch.from_arrays(arrays, names=[*names, marker])
    schema = pa.schema([target.fields[n] for n in names] + [pa.field(marker, pa.int64())])
    conformed, dirty = conform(tagged, schema)
    kept = conformed.column(marker).to_pylist()
    upsert = [changes.upsert[i] for i in kept]
    return conformed.select(names), upsert, dirty


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
        self._cdc_entries: list[dict[str, Any]] = []
        """CDC: per target and staging table, the seq range staged in this segment, in order."""
        self._cdc_open: dict[str, dict[str, Any]] = {}

    # -- contract ----------------------------------------------------------------------------

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if batch.num_rows == 0:
            return []
        if cdc.is_cdc(batch.schema):
            return self._write_cdc(batch)
        if self.writer.routes_by_source():
            msg = (
                f"{self.writer.param_path}.table '*' routes changes by their source table: it "
                "needs CDC input (binlogreader), not plain rows"
            )
            raise JobFailedError(msg)
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
        if self._cdc_entries and self._staged:
            msg = "a writer subtask received both CDC changes and plain rows"
            raise JobFailedError(msg)
        if not (self._cdc_entries or self._staged):
            return None
        handle = self._handle(checkpoint_id)
        self._new_segment()
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
        if self._cdc_entries or self._staged:
            self.writer.abort_handle(self._handle(0))
            self._new_segment()

    @override
    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- segments ----------------------------------------------------------------------------

    def _handle(self, checkpoint_id: int) -> dict[str, Any]:
        """The handle of the open segment: of its staged changes, else of its staged rows."""
        writer = self.writer
        ctx = writer.ctx
        handle: dict[str, Any] = {
            "schema": writer.staging_schema(),
            "job": ctx.job_name,
            "run": ctx.run_id,
            "subtask": self.subtask,
            "checkpoint": checkpoint_id,
            "segment": self._segment,
        }
        if self._cdc_entries:
            handle["kind"] = "cdc"
            handle["targets"] = [dict(e, seq=list(e["seq"])) for e in self._cdc_entries]
        else:
            target = writer.target()
            handle["table"] = target.staging_name
            order = list(target.table.c.keys())
            handle["columns"] = sorted(self._staged_columns, key=order.index)
        return handle

    def _new_segment(self) -> None:
        self._segment = uuid.uuid4().hex
        self._seq = 0
        self._staged = 0
        self._staged_columns = set()
        self._cdc_entries, self._cdc_open = [], {}

    def _tag(self, rows: list[dict[str, Any]], upsert: Sequence[bool] | None = None) -> int:
        """Tag rows to stage with this segment and their order (and, for changes, whether
        each upserts); the first sequence number given."""
        ctx = self.writer.ctx
        meta = {
            "_syncx_job": ctx.job_name,
            "_syncx_run": ctx.run_id,
            "_syncx_subtask": self.subtask,
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

    # -- CDC -----------------------------------------------------------------------------------

    def _write_cdc(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        """Changes of one source table: staged (exactly-once) or applied now (at-least-once)."""
        writer = self.writer
        decoded = cdc.decode(batch)
        if isinstance(decoded, cdc.DdlChange):
            if self._conn is not None and self._pending:  # our row locks would block the DDL
                self._conn.commit()
                self._pending = False
            writer.apply_ddl(decoded)
            self._cdc_open.pop(writer.cdc_target_name(f"{decoded.db}.{decoded.table}"), None)
            return []
        assert decoded is not None
        target = writer.cdc_target(decoded.table)
        rows_batch, upsert, dirty = conform_changes(target, decoded)
        if not rows_batch.num_rows:
            return dirty
        names = rows_batch.schema.names
        columns, conversion_dirty, keep = self._python_columns(rows_batch, target.table)
        dirty.extend(conversion_dirty)
        originals = list(range(rows_batch.num_rows))
        if keep is not None:
            originals = keep
        kept = None if keep is None else set(keep)
        rows = [
            dict(zip(names, values, strict=True))
            for i, values in enumerate(zip(*columns, strict=True))
            if kept is None or i in kept
        ]
        upsert = [upsert[i] for i in originals]
        if self.exactly_once:
            dirty.extend(self._stage_cdc(target, rows_batch, rows, upsert, originals))
        else:
            dirty.extend(self._apply_cdc_now(target, rows_batch, rows, upsert, originals))
        return dirty

    def _stage_cdc(
        self,
        target: CdcTarget,
        batch: pa.RecordBatch,
        rows: list[dict[str, Any]],
        upsert: list[bool],
        originals: list[int],
    ) -> list[DirtyRecord]:
        writer = self.writer
        writer.ensure_cdc_staging(target)
        low = self._tag(rows, upsert)
        with writer.engine().connect() as conn:
            writer.cdc_session(conn)
            with conn.begin():
                dirty = self._insert_all(
                    conn, target.staging, rows, batch, originals, writer.stage_changes
                )
        name = writer.cdc_target_name(target.info.qualified)
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

    def _apply_cdc_now(
        self,
        target: CdcTarget,
        batch: pa.RecordBatch,
        rows: list[dict[str, Any]],
        upsert: list[bool],
        originals: list[int],
    ) -> list[DirtyRecord]:
        """At-least-once: delete every touched key, insert each key's last upsert (idempotent:
        a replay after a restore ends in the same rows)."""
        keys = [tuple(row[k] for k in target.key) for row in rows]
        deletes, inserts = cdc.net_effect(keys, upsert)
        columns = [target.table.c[k] for k in target.key]
        with self._direct(changes=True) as conn:
            for condition in _key_in(columns, [keys[i] for i in deletes + inserts]):
                conn.execute(sa.delete(target.table).where(condition))
            return self._insert_all(
                conn,
                target.table,
                [rows[i] for i in inserts],
                batch,
                [originals[i] for i in inserts],
                self.writer.insert_rows,
            )

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
        self, batch: pa.RecordBatch, table: sa.Table | None = None
    ) -> tuple[list[list[Any]], list[DirtyRecord], list[int] | None]:
        """Column-wise Python values; values the column's type cannot bind become dirty."""
        converters = self.writer.value_converters(batch.schema.names, table)
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

    def _stage(
        self, batch: pa.RecordBatch, rows: list[dict[str, Any]], originals: list[int]
    ) -> list[DirtyRecord]:
        writer = self.writer
        target = writer.target()
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
            self._tag(rows)
            failed = self._insert_all(
                conn, target.staging, rows, batch, originals, writer.insert_rows
            )
            dirty.extend(failed)
        written = len(rows) - len(failed)
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
        insert = writer.upsert_rows if upsert else writer.insert_rows
        with self._direct(changes=False) as conn:
            return self._insert_all(conn, target.table, rows, batch, originals, insert)

    @contextlib.contextmanager
    def _direct(self, *, changes: bool) -> Iterator[Connection]:
        """The subtask's connection in its open transaction (at-least-once), committed at
        ``prepare``; rolled back when the body fails; committed at once on SQLite, where one
        writer holds the database lock."""
        if self._conn is None:
            self._conn = self.writer.engine().connect()
            if changes:
                self.writer.cdc_session(self._conn)
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

    def _insert_all(
        self,
        conn: Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        batch: pa.RecordBatch,
        originals: list[int],
        insert: Callable[[Connection, sa.Table, list[dict[str, Any]]], None],
    ) -> list[DirtyRecord]:
        """Insert ``rows`` in chunks of ``batchSize``, each in a SAVEPOINT; a chunk the database
        rejects row by row. The rejected rows (dirty records of ``batch``'s ``originals``)."""
        size = self.writer.params.batch_size
        dirty: list[DirtyRecord] = []
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            try:
                with conn.begin_nested():
                    insert(conn, table, chunk)
                continue
            except sa_exc.StatementError as exc:
                if not _is_row_error(exc):
                    raise
            for row, original in zip(chunk, originals[start : start + size], strict=True):
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
    columns, values = _bound_rows(conn, table, rows)
    statement = (
        f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
    )

    def copy_all(cursor: Any) -> None:
        with cursor.copy(statement) as copy:
            for row in values:
                copy.write_row(row)

    _with_cursor(conn, statement, copy_all)


def _executemany_tuples(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """A DB-API ``executemany`` of ``rows`` as tuples, values bound as SQLAlchemy would bind
    them; driver errors become SQLAlchemy's exceptions."""
    columns, values = _bound_rows(conn, table, rows)
    marks = ", ".join(["%s"] * len(rows[0]))
    statement = (
        f"INSERT INTO {conn.dialect.identifier_preparer.format_table(table)} ({columns}) "
        f"VALUES ({marks})"
    )
    _with_cursor(conn, statement, lambda cursor: cursor.executemany(statement, values))


def _bound_rows(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The quoted column list of ``rows`` and their values as tuples, bound as SQLAlchemy would
    bind them (for a driver's own bulk path)."""
    dialect = conn.dialect
    names = list(rows[0])
    columns = ", ".join(dialect.identifier_preparer.quote_identifier(name) for name in names)
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    ]
    if not any(p is not None for p in processors):
        return columns, [tuple(row[n] for n in names) for row in rows]
    values = [
        tuple(
            v if p is None or v is None else p(v)
            for v, p in zip((row[n] for n in names), processors, strict=True)
        )
        for row in rows
    ]
    return columns, values


def _with_cursor(conn: Connection, statement: str, work: Callable[[Any], Any]) -> None:
    """``work`` on a DB-API cursor of ``conn``; the driver's errors become SQLAlchemy's."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        work(cursor)
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
