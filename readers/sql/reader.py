"""The ``sqlreader`` plugin: plans key-range splits of a table or query and opens them."""

from __future__ import annotations

import decimal
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, CursorResult, Engine, Row
from sqlalchemy.sql import ColumnElement, Select, sqltypes
from typing_extensions import override

from libs.sql import (
    ColumnInfo,
    EngineHolder,
    TableInfo,
    arrow_type_of,
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
from readers.sql.params import SqlColumn, SqlReaderParams
from readers.sql.source import START, KeyColumn, Source, SourceColumn, infer_batch
from readers.sql.split import SqlSplitReader
from readers.sql.state import SqlPosition, SqlSplit, as_state
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

__all__ = ["SqlReader", "explain"]

log = logging.getLogger(__name__)

_CUSTOM_ALIAS = "syncx_q"


def explain(conn: Connection, prefix: str, query: Select[Any]) -> CursorResult[Any]:
    """Run ``<prefix> <query>`` (an ``EXPLAIN``) with the query's values bound as parameters."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional and compiled.positiontup is not None:
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    return conn.exec_driver_sql(f"{prefix} {compiled}", params)


class SqlReader(EngineHolder, Reader[SqlReaderParams]):
    """Reads one table or query of a SQLAlchemy database in resumable key-range splits.

    Hooks for dialect plugins: :meth:`create_engine`, :meth:`query_timeout`, :meth:`implicit_key`,
    :meth:`column_specs`, :meth:`column_field`, :meth:`parse_value`, :meth:`cut_points`,
    :meth:`conditions`, :meth:`page_query`, :meth:`tie_query`, :meth:`stream_query`,
    :meth:`fetch_rows`, :meth:`to_batch` and :meth:`open_split`; ``position_type`` and
    ``split_type``. ``syncx verify --since`` adds its bound through :meth:`read_since`.
    """

    Parameters = SqlReaderParams
    position_type: ClassVar[type[SqlPosition]] = SqlPosition
    split_type: ClassVar[type[SqlSplit]] = SqlSplit
    plugin_name: ClassVar[str] = "sqlreader"
    param_path: ClassVar[str] = "job.content[0].reader.parameter"

    def __init__(self, params: SqlReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._source: Source | None = None
        self._since: ColumnElement[bool] | None = None

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
            return [Split(mode, self.split_type(mode=mode))]
        nulls = source.key.nullable or bool(source.range and source.range.nullable)
        key = source.key.name
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
            return [Split("all", self.split_type(mode="keyset", key=key, nulls=nulls))]
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
            data = self.split_type(mode="keyset", key=key, range=span, nulls=nulls and index == 0)
            splits.append(Split(f"range-{index}", data))
        return splits

    @override
    def read_since(self, column: str, value: str) -> bool:
        """Add ``column >= value`` to every query, ``value`` bound as a value of the column's
        type (:meth:`parse_value`). Not on a text column (the database compares text by its
        collation, and both sides of a comparison must be filtered alike), nor on SQLite (a
        value there has no fixed type: a DATETIME is text, compared as text)."""
        found = next((c for c in self.source().columns if c.name.lower() == column.lower()), None)
        if found is None or found.field is None or self.engine().dialect.name == "sqlite":
            return False
        kind = found.field.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return False
        self._since = found.expr >= self.parse_value(found.name, kind, value)
        return True

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        """Open a split (its data and position typed, or in their stored form)."""
        data = as_state(self.split_type, split.data)
        assert data is not None
        split = Split(split.id, data)
        return self.open_split(split, as_state(self.position_type, position))

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

    def open_split(self, split: Split, position: SqlPosition | None) -> SplitReader:
        """Open a split whose data and position are typed; its key must not have changed."""
        source = self.source()
        data: SqlSplit = split.data
        if data.mode == "keyset":
            span = data.range or {}
            planned = (data.key, span.get("column"))
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
        return self.new_split_reader(split, position)

    def new_split_reader(self, split: Split, position: SqlPosition | None) -> SplitReader:
        """The reader of an open split (a dialect plugin gives its own)."""
        return SqlSplitReader(self, split, position)

    # -- hooks -------------------------------------------------------------------------------

    def create_engine(self) -> Engine:
        """Connect (trying each candidate URL); errors name the URL without the password."""
        path = f"{self.param_path}.{'url' if self.params.url else 'connection[0].jdbcUrl'}"
        return open_engine(
            self.params.candidate_urls(),
            path=path,
            plugin=self.plugin_name,
            query_timeout=self.query_timeout(),
            secret=self.params.secret(),
            connect=self.dbapi_connect(),
        )

    def query_timeout(self) -> float | None:
        """Seconds a statement of the reader's pool may run (``queryTimeOut``)."""
        return self.params.query_time_out

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

    def parse_value(self, column: str, kind: pa.DataType, text: str) -> Any:
        """``text`` as a value of ``column`` (read as ``kind``), to bind in a query; a
        ``ValueError`` naming the column when it is not one."""
        try:
            return pc.cast(pa.array([text.strip()]), kind)[0].as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            msg = f"'{text}' is not a value of column '{column}' ({kind}): {exc}"
            raise ValueError(msg) from exc

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
        """``where``, the :meth:`read_since` condition and the split's key range."""
        source = self.source()
        conds = self._where_only()
        span = split.data.range
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
        conds.append(key.is_not(None) if after is START else key > after)
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
            ranged = bool(split.data.range)  # only then do range bounds exclude NULLs
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
            batch, bad = infer_batch(rows, [c.name for c in source.columns])
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
        with self.lock:
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
        """``where`` and the :meth:`read_since` condition (no split bounds)."""
        conds: list[ColumnElement[bool]] = []
        if self.params.where is not None:
            conds.append(sql_text(f"({self.params.where})"))  # type: ignore[arg-type]
        if self._since is not None:
            conds.append(self._since)
        return conds

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
