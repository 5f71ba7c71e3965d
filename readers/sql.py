"""``sqlreader``: a table (or a query) of any SQLAlchemy database, read by keyset pagination.

SQLite works with nothing installed; PostgreSQL needs ``psycopg`` (``pip install
'psycopg[binary]'``); dialect plugins (``mysqlreader``) subclass :class:`SqlReader` and override
its hooks.

**Splits.** With ``splitPk`` (a numeric column) and more than one reader channel, ``[MIN, MAX]``
of ``splitPk`` (under ``where``) is cut into that many disjoint key ranges of equal width; the
first range is open below and the last open above, so rows outside ``[MIN, MAX]`` are read too,
and each bound says whether it is inclusive (``split.data["range"]``). Otherwise one split.

**Keyset pagination.** A split is read page by page with
``SELECT cols FROM t WHERE (where) AND <range> AND key > :last ORDER BY key LIMIT :n`` (values are
bound parameters; names are always quoted by the dialect; ``where`` is inserted as SQL, by
design). Each page is a short transaction, so no cursor stays open across the table. The key is
``setting.restore.restoreColumnName`` (or the column at ``restoreColumnIndex`` when the name is
blank and ``isRestore`` is on), else ``splitPk``, else the table's single-column primary key, else
SQLite's ``rowid``. A key that is not unique is handled exactly: when a page ends inside a run
of equal key values, the whole run is fetched before the page is emitted. A split's position is
``{"after": <last key value>}`` (ints stay ints; dates, decimals, bytes are tagged so they
round-trip with their type); a restore from it re-reads nothing.

**NULL keys.** ``key > :last`` never matches NULL, so when the key (or ``splitPk``) column is
nullable, the first split first reads the rows whose key is NULL, ordered by every column and
resumable by offset (position ``{"nulls": rows}``).

**No key at all** (a view, or a table without primary key on a server without ``rowid``): one
split streamed with a server-side cursor, ``ORDER BY`` every column so that the order is
deterministic; the position is ``{"offset": rows}`` and a restore skips that many rows (exact
while the table does not change; rows that are equal in every column are interchangeable).
When a column cannot be sorted (PostgreSQL ``json``) the position stays ``None`` and a restore
reads the split again from its start: rows committed before the failure are then written
again (at-least-once for that job). A warning says so.

**customSql** replaces the table: ``SELECT <column> FROM (<customSql>) AS syncx_q WHERE (where)``.
With ``splitPk`` or a restore column among its result columns it is paginated and split like a
table. Without one it is a single split streamed with one cursor whose position stays ``None``:
a restore re-reads the whole query (at-least-once). Give ``column`` as ``{name, type}`` to fix
the batch schema; otherwise types are inferred from each page.

**Types** come from reflection (:func:`libs.sql.arrow_type_of`); ``column: [{name, type}]``
casts a column to a ChunJun type name. A value that does not convert is a dirty record (kind
``conversion``) and the rest of its page goes on. ``restoreColumnType`` is informational: the
reflected type of the column is what counts.

``fetchSize`` is the page size, capped by the runtime's batch size; ``queryTimeOut`` (seconds)
becomes PostgreSQL's ``statement_timeout`` (SQLite has none).
"""

from __future__ import annotations

import decimal
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, CursorResult, Engine, Row
from sqlalchemy.sql import ColumnElement, FromClause, Select, sqltypes
from typing_extensions import override

from libs.sql import (
    ColumnInfo,
    EngineHolder,
    SqlConnectionParams,
    TableInfo,
    arrow_type_of,
    decode_value,
    encode_value,
    ident,
    is_orderable,
    open_engine,
    reflect_named,
    rows_to_batch,
    safe_url,
    scrub,
    sql_text,
    value_converter,
)
from libs.types import arrow_type, conform
from sync.contract import (
    DirtyRecord,
    Estimate,
    JobContext,
    Position,
    Reader,
    Split,
    SplitReader,
)
from sync.errors import ConfigIssue, JobFailedError, JobFileError
from sync.model import Params

