"""The ``mysqlreader`` plugin: ``sqlreader`` with MySQL's drivers, types, splits and ChunJun's
incremental and polling modes (see the package docs)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement
from typing_extensions import override

from libs.mysql.connect import MysqlConfigError, pick_driver, pymysql_connection
from libs.mysql.fetch import Fetcher
from libs.mysql.types import (
    MysqlType,
    bad_values,
    is_exact_family,
    mysql_type,
    mysql_type_of_field,
    parse_text,
)
from libs.sql import (
    ColumnInfo,
    decode_value,
    encode_value,
    ident,
    split_table_name,
    sql_text,
)
from libs.types import arrow_type, conform, java_date_format
from readers.mysql.params import MysqlColumn, MysqlReaderParams
from readers.mysql.split import MysqlSplitReader
from readers.mysql.state import (
    JOB_STATE_VERSION,
    MysqlPosition,
    MysqlSplit,
    Watermark,
    plain,
    sort_key,
)
from readers.sql import KeyColumn, Source, SqlColumn, SqlPosition, SqlReader, as_state, explain
from sync.contract import (
    DirtyRecord,
    Estimate,
    JobContext,
    Position,
    Semantic,
    Split,
    SplitReader,
)
from sync.errors import ConfigIssue, JobFileError

__all__ = ["Extra", "MysqlReader"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extra:
    """Columns selected only for bookkeeping: the key, the increColumn and the tie key."""

    key: str | None
    inc: str | None
    tie: str | None


class MysqlReader(SqlReader):
    """Reads one MySQL table or query in resumable key-range splits (see the module docs)."""

    Parameters = MysqlReaderParams  # type: ignore[assignment]
    position_type: ClassVar[type[MysqlPosition]] = MysqlPosition
    split_type: ClassVar[type[MysqlSplit]] = MysqlSplit
    plugin_name: ClassVar[str] = "mysqlreader"
    params: MysqlReaderParams

    def __init__(
        self, params: MysqlReaderParams, ctx: JobContext, *, layout: pa.Schema | None = None
    ) -> None:
        """``layout``: the schema every batch is cast to (a CDC reader reading a table's
        snapshot wants the types of its binlog rows); values that do not fit are dirty."""
        super().__init__(params, ctx)
        self.layout = layout
        self._mysql_source: Source | None = None
        self._types: dict[str, MysqlType] = {}
        self._constants: dict[int, tuple[str, str]] = {}
        """Output position → (name, value) of constant columns (``value`` of a missing column)."""
        self._extra: Extra | None = None
        self._driver: str | None = None
        self._output: pa.Schema | None = None

    # -- framework ---------------------------------------------------------------------------

    @property
    @override
    def bounded(self) -> bool:
        return not self.params.polling

    @override
    def check(self) -> None:
        self.driver()
        source = self.source()
        try:
            super().check()
        except JobFileError as exc:
            raise _server_found(exc) from exc
        self._check_split_pk(source)
        if self.params.polling and self.ctx.readers > 1:
            log.warning("%s: polling reads with one channel", self.plugin_name)

    @override
    def dbapi_connect(self) -> Callable[..., Any] | None:
        """pymysql's connections with syncx's changes (:func:`pymysql_connection`): among them
        the one TLS context a process, which saves the pool's first connection ~50 ms of CPU
        loading CA certificates it never verifies against."""
        if all(url.get_driver_name() == "pymysql" for url in self.params.candidate_urls()):
            return pymysql_connection()
        return None

    @override
    def schema(self) -> pa.Schema | None:
        self.source()
        return self.layout if self.layout is not None else self._output

    @override
    def effective_semantic(self) -> Semantic:
        """customSql without a column to paginate by is read with one cursor: a restore reads
        it again from its start (decided from the parameters: ``syncx validate`` asks too)."""
        params = self.params
        restore = (self.ctx.restore.restore_column_name or "").strip()
        keyed = params.split_pk or restore or params.order_by_column or params.polling
        if params.custom_sql is not None and not keyed:
            return "at-least-once"
        return "exactly-once"

    @override
    def plan(self, parallelism: int) -> list[Split]:
        source = self.source()
        if self.params.polling:
            return [Split("poll", MysqlSplit(mode="poll", start=self._poll_start()))]
        if self.params.split_strategy == "mod" and source.range is not None and parallelism > 1:
            assert source.key is not None
            nulls = source.key.nullable or source.range.nullable
            splits = [
                Split(
                    f"mod-{i}",
                    MysqlSplit(
                        mode="keyset",
                        key=source.key.name,
                        mod={"column": source.range.name, "n": parallelism, "i": i},
                        nulls=nulls and i == 0,
                    ),
                )
                for i in range(parallelism)
            ]
        else:
            splits = super().plan(parallelism)
        bounds = self._incremental_bounds()
        if bounds is None:
            return splits
        return [Split(s.id, dataclasses.replace(s.data, **bounds)) for s in splits]

    @override
    def new_split_reader(self, split: Split, position: SqlPosition | None) -> SplitReader:
        return MysqlSplitReader(self, split, position)

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate | None:
        """Rows from the server's estimates, no scan: ``EXPLAIN`` of each split's conditions
        (index dives for key ranges and incremental bounds, the table's statistics otherwise);
        ``mod`` splits share one estimate of their whole range. None for customSql."""
        source = self.source()
        if source.table is None:
            return None
        total = 0
        seen: set[str] = set()
        with self.engine().connect() as conn:
            for split in splits:
                data: MysqlSplit = split.data
                whole = Split(split.id, dataclasses.replace(data, mod=None))
                query = sa.select(sa.literal(1)).select_from(source.from_)
                query = query.where(*self.conditions(whole))
                compiled = query.compile(dialect=conn.dialect)
                key = f"{compiled} {sorted(compiled.params.items(), key=str)}"
                if key in seen:
                    continue
                seen.add(key)
                result = explain(conn, "EXPLAIN", query)
                names = [str(k).lower() for k in result.keys()]  # noqa: SIM118 - a Result
                row = result.first()
                if row is not None and "rows" in names:
                    total += int(row[names.index("rows")] or 0)
        return Estimate(rows=total)

    @override
    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        name = self.incremental_column()
        if name is None or self.params.polling:
            return None
        merged = self._stored_watermark()
        for raw in positions.values():
            position = as_state(MysqlPosition, raw)
            if position is not None and position.inc:
                merged.merge(Watermark.from_json(position.inc))
        if not merged.seen:
            return self.ctx.job_state or None
        return {"version": JOB_STATE_VERSION, "increColumn": name, "watermark": merged.to_json()}

    # -- hooks -------------------------------------------------------------------------------

    @override
    def query_timeout(self) -> float | None:
        """``readTimeout`` (or ``queryTimeOut``): the pool for reflection, planning and
        estimates stalls no longer than the reading connections."""
        return self.params.effective_read_timeout()

    @override
    def parse_value(self, column: str, kind: pa.DataType, text: str) -> Any:
        """``text`` as MySQL writes a value of ``column``'s type (UTC-naive datetimes)."""
        mt = self._types.get(column) or self._type_of(column)
        try:
            parsed = _parse_location_array(pc.cast(pa.array([text.strip()]), pa.string()), mt)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            msg = f"'{text}' is not a value of column '{column}' ({mt.arrow}): {exc}"
            raise ValueError(msg) from exc
        return plain(parsed[0].as_py())

    @override
    def column_specs(self) -> list[SqlColumn] | None:
        specs = self.params.column_specs()
        if specs is None or not self._constants:
            return specs
        return [s for i, s in enumerate(specs) if i not in self._constants]

    @override
    def column_field(self, column: ColumnInfo) -> pa.Field:
        mt = mysql_type(column.type)
        self._types[column.name] = mt
        return pa.field(column.name, mt.arrow, nullable=column.nullable)

    @override
    def cut_points(self, lo: int, hi: int, count: int) -> list[int]:
        return self._quantile_cuts(lo, hi, count) or super().cut_points(lo, hi, count)

    @override
    def conditions(self, split: Split) -> list[ColumnElement[bool]]:
        conds = super().conditions(split)
        source = self.source()
        data: MysqlSplit = split.data
        mod = data.mod
        if mod and source.range is not None:
            conds.append(sa.func.mod(source.range.expr, int(mod["n"])) == int(mod["i"]))
        if data.start is not None and data.mode != "poll":
            conds.extend(self.after_watermark(Watermark.from_json(data.start)))
        upper = data.stop
        if upper is not None:
            conds.append(self._inc_expr() <= decode_value(upper))
        return conds

    # -- shared state ------------------------------------------------------------------------

    @override
    def source(self) -> Source:
        with self.lock:
            if self._mysql_source is None:
                self._mysql_source = self._build_source()
            return self._mysql_source

    def driver(self) -> str:
        """The driver this reader uses (``driver``; ``auto`` picks the fastest installed)."""
        if self._driver is None:
            self._driver = pick_driver(self.params.driver, self.plugin_name)
        return self._driver

    def new_fetcher(self, driver: str | None = None) -> Fetcher:
        """A fetcher for one split reader (its own connection)."""
        return Fetcher(
            self.engine().url,
            driver or self.driver(),  # type: ignore[arg-type]
            read_timeout=self.params.effective_read_timeout(),
        )

    @override
    def incremental_column(self) -> str | None:
        """The increColumn's name in the source (resolved case-insensitively)."""
        name = self.params.incre_name()
        if name is None:
            return None
        self.source()
        assert self._extra is not None
        return self._extra.inc

    def extra(self) -> Extra:
        """Bookkeeping columns (key, increColumn, tie key)."""
        self.source()
        assert self._extra is not None
        return self._extra

    def selected(self, driver: str) -> list[tuple[str, MysqlType, ColumnElement[Any]]]:
        """What a query selects, in order: output columns, then the key, increColumn and tie
        key when they are not output columns; each with its type and driver-specific
        expression."""
        source = self.source()
        extra = self.extra()
        names = [c.name for c in source.columns]
        exprs = {c.name: c.expr for c in source.columns}
        chosen = list(names)
        for name in (extra.key, extra.inc, extra.tie):
            if name is not None and name not in chosen:
                chosen.append(name)
                exprs[name] = self._column_expr(name)
        out: list[tuple[str, MysqlType, ColumnElement[Any]]] = []
        for name in chosen:
            mt = self._types[name]
            expr: ColumnElement[Any] = exprs[name]
            if driver == "connectorx" and mt.arrow_select == "char":
                expr = sa.cast(expr, sa.CHAR)
            elif driver != "connectorx" and mt.text_select == "double":
                expr = expr.op("+")(sa.literal_column("0e0"))
            out.append((name, mt, expr.label(f"c{len(out)}")))
        return out

    def after_watermark(self, mark: Watermark) -> list[ColumnElement[bool]]:
        """The condition "not read yet" of a watermark (see the module docs)."""
        if not mark.seen:
            return []
        inc = self._inc_expr()
        value = mark.value
        if not mark.inclusive:
            return [inc > value]
        tie_name = self.extra().tie
        if tie_name is None:
            return [inc >= value]
        tie = self._column_expr(tie_name)
        if mark.key_max is not None:
            at = sa.and_(inc == value, tie > mark.key_max)
        elif mark.keys:
            at = sa.and_(inc == value, tie.not_in(sorted(mark.keys, key=sort_key)))
        else:
            at = inc == value
        return [sa.or_(inc > value, at)]

    def output_batch(self, batch: pa.RecordBatch, errors: dict[int, str]) -> pa.RecordBatch | None:
        """The rows a batch of selected columns yields: dirty rows reported and dropped, types
        as declared, constant columns added."""
        source = self.source()
        width = len(source.columns)
        names = [c.name for c in source.columns]
        columns = [batch.column(i) for i in range(width)]
        if errors:
            for item in bad_values(errors, names):
                row = {n: columns[i][item.row].as_py() for i, n in enumerate(names)}
                self.ctx.report_dirty(DirtyRecord(row, item.error, "conversion", item.field))
            keep = pa.array([i not in errors for i in range(batch.num_rows)])
            columns = [c.filter(keep) for c in columns]
        specs = self.column_specs() or []
        out = pa.RecordBatch.from_arrays(
            columns, schema=pa.schema([c.field for c in source.columns])
        )  # type: ignore[misc]
        out = self._apply_specs(out, specs)
        if source.declared is not None and not out.schema.equals(source.declared):
            out, dirty = conform(out, source.declared)
            for record in dirty:
                self.ctx.report_dirty(record)
        if self._constants:
            arrays = list(out.columns)
            fields = list(out.schema)
            for position in sorted(self._constants):
                name, _value = self._constants[position]
                target = self._output.field(position) if self._output is not None else None
                typ = target.type if target is not None else pa.string()
                arrays.insert(position, _constant(_value, typ, out.num_rows))
                fields.insert(position, pa.field(name, typ))
            out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if self.layout is not None:
            out = self._to_layout(out, self.layout)
        return out if out.num_rows else None

    def _to_layout(self, batch: pa.RecordBatch, layout: pa.Schema) -> pa.RecordBatch:
        """``batch`` with the names and types of ``layout`` (dirty rows reported, dropped)."""
        if batch.schema.equals(layout, check_metadata=False):
            return batch
        renamed = batch.rename_columns(layout.names)
        fitted, dirty = conform(renamed, pa.schema([f.with_nullable(True) for f in layout]))
        for record in dirty:
            self.ctx.report_dirty(record)
        return pa.RecordBatch.from_arrays(list(fitted.columns), schema=layout)

    # -- implementation ----------------------------------------------------------------------

    def _build_source(self) -> Source:
        params = self.params
        with self.engine().connect() as conn:
            self._find_constants(conn)
        try:
            base = super().source()
        except MysqlConfigError:
            raise
        except JobFileError as exc:
            raise _server_found(exc) from exc
        if params.custom_sql is not None:
            base = self._typed_custom(base)
        source = base
        key = source.key
        if key is None and params.order_by_column is not None:
            key = self._key_column(params.order_by_column, "orderByColumn")
            source = dataclasses.replace(source, key=key)
        if key is not None and key.name not in self._types:
            self._types[key.name] = self._type_of(key.name)
        inc_name = params.incre_name()
        inc = None
        if inc_name is not None:
            inc = self._resolve(inc_name, "increColumn")
            self._types.setdefault(inc, self._type_of(inc))
        tie = None
        if inc is not None:
            if source.table is not None and len(source.table.primary_key) == 1:
                tie = source.table.primary_key[0]
            elif key is not None and key.unique:
                tie = key.name
            if tie is not None:
                self._types.setdefault(tie, self._type_of(tie))
        self._extra = Extra(key.name if key is not None else None, inc, tie)
        declared = self._declared_types(source)
        self._output = self._output_schema(declared)
        return dataclasses.replace(source, declared=declared)

    def _find_constants(self, conn: Connection) -> None:
        """``column[{name, value}]`` naming no column of the table: a constant column."""
        specs = self.params.column_specs()
        if not specs or not any(isinstance(s, MysqlColumn) and s.value for s in specs):
            return
        if self.params.custom_sql is not None:
            sql = self.params.custom_sql.strip().rstrip(";")
            result = conn.execute(sql_text(f"SELECT * FROM ({sql}) AS syncx_q WHERE 1 = 0"))
            present = {str(k).lower() for k in result.keys()}  # noqa: SIM118 - a Result
        else:
            table = self.params.table_name()
            assert table is not None
            schema, name = split_table_name(table, self.params.schema_name())
            inspector = sa.inspect(conn)
            try:
                present = {
                    str(c["name"]).replace("``", "`").lower()
                    for c in inspector.get_columns(name, schema=schema)
                }
            except sa_exc.NoSuchTableError:
                return  # reported by the reflection that follows
        for index, spec in enumerate(specs):
            if isinstance(spec, MysqlColumn) and spec.value and spec.name.lower() not in present:
                self._constants[index] = (spec.name, spec.value)

    def _typed_custom(self, base: Source) -> Source:
        """customSql's columns with the exact types of its result (protocol metadata)."""
        assert self.params.custom_sql is not None
        sql = self.params.custom_sql.strip().rstrip(";")
        raw = self.engine().raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f"SELECT * FROM ({sql}) AS syncx_q WHERE 1 = 0")
            fields = cursor._result.fields  # pymysql's protocol metadata
            cursor.close()
        finally:
            raw.close()
        by_name: dict[str, MysqlType] = {}
        for f in fields:
            by_name[f.name] = mysql_type_of_field(
                f.type_code, f.length, f.scale, f.flags, f.charsetnr
            )
        self._types.update(by_name)
        columns = [
            dataclasses.replace(c, field=pa.field(c.name, by_name[c.name].arrow))
            for c in base.columns
        ]
        return dataclasses.replace(base, columns=columns)

    def _type_of(self, name: str) -> MysqlType:
        source = self._mysql_source or super().source()
        if source.table is not None:
            found = source.table.column(name)
            if found is not None:
                return mysql_type(found.type)
        if name in self._types:
            return self._types[name]
        return MysqlType(pa.string())

    def _resolve(self, name: str, param: str) -> str:
        """A column of the table (or query) called ``name``, else a config error."""
        source = super().source()
        if source.table is not None:
            found = source.table.column(name)
            if found is not None:
                return found.name
            msg = source.table.missing(name)
        else:
            for known in self._types:
                if known.lower() == name.lower():
                    return known
            msg = f"column '{name}' is not a result column of customSql"
        raise MysqlConfigError([ConfigIssue(f"{self.param_path}.{param}", msg)])

    def _column_expr(self, name: str) -> ColumnElement[Any]:
        source = super().source()
        from_ = source.from_
        columns = from_.c if hasattr(from_, "c") else None
        if columns is not None and name in columns:
            return columns[name]
        return sa.column(ident(name), type_=sa.String())  # type: ignore[arg-type]

    def _inc_expr(self) -> ColumnElement[Any]:
        name = self.extra().inc
        assert name is not None
        return self._column_expr(name)

    def _key_column(self, name: str, param: str) -> KeyColumn:
        resolved = self._resolve(name, param)
        source = super().source()
        unique = bool(source.table is not None and (resolved,) in source.table.unique_keys)
        info = source.table.column(resolved) if source.table is not None else None
        return KeyColumn(
            resolved,
            self._column_expr(resolved),
            unique=unique,
            nullable=True if info is None else info.nullable,
            numeric=None,
        )

    def _declared_types(self, source: Source) -> pa.Schema | None:
        """The batch schema: a ``column[].type`` of the column's own family keeps the exact
        type, another family converts (see the module docs)."""
        specs = self.column_specs()
        fields: list[pa.Field] = []
        for index, column in enumerate(source.columns):
            own = column.field
            if own is None:
                return None
            spec = specs[index] if specs else None
            declared = None
            if spec is not None and spec.type:
                declared = arrow_type(spec.type)
            if isinstance(spec, MysqlColumn) and spec.format and pa.types.is_string(own.type):
                declared = declared if declared is not None else pa.timestamp("us")
                fields.append(pa.field(own.name, declared))
                continue
            if declared is None or is_exact_family(declared, own.type):
                fields.append(own)
            else:
                fields.append(pa.field(own.name, declared, nullable=own.nullable))
        return pa.schema(fields)

    def _output_schema(self, declared: pa.Schema | None) -> pa.Schema | None:
        if declared is None:
            return None
        fields = list(declared)
        for position in sorted(self._constants):
            name, _ = self._constants[position]
            spec = (self.params.column_specs() or [])[position]
            typ = arrow_type(spec.type) if spec.type else pa.string()
            fields.insert(position, pa.field(name, typ))
        return pa.schema(fields)

    def _apply_specs(self, batch: pa.RecordBatch, specs: Sequence[SqlColumn]) -> pa.RecordBatch:
        """``value`` as the value of NULLs, ``format`` to parse date strings."""
        if not specs:
            return batch
        arrays = list(batch.columns)
        fields = list(batch.schema)
        changed = False
        for index, spec in enumerate(specs):
            if not isinstance(spec, MysqlColumn) or index >= len(arrays):
                continue
            column = arrays[index]
            if spec.value is not None and column.null_count:
                arrays[index] = pc.fill_null(column, _constant(spec.value, column.type, 1)[0])
                changed = True
            if spec.format and pa.types.is_string(column.type):
                parsed = pc.strptime(
                    arrays[index],
                    format=java_date_format(spec.format),
                    unit="us",
                    error_is_null=True,
                )
                arrays[index] = parsed
                fields[index] = pa.field(fields[index].name, parsed.type)
                changed = True
        if not changed:
            return batch
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def _incremental_bounds(self) -> dict[str, Any] | None:
        """``start`` (watermark or startLocation) and ``stop`` (useMaxFunc) of this run."""
        if self.incremental_column() is None:
            return None
        bounds: dict[str, Any] = {}
        mark = self._stored_watermark()
        if not mark.seen and self.params.start_location is not None:
            mark = Watermark(
                value=self._parse_location(self.params.start_location),
                inclusive=self.params.use_max_func,
                seen=True,
            )
        if mark.seen:
            bounds["start"] = mark.to_json()
        if self.params.use_max_func:
            top = self._current_max()
            if top is not None:
                bounds["stop"] = encode_value(top)
        return bounds

    def _poll_start(self) -> dict[str, Any] | None:
        """Where polling starts: the stored watermark, startLocation, or the current MAX."""
        mark = self._stored_watermark()
        if mark.seen:
            return mark.to_json()
        if self.params.start_location is not None:
            start = Watermark(
                value=self._parse_location(self.params.start_location),
                inclusive=self.params.use_max_func,
                seen=True,
            )
            return start.to_json()
        top = self._current_max()
        if top is None:
            return None
        return Watermark(value=top, inclusive=False, seen=True).to_json()

    def _stored_watermark(self) -> Watermark:
        state = self.ctx.job_state or {}
        name = self.params.incre_name()
        if not state.get("watermark") or name is None:
            return Watermark()
        if str(state.get("increColumn", "")).lower() != self.incremental_column().lower():  # type: ignore[union-attr]
            log.warning(
                "%s: the stored watermark is of column %s, not increColumn %s: ignored",
                self.plugin_name,
                state.get("increColumn"),
                name,
            )
            return Watermark()
        return Watermark.from_json(state["watermark"])

    def _current_max(self) -> Any:
        source = self.source()
        query = sa.select(sa.func.max(self._inc_expr())).select_from(source.from_)
        if self.params.where is not None:
            query = query.where(sql_text(f"({self.params.where})"))
        with self.engine().connect() as conn:
            value = conn.execute(query).scalar()
        return plain(value)

    def _parse_location(self, text: str) -> Any:
        """``startLocation`` as a value of the increColumn's type."""
        name = self.extra().inc
        assert name is not None
        try:
            return self.parse_value(name, self._types[name].arrow, text)
        except ValueError as exc:
            path = f"{self.param_path}.startLocation"
            raise MysqlConfigError([ConfigIssue(path, f"increColumn: {exc}")]) from exc

    def _check_split_pk(self, source: Source) -> None:
        """``splitPk`` must be indexed: otherwise every channel scans the whole table."""
        if source.range is None or source.table is None:
            return
        name = source.range.name
        with self.engine().connect() as conn:
            inspector = sa.inspect(conn)
            indexes = inspector.get_indexes(source.table.name, schema=source.table.schema)
        firsts = {
            str(idx["column_names"][0]).replace("``", "`")
            for idx in indexes
            if idx.get("column_names")
        }
        if source.table.primary_key:
            firsts.add(source.table.primary_key[0])
        if name not in firsts:
            msg = (
                f"splitPk '{name}' is not indexed in table '{source.table.qualified}' (no index "
                "starts with it): every channel would scan the whole table; index it or use "
                "the primary key"
            )
            raise MysqlConfigError([ConfigIssue(f"{self.param_path}.splitPk", msg)])

    def _quantile_cuts(self, lo: int, hi: int, count: int) -> list[int] | None:
        """Cut points at quantiles of the server's row estimates when the key is skewed."""
        source = self.source()
        assert source.range is not None
        if source.table is None:
            return None
        column = source.range.expr

        def estimate(conn: Connection, a: int, b: int) -> float:
            query = sa.select(sa.literal(1)).select_from(source.from_)
            query = query.where(column >= a, column < b)
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            result = conn.exec_driver_sql("EXPLAIN " + sql)
            names = [str(k).lower() for k in result.keys()]  # noqa: SIM118 - a Result
            row = result.first()
            if row is None or "rows" not in names:
                return 0.0
            value = row[names.index("rows")]
            return float(value or 0)

        span = hi - lo + 1
        try:
            with self.engine().connect() as conn:
                equal = [lo + (span * i) // count for i in range(count + 1)]
                estimates = [estimate(conn, equal[i], equal[i + 1]) for i in range(count)]
                total = sum(estimates)
                if total <= 0 or max(estimates) <= 1.5 * total / count:
                    return None  # not skewed: equal widths
                buckets = self._buckets(conn, estimate, lo, hi + 1, 32 * count, total / count)
        except sa_exc.DBAPIError as exc:
            log.debug("row estimates unavailable (%s): equal-width splits", exc)
            return None
        total = sum(weight for _, _, weight in buckets)
        if total <= 0:
            return None
        cuts: list[int] = []
        running = 0.0
        target = 1
        for start, _end, weight in buckets:
            while target < count and running >= total * target / count:
                if start > lo and (not cuts or start > cuts[-1]):
                    cuts.append(start)
                target += 1
            running += weight
        log.info(
            "%s: splitPk '%s' is skewed: split by estimated row quantiles at %s",
            self.plugin_name,
            source.range.name,
            cuts,
        )
        return cuts or None

    def _buckets(
        self,
        conn: Connection,
        estimate: Callable[[Connection, int, int], float],
        start: int,
        end: int,
        pieces: int,
        dense: float,
        depth: int = 0,
    ) -> list[tuple[int, int, float]]:
        """``[start, end)`` in up to ``pieces`` buckets with their estimated rows; a bucket
        holding more than ``dense`` rows is cut finer (recursively, down to single keys)."""
        width = max(1, math.ceil((end - start) / pieces))
        out: list[tuple[int, int, float]] = []
        a = start
        while a < end:
            b = min(end, a + width)
            weight = estimate(conn, a, b)
            if weight > dense and b - a > 1 and depth < 12:
                out.extend(self._buckets(conn, estimate, a, b, 32, dense, depth + 1))
            else:
                out.append((a, b, weight))
            a = b
        return out


def _parse_location_array(text: pa.Array, mt: MysqlType) -> pa.Array:
    if mt.wire == "bit":
        return pa.array([int(text[0].as_py())], mt.arrow)
    return parse_text(text, mt.arrow)


def _constant(value: str, typ: pa.DataType, rows: int) -> pa.Array:
    text = pa.array([value] * rows, pa.string())
    if pa.types.is_string(typ):
        return text
    return pc.cast(text, typ)


def _server_found(exc: JobFileError) -> MysqlConfigError:
    """A job-file error found by connecting: same message, exit code 1."""
    if isinstance(exc, MysqlConfigError):
        return exc
    return MysqlConfigError(exc.issues, exc.source)


# -- the split reader ---------------------------------------------------------------------------