__all__ = ["SqlColumn", "SqlReader", "SqlReaderParams", "SqlSplitReader"]

log = logging.getLogger(__name__)

_CUSTOM_ALIAS = "syncx_q"


class SqlColumn(Params):
    """A column to read: its name and optionally the ChunJun type to cast it to."""

    name: str
    type: str | None = None


class SqlReaderParams(SqlConnectionParams):
    """``parameter`` of ``sqlreader``."""

    column: list[SqlColumn | str] | str | None = Field(
        default=None, description="Columns to read: names or {name, type}; `*` or absent = all."
    )
    where: str | None = Field(default=None, description="SQL condition, inserted as written.")
    custom_sql: str | None = Field(
        default=None, description="A query to read instead of a table (see the module docs)."
    )
    split_pk: str | None = Field(
        default=None, description="Numeric column whose range is split over reader channels."
    )
    fetch_size: Annotated[int, Field(gt=0)] = Field(
        default=4096, description="Rows per page (at most the runtime's batch size)."
    )
    query_time_out: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Seconds a statement may run (PostgreSQL statement_timeout)."
    )
    request_accumulator_interval: int | None = Field(
        default=None, description="Accepted for ChunJun compatibility (ignored)."
    )

    @field_validator("where", "custom_sql", "split_pk", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("fetch_size", mode="before")
    @classmethod
    def _chunjun_min_value_is_default(cls, value: Any) -> Any:
        """ChunJun's default ``Integer.MIN_VALUE`` (MySQL streaming) means "the default" here."""
        return 4096 if isinstance(value, int) and value <= 0 else value

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlReaderParams:
        if self.custom_sql is None and self.table_name() is None:
            msg = "give `table` (or connection[0].table) or `customSql`"
            raise ValueError(msg)
        return self

    def column_specs(self) -> list[SqlColumn] | None:
        """The columns asked for, or None for all of them."""
        raw = self.column
        if raw is None or raw == "*":
            return None
        if isinstance(raw, str):
            return [SqlColumn(name=raw)]
        specs = [SqlColumn(name=c) if isinstance(c, str) else c for c in raw]
        if len(specs) == 1 and specs[0].name == "*":
            return None
        return specs


@dataclass(frozen=True)
class SourceColumn:
    """A column the reader selects: its SQL expression, and how it becomes Arrow."""

    name: str
    expr: ColumnElement[Any]
    field: pa.Field | None
    """The Arrow field values are built as (None: inferred per page, customSql without types)."""
    converter: Any = None
    orderable: bool = True
    nullable: bool = True


@dataclass(frozen=True)
class KeyColumn:
    """The keyset column (or the range column): expression and what is known about it."""

    name: str
    expr: ColumnElement[Any]
    unique: bool
    nullable: bool
    numeric: bool | None
    """True/False from reflection; None when unknown (customSql)."""


@dataclass(frozen=True)
class Source:
    """What a split reads from: a table or a customSql subquery, its columns, its keys."""

    from_: FromClause
    describe: str
    columns: list[SourceColumn]
    key: KeyColumn | None
    range: KeyColumn | None
    declared: pa.Schema | None
    """The batch schema after the ``column[].type`` casts (None when types are inferred)."""
    table: TableInfo | None = None

    @property
    def hidden_key(self) -> bool:
        """Whether the key is selected only to paginate (not one of the output columns)."""
        return self.key is not None and all(c.name != self.key.name for c in self.columns)

    @property
    def key_index(self) -> int:
        """Where the key is in a fetched row."""
        assert self.key is not None
        for index, column in enumerate(self.columns):
            if column.name == self.key.name:
                return index
        return len(self.columns)

    def select_list(self) -> list[ColumnElement[Any]]:
        """Output columns, then the key when it is not one of them."""
        exprs = [c.expr for c in self.columns]
        if self.key is not None and self.hidden_key:
            exprs.append(self.key.expr)
        return exprs


_START = object()
"""No key value yet: the split's first page."""


def explain(conn: Connection, prefix: str, query: Select[Any]) -> CursorResult[Any]:
    """Run ``<prefix> <query>`` (an ``EXPLAIN``) with the query's values bound as parameters."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional and compiled.positiontup is not None:
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    return conn.exec_driver_sql(f"{prefix} {compiled}", params)


class SqlReader(EngineHolder, Reader[SqlReaderParams]):
    """Reads one table or query of a SQLAlchemy database in resumable key-range splits.

    Hooks for dialect plugins: :meth:`create_engine`, :meth:`implicit_key`,
    :meth:`column_specs`, :meth:`column_field`, :meth:`cut_points`, :meth:`page_query`,
    :meth:`tie_query`, :meth:`stream_query`, :meth:`fetch_rows`, :meth:`to_batch` and
    :attr:`split_reader_class`.
    """

    Parameters = SqlReaderParams
    plugin_name: ClassVar[str] = "sqlreader"
    param_path: ClassVar[str] = "job.content[0].reader.parameter"
    split_reader_class: ClassVar[type[SqlSplitReader]]

    def __init__(self, params: SqlReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._source: Source | None = None

    # -- framework ---------------------------------------------------------------------------

    @override
    def check(self) -> None:
        source = self.source()
        where = self.params.where
        if where is not None:
            probe = sa.select(*source.select_list()).select_from(source.from_)
            probe = probe.where(sql_text(f"({where})")).limit(0)
            try:
                with self.engine().connect() as conn:
                    conn.execute(probe).all()
            except sa_exc.DBAPIError as exc:
                msg = f"the condition fails on {source.describe}: {self._db_message(exc)}"
                raise JobFileError([ConfigIssue(f"{self.param_path}.where", msg)]) from exc

    @override
    def schema(self) -> pa.Schema | None:
        return self.source().declared

    @override
    def plan(self, parallelism: int) -> list[Split]:
        source = self.source()
        if source.key is None:
            mode = "custom" if self.params.custom_sql is not None else "stream"
            if parallelism > 1:
                log.warning(
                    "%s: no key column to split on; one reader channel reads", self.plugin_name
                )
            return [Split(mode, {"mode": mode})]
        nulls = source.key.nullable or bool(source.range and source.range.nullable)
        base = {"mode": "keyset", "key": source.key.name}
        bounds = (
            self.range_bounds(parallelism) if source.range is not None and parallelism > 1 else []
        )
        if not bounds:
            if parallelism > 1 and source.range is None:
                log.warning(
                    "%s: %d reader channels but no splitPk; one channel reads",
                    self.plugin_name,
                    parallelism,
                )
            return [Split("all", {**base, "range": None, "nulls": nulls})]
        assert source.range is not None
        splits = []
        for index, (lo, hi) in enumerate(bounds):
            span = {
                "column": source.range.name,
                "lo": lo,
                "loInclusive": True,
                "hi": hi,
                "hiInclusive": False,
            }
            splits.append(
                Split(f"range-{index}", {**base, "range": span, "nulls": nulls and index == 0})
            )
        return splits

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        source = self.source()
        if split.data.get("mode") == "keyset":
            span = split.data.get("range") or {}
            planned = (split.data.get("key"), span.get("column"))
            now = (
                source.key.name if source.key is not None else None,
                source.range.name if source.range is not None and span else None,
            )
            if planned != now:
                msg = (
                    f"split {split.id} was planned with key/range column {planned} but the job "
                    f"now uses {now} (restoreColumnName or splitPk changed); start the job anew"
                )
                raise JobFailedError(msg)
        return self.split_reader_class(self, split, position)

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate | None:
        """Rows of the splits: PostgreSQL's planner estimate (``EXPLAIN``, no scan); SQLite
        counts them (it keeps no statistics); other databases give none."""
        dialect = self.engine().dialect.name
        if dialect not in ("sqlite", "postgresql"):
            return None
        source = self.source()
        total = 0
        with self.engine().connect() as conn:
            for split in splits:
                rows = sa.select(sa.literal(1)).select_from(source.from_)
                rows = rows.where(*self.conditions(split))
                if dialect == "sqlite":
                    count = sa.select(sa.func.count()).select_from(rows.subquery())
                    total += int(conn.execute(count).scalar_one())
                    continue
                plan = explain(conn, "EXPLAIN (FORMAT JSON)", rows).scalar_one()
                total += int(plan[0]["Plan"]["Plan Rows"])
        return Estimate(rows=total)

    # -- hooks -------------------------------------------------------------------------------

    def create_engine(self) -> Engine:
        """Connect (trying each candidate URL); errors name the URL without the password."""
        path = f"{self.param_path}.{'url' if self.params.url else 'connection[0].jdbcUrl'}"
        return open_engine(
            self.params.candidate_urls(),
            path=path,
            plugin=self.plugin_name,
            query_timeout=self.params.query_time_out,
            secret=self.params.secret(),
        )

    def implicit_key(self, conn: Connection, table: TableInfo) -> KeyColumn | None:
        """A key the database keeps without a declared column (SQLite's ``rowid``), or None."""
        if conn.dialect.name != "sqlite" or table.is_view:  # a view's rowid means nothing
            return None
        taken = {c.name.lower() for c in table.columns}
        name = next((n for n in ("rowid", "_rowid_", "oid") if n not in taken), None)
        if name is None:
            return None
        expr = sa.literal_column(name, sa.Integer)
        try:
            conn.execute(sa.select(expr).select_from(table.sa_table()).limit(0)).all()
        except sa_exc.DBAPIError:  # a WITHOUT ROWID table or a view
            conn.rollback()
            return None
        return KeyColumn(name, expr, unique=True, nullable=False, numeric=True)

    def column_specs(self) -> list[SqlColumn] | None:
        """The columns to select (None: all); a dialect plugin may leave out constant columns."""
        return self.params.column_specs()

    def column_field(self, column: ColumnInfo) -> pa.Field:
        """The Arrow field a reflected column is read as."""
        return pa.field(column.name, arrow_type_of(column.type), nullable=column.nullable)

    def range_bounds(self, parallelism: int) -> list[tuple[int | None, int | None]]:
        """Cut ``[MIN, MAX]`` of ``splitPk`` into ``parallelism`` ranges (first and last open)."""
        source = self.source()
        assert source.range is not None
        query = sa.select(sa.func.min(source.range.expr), sa.func.max(source.range.expr))
        query = query.select_from(source.from_)
        if self.params.where is not None:
            query = query.where(sql_text(f"({self.params.where})"))
        with self.engine().connect() as conn:
            low, high = conn.execute(query).one()
        if low is None or high is None:
            return []
        if isinstance(low, bool) or not isinstance(low, int | float | decimal.Decimal):
            kind = type(low).__name__
            msg = f"splitPk '{source.range.name}' is not numeric (its values are {kind})"
            raise JobFileError([ConfigIssue(f"{self.param_path}.splitPk", msg)])
        lo, hi = math.floor(low), math.floor(high)
        count = max(1, min(parallelism, hi - lo + 1))
        cuts = self.cut_points(lo, hi, count) if count > 1 else []
        if not cuts:
            return []
        edges: list[int | None] = [None, *cuts, None]
        return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]

    def cut_points(self, lo: int, hi: int, count: int) -> list[int]:
        """Where ``[lo, hi]`` is cut into ``count`` key ranges: equal widths (a dialect plugin
        may follow the server's row estimates instead)."""
        return sorted({lo + ((hi - lo + 1) * i) // count for i in range(1, count)})

    def conditions(self, split: Split) -> list[ColumnElement[bool]]:
        """``where`` and the split's key range."""
        source = self.source()
        conds: list[ColumnElement[bool]] = []
        if self.params.where is not None:
            conds.append(sql_text(f"({self.params.where})"))  # type: ignore[arg-type]
        span = split.data.get("range")
        if span and source.range is not None:
            column = source.range.expr
            if span.get("lo") is not None:
                conds.append(
                    column >= span["lo"] if span.get("loInclusive", True) else column > span["lo"]
                )
            if span.get("hi") is not None:
                conds.append(
                    column <= span["hi"] if span.get("hiInclusive") else column < span["hi"]
                )
        return conds

    def page_query(self, split: Split, after: Any, limit: int) -> Select[Any]:
        """One keyset page: rows after ``after`` (or from the start) in key order."""
        source = self.source()
        assert source.key is not None
        key = source.key.expr
        conds = self.conditions(split)
        conds.append(key.is_not(None) if after is _START else key > after)
        query = sa.select(*source.select_list()).select_from(source.from_).where(*conds)
        return query.order_by(key).limit(limit)

    def tie_query(self, split: Split, value: Any) -> Select[Any]:
        """Every row of the split whose key equals ``value`` (completes a page ending in a tie)."""
        source = self.source()
        assert source.key is not None
        conds = [*self.conditions(split), source.key.expr == value]
        return sa.select(*source.select_list()).select_from(source.from_).where(*conds)

    def stream_query(self, split: Split, offset: int, *, nulls: bool) -> Select[Any]:
        """A full read for a split without usable key, ordered by every column when
        :meth:`stream_resumable`, skipping ``offset`` rows (``nulls``: the NULL-key rows of a
        keyset split, over every range)."""
        source = self.source()
        conds = self._where_only() if nulls else self.conditions(split)
        if nulls:
            assert source.key is not None
            null_conds = [source.key.expr.is_(None)]
            ranged = bool(split.data.get("range"))  # only then do range bounds exclude NULLs
            if ranged and source.range is not None and source.range.name != source.key.name:
                null_conds.append(source.range.expr.is_(None))
            conds.append(sa.or_(*null_conds))
        query = sa.select(*source.select_list()).select_from(source.from_).where(*conds)
        if self.stream_resumable():
            query = query.order_by(*[c.expr for c in source.columns])
        return query.offset(offset) if offset else query

    def stream_resumable(self) -> bool:
        """Whether a stream's order is deterministic, so that a position can skip rows."""
        return all(c.orderable for c in self.source().columns)

    def custom_query(self) -> Select[Any]:
        """customSql without key: its columns under ``where``, in the query's own order."""
        source = self.source()
        return sa.select(*source.select_list()).select_from(source.from_).where(*self._where_only())

    def fetch_rows(self, conn: Connection, query: Select[Any]) -> Sequence[Row[Any]]:
        """Run one page query and return its rows."""
        return conn.execute(query).all()

    def to_batch(self, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
        """Rows (output columns first) as a record batch; unconvertible rows become dirty."""
        source = self.source()
        fields = [c.field for c in source.columns]
        if all(f is not None for f in fields):
            schema = pa.schema(fields)  # type: ignore[arg-type]
            converters = [c.converter for c in source.columns]
            batch, bad = rows_to_batch(rows, schema, converters)
        else:
            batch, bad = _infer_batch(rows, [c.name for c in source.columns])
        for item in bad:
            self._report(rows[item.row], item.error, item.field)
        if source.declared is not None and not batch.schema.equals(source.declared):
            batch, dirty = conform(batch, source.declared)
            for record in dirty:
                self.ctx.report_dirty(record)
        return batch

    # -- shared state ------------------------------------------------------------------------

    @override
    def key_columns(self) -> list[str] | None:
        """The table's primary key, else a unique keyset column (for ``syncx verify``)."""
        source = self.source()
        if source.table is not None and source.table.primary_key:
            return list(source.table.primary_key)
        if source.key is not None and source.key.unique:
            return [source.key.name]
        return None

    def source(self) -> Source:
        """The reflected source (connects and checks on first use)."""
        with self._lock:
            if self._source is None:
                with self.engine().connect() as conn:
                    if self.params.custom_sql is not None:
                        self._source = self._custom_source(conn)
                    else:
                        self._source = self._table_source(conn)
            return self._source

    @property
    def page_rows(self) -> int:
        """Rows per page: ``fetchSize``, at most the runtime's batch size."""
        return max(1, min(self.params.fetch_size, self.ctx.batch_rows))

    # -- implementation ----------------------------------------------------------------------

    def _where_only(self) -> list[ColumnElement[bool]]:
        if self.params.where is None:
            return []
        return [sql_text(f"({self.params.where})")]  # type: ignore[list-item]

    def _url_text(self) -> str:
        return safe_url(self.engine().url)

    def _db_message(self, exc: sa_exc.DBAPIError) -> str:
        return scrub(str(exc.orig).strip(), [self.params.secret()])

    def _issue(self, where: str, message: str) -> JobFileError:
        return JobFileError([ConfigIssue(where, message)])

    def _report(self, row: Sequence[Any], error: str, field: str | None) -> None:
        names = [c.name for c in self.source().columns]
        self.ctx.report_dirty(
            DirtyRecord(dict(zip(names, row, strict=False)), error, "conversion", field)
        )

    def _declared(
        self, fields: list[pa.Field | None], specs: list[SqlColumn] | None
    ) -> pa.Schema | None:
        """The schema after ``column[].type`` casts; None when some type is unknown."""
        result: list[pa.Field] = []
        for index, field in enumerate(fields):
            spec = specs[index] if specs else None
            if spec is not None and spec.type is not None:
                try:
                    declared = arrow_type(spec.type)
                except ValueError as exc:
                    raise self._issue(f"{self.param_path}.column[{index}].type", str(exc)) from exc
                name = field.name if field is not None else spec.name
                result.append(pa.field(name, declared))
            elif field is None:
                return None
            else:
                result.append(field)
        return pa.schema(result)

    def _restore_column_name(self, names: list[str]) -> tuple[str | None, str]:
        restore = self.ctx.restore
        name = (restore.restore_column_name or "").strip() or None
        if name is not None:
            return name, "job.setting.restore.restoreColumnName"
        index = restore.restore_column_index
        if restore.is_restore and index is not None:
            if not 0 <= index < len(names):
                msg = f"index {index} is outside the {len(names)} columns read"
                raise self._issue("job.setting.restore.restoreColumnIndex", msg)
            return names[index], "job.setting.restore.restoreColumnIndex"
        return None, ""

    def _table_source(self, conn: Connection) -> Source:
        params = self.params
        table_text = params.table_name()
        assert table_text is not None
        info = reflect_named(
            conn, params, table_text, param_path=self.param_path, where=self._url_text()
        )
        table = info.sa_table()
        specs = self.column_specs()
        chosen: list[ColumnInfo] = []
        for index, spec in enumerate(specs or []):
            found = info.column(spec.name)
            if found is None:
                raise self._issue(f"{self.param_path}.column[{index}]", info.missing(spec.name))
            chosen.append(found)
        if specs is None:
            chosen = list(info.columns)
        columns = [
            SourceColumn(
                c.name,
                table.c[c.name],
                self.column_field(c),
                value_converter(c.type),
                is_orderable(c.type),
                c.nullable,
            )
            for c in chosen
        ]
        declared = self._declared([c.field for c in columns], specs)

        def key_of(column_name: str, path: str, what: str) -> KeyColumn:
            found = info.column(column_name)
            if found is None:
                raise self._issue(path, info.missing(column_name, what))
            numeric = isinstance(found.type, sqltypes.Integer | sqltypes.Numeric | sqltypes.Float)
            return KeyColumn(
                found.name,
                table.c[found.name],
                unique=(found.name,) in info.unique_keys,
                nullable=found.nullable,
                numeric=numeric,
            )

        range_key = None
        if params.split_pk is not None:
            range_key = key_of(params.split_pk, f"{self.param_path}.splitPk", "splitPk")
            if not range_key.numeric:
                found = info.column(params.split_pk)
                assert found is not None
                msg = (
                    f"splitPk '{found.name}' must be a numeric column; in table '{info.qualified}' "
                    f"it is {found.type}"
                )
                raise self._issue(f"{self.param_path}.splitPk", msg)
        restore_name, restore_path = self._restore_column_name([c.name for c in columns])
        key: KeyColumn | None
        if restore_name is not None:
            key = key_of(restore_name, restore_path, "restore column")
            if not is_orderable(info.column(key.name).type):  # type: ignore[union-attr]
                raise self._issue(restore_path, f"column '{key.name}' cannot be ordered")
        elif range_key is not None:
            key = range_key
        elif len(info.primary_key) == 1:
            key = key_of(info.primary_key[0], f"{self.param_path}.table", "primary key")
        else:
            key = self.implicit_key(conn, info)
        if key is None:
            log.warning(
                "%s: %s has no primary key and no splitPk/restoreColumnName: reading it in one "
                "split ordered by every column (set splitPk for keyset pagination)",
                self.plugin_name,
                info.qualified,
            )
            if not all(c.orderable for c in columns):
                log.warning(
                    "%s: some columns of %s cannot be ordered: a restore reads it again from "
                    "the start (rows may repeat)",
                    self.plugin_name,
                    info.qualified,
                )
        return Source(table, f"table '{info.qualified}'", columns, key, range_key, declared, info)

    def _custom_source(self, conn: Connection) -> Source:
        params = self.params
        assert params.custom_sql is not None
        sql = params.custom_sql.strip().rstrip(";")
        probe = sql_text(f"SELECT * FROM ({sql}) AS {_CUSTOM_ALIAS} WHERE 1 = 0")
        try:
            names = [str(k) for k in conn.execute(probe).keys()]  # noqa: SIM118 - a Result, not a dict
        except sa_exc.DBAPIError as exc:
            msg = f"the query fails: {self._db_message(exc)}"
            raise self._issue(f"{self.param_path}.customSql", msg) from exc
        subquery = (
            sql_text(sql).columns(*[sa.column(ident(n)) for n in names]).subquery(_CUSTOM_ALIAS)
        )
        specs = self.column_specs()
        chosen: list[str] = []
        for index, spec in enumerate(specs or []):
            found = next((n for n in names if n == spec.name), None) or next(
                (n for n in names if n.lower() == spec.name.lower()), None
            )
            if found is None:
                msg = (
                    f"column '{spec.name}' is not a result column of customSql "
                    f"(it has: {', '.join(names)})"
                )
                raise self._issue(f"{self.param_path}.column[{index}]", msg)
            chosen.append(found)
        if specs is None:
            chosen = names
        columns = [SourceColumn(n, subquery.c[n], None) for n in chosen]
        declared = self._declared([None] * len(columns), specs)

        def key_of(column_name: str, path: str, what: str) -> KeyColumn:
            found = next((n for n in names if n.lower() == column_name.lower()), None)
            if found is None:
                msg = (
                    f"{what} '{column_name}' is not a result column of customSql "
                    f"(it has: {', '.join(names)})"
                )
                raise self._issue(path, msg)
            return KeyColumn(found, subquery.c[found], unique=False, nullable=True, numeric=None)

        range_key = None
        if params.split_pk is not None:
            range_key = key_of(params.split_pk, f"{self.param_path}.splitPk", "splitPk")
        restore_name, restore_path = self._restore_column_name(chosen)
        key = key_of(restore_name, restore_path, "restore column") if restore_name else range_key
        if key is None:
            log.warning(
                "%s: customSql without splitPk/restoreColumnName is read with one cursor; a "
                "restore reads it again from the start (rows may repeat)",
                self.plugin_name,
            )
        return Source(subquery, "customSql", columns, key, range_key, declared)


def _infer_batch(
    rows: Sequence[Sequence[Any]], names: list[str]
) -> tuple[pa.RecordBatch, list[Any]]:
    """A batch with Arrow-inferred types (customSql without declared types)."""
    width = len(names)
    columns = list(zip(*rows, strict=False))[:width] if rows else [() for _ in names]
    arrays = []
    for values in columns:
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            arrays.append(
                pa.array([None if v is None else str(v) for v in values], type=pa.string())
            )
    return pa.RecordBatch.from_arrays(arrays, names=names), []


class SqlSplitReader(SplitReader):
    """One open split: keyset pages (after a NULL-key phase), or one ordered stream.

    Positions: ``None`` (start), ``{"nulls": n}`` (n NULL-key rows emitted), ``{"after": key}``
    (keyset), ``{"offset": n}`` (ordered stream). :meth:`snapshot` returns the position after
    the last batch :meth:`batches` yielded.
    """

    def __init__(self, reader: SqlReader, split: Split, position: Position | None) -> None:
        self._reader = reader
        self._split = split
        self._position: Position | None = position
        self._conn: Connection | None = None
        self._result: Any = None

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        try:
            yield from self._read(self._split.data.get("mode"))
        finally:
            self._release()

    @override
    def snapshot(self) -> Position:
        return self._position

    @override
    def close(self) -> None:
        self._release()

    # -- phases ------------------------------------------------------------------------------

    def _read(self, mode: str | None) -> Iterator[pa.RecordBatch | None]:
        """The phases of a split of ``mode``. Dialect plugins override the phases
        (``_keyset``, ``_stream``, ``_custom``, ``_release``) and may add modes here."""
        if mode == "keyset":
            if self._split.data.get("nulls") and not self._in_keyset():
                yield from self._stream(nulls=True)
            yield from self._keyset()
        elif mode == "stream":
            yield from self._stream(nulls=False)
        else:
            yield from self._custom()

    def _in_keyset(self) -> bool:
        return isinstance(self._position, dict) and "after" in self._position

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._reader.engine().connect()
        return self._conn

    def _release(self) -> None:
        if self._result is not None:
            try:
                self._result.close()
            finally:
                self._result = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _keyset(self) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        source = reader.source()
        assert source.key is not None
        key_index, unique = source.key_index, source.key.unique
        after: Any = _START
        if self._in_keyset():
            after = decode_value(self._position["after"])  # type: ignore[index]
        limit = reader.page_rows
        conn = self._connection()
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            try:
                rows = list(reader.fetch_rows(conn, reader.page_query(self._split, after, limit)))
                full = len(rows) == limit
                if not rows:
                    return
                last = rows[-1][key_index]
                if full and not unique:
                    cut = len(rows)
                    while cut > 0 and rows[cut - 1][key_index] == last:
                        cut -= 1
                    ties = reader.fetch_rows(conn, reader.tie_query(self._split, last))
                    rows = rows[:cut] + list(ties)
            finally:
                conn.rollback()
            batch = reader.to_batch(rows)
            after = last
            self._position = {"after": encode_value(last)}
            yield batch if batch.num_rows else None
            if not full:
                return

    def _stream(self, *, nulls: bool) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        tag = "nulls" if nulls else "offset"
        resumable = reader.stream_resumable()
        offset = 0
        if resumable and isinstance(self._position, dict) and tag in self._position:
            offset = int(self._position[tag])
        query = reader.stream_query(self._split, offset, nulls=nulls)
        yield from self._run_stream(query, tag if resumable else None, offset)

    def _custom(self) -> Iterator[pa.RecordBatch | None]:
        yield from self._run_stream(self._reader.custom_query(), None, 0)

    def _run_stream(
        self, query: Select[Any], tag: str | None, offset: int
    ) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        limit = reader.page_rows
        conn = self._connection()
        self._result = conn.execution_options(stream_results=True, yield_per=limit).execute(query)
        for rows in self._result.partitions(limit):
            if reader.ctx.stopping.is_set():
                return
            batch = reader.to_batch(rows)
            offset += len(rows)
            self._position = {tag: offset} if tag is not None else None
            yield batch if batch.num_rows else None
        self._result.close()
        self._result = None
        conn.rollback()


SqlReader.split_reader_class = SqlSplitReader
