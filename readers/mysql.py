"""``mysqlreader`` / ``mysqlsource``: a MySQL or MariaDB table (or query), ChunJun's parameters.

Built on :class:`readers.sql.SqlReader` (reflection, splits, keyset queries, ``customSql``,
``where``, restore columns); this module adds MySQL's drivers, types and ChunJun's incremental
and polling modes. A ChunJun ``mysqlreader`` job runs unchanged: ``connection[{jdbcUrl: [...],
table: [...]}]`` (or ``host``/``port``/``database``), ``username``, ``password``, ``column``
(names, ``*``, or ``{name, type, format, value}``), ``where``, ``customSql``, ``splitPk``,
``splitStrategy``, ``fetchSize``, ``queryTimeOut``, ``increColumn``, ``startLocation``,
``useMaxFunc``, ``polling``, ``pollingInterval``, ``orderByColumn``.

**Splits.** With ``splitPk`` (an indexed integer column) and more than one reader channel the
key range is cut into one range per channel: equal widths from ``MIN``/``MAX``, unless the
server's row estimates for those ranges (``EXPLAIN``, index dives, no scan) show a skewed key;
then the cut points are quantiles of the estimated rows of finer buckets. ``splitStrategy: mod``
is ChunJun's other strategy: channel *i* of *n* reads ``MOD(splitPk, n) = i``. Every split is read
by keyset pagination: ``... WHERE <split> AND key > :last ORDER BY key LIMIT pageSize``, each a
short statement streamed in batches of ``fetchSize`` rows, so memory stays flat, no channel
scans the whole table and no cursor stays open across it. A split's position is the key of the
last row emitted; a restore continues after it.

**Drivers** (``driver: auto``, the default, takes the first installed): ``connectorx`` (Arrow
from Rust, no per-value Python work: the fast path), ``mysqlclient`` (C, raw bytes parsed
column-wise), ``pymysql`` (always there). Every driver gives the same Arrow types and values
(see the README's "MySQL type mapping"); a page connectorx cannot read (a zero date) is read
again with a text driver.

**Types.** ``column[].type`` of the same family as the column's own type (``decimal`` for
``DECIMAL(12,2)``, ``int`` for ``INT UNSIGNED``, ``timestamp`` for ``DATETIME(6)``) keeps the
column's exact type; another family converts (``decimal`` → ``string``), and a value that does
not convert is a dirty record. ``value`` is a constant column when the table has no column of that
name, else the value of NULLs; ``format`` (Java date pattern) parses a string column as a date.

**Incremental** (``increColumn``: a name or an index into ``column``). The first run reads rows
after ``startLocation`` (``>`` — ``>=`` with ``useMaxFunc``, as ChunJun), or every row. When
the run succeeds, its *watermark* goes into the job's state: the largest ``increColumn`` value
read and the keys (primary key, else a unique key column) of the rows read with that value. The
next run reads ``inc > W OR (inc = W AND key NOT IN (those keys))``: rows inserted later with
the boundary value are read, none twice. Beyond 1,000 keys at the boundary value the state
keeps the largest key instead (``inc = W AND key > K``: exact when keys grow within a value).
Without a key the boundary is exclusive (``inc > W``, ChunJun's behavior). A stored watermark
wins over ``startLocation``. ``useMaxFunc: true`` takes ``MAX(increColumn)`` when the job
starts as an inclusive upper bound, so rows written during the run wait for the next run (set
it for cron jobs on tables being written; without it a row inserted into an already read key
range during the run is only read if its value is above the final watermark). ChunJun leaves
the rows equal to that maximum for the next run; with the boundary keys syncx reads them now
and still never twice.

**Polling** (``polling: true``): one unbounded split reading ``ORDER BY increColumn, key``
after its cursor; when a query returns less than a page it waits ``pollingInterval`` ms
(yielding idle ticks, so checkpoints go on) and asks again. The cursor is checkpointed; a fresh
start begins at the stored watermark, else ``startLocation``, else the current ``MAX`` (only
new rows, as ChunJun).

**Lost connections** are retried with backoff (0.5 s … 4 s), then the job fails as retriable and
``setting.restart`` restarts it from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import AliasChoices, Field, field_validator, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select
from typing_extensions import override

from libs.mysql.connect import (
    RETRY_DELAYS,
    MysqlConfigError,
    MysqlEndpoint,
    connect,
    errno,
    error_text,
    is_connection_lost,
    pick_driver,
    query_failure,
)
from libs.mysql.fetch import DriverCannotRead, Fetcher, limit_malloc_arenas
from libs.mysql.types import (
    MysqlType,
    bad_values,
    is_exact_family,
    mysql_type,
    mysql_type_of_field,
    parse_text,
    python_value,
)
from libs.sql import ColumnInfo, decode_value, encode_value, ident, split_table_name, sql_text
from libs.types import arrow_type, conform, java_date_format
from readers.sql import (
    _START,
    KeyColumn,
    Source,
    SqlColumn,
    SqlReader,
    SqlReaderParams,
    SqlSplitReader,
    explain,
)
from sync.contract import (
    DirtyRecord,
    Estimate,
    JobContext,
    Position,
    Semantic,
    Split,
    SplitReader,
)
from sync.errors import ConfigIssue, JobFileError, RetriableError

__all__ = ["MysqlColumn", "MysqlReader", "MysqlReaderParams", "MysqlSplitReader", "Watermark"]

log = logging.getLogger(__name__)

BOUNDARY_KEYS = 1000
"""Keys of rows at the watermark value kept in the state; beyond, the largest key only."""
JOB_STATE_VERSION = 1


class MysqlColumn(SqlColumn):
    """A column to read: ``name``, and ChunJun's optional ``type``, ``format``, ``value``."""

    format: str | None = Field(
        default=None, description="Java date pattern (yyyy-MM-dd HH:mm:ss) of a string column."
    )
    value: str | None = Field(
        default=None,
        description="A constant column when the table has no such column, else the value of NULLs.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            arrow_type(value)
        return value or None


class MysqlReaderParams(MysqlEndpoint, SqlReaderParams):
    """``parameter`` of ``mysqlreader`` (ChunJun's names; see the module docs)."""

    column: list[MysqlColumn | str] | str | None = Field(  # type: ignore[assignment]
        default=None,
        description="Columns: names, `*`, or {name, type, format, value}; absent = all.",
    )
    split_strategy: Literal["range", "mod"] = Field(
        default="range", description="range (key ranges per channel) or mod (MOD(splitPk, n))."
    )
    incre_column: str | int | None = Field(
        default=None, description="Incremental column: a name, or an index into `column`."
    )
    start_location: str | None = Field(
        default=None, description="First run: read rows after this increColumn value."
    )
    use_max_func: bool = Field(
        default=False,
        description="Take MAX(increColumn) at the start as the upper bound of this run.",
    )
    polling: bool = Field(default=False, description="Keep running, reading new rows as they come.")
    polling_interval: Annotated[int, Field(gt=0)] = Field(
        default=5000, description="Milliseconds between polls."
    )
    order_by_column: str | None = Field(
        default=None, description="Column to order and paginate by when there is no key."
    )
    driver: Literal["auto", "connectorx", "mysqlclient", "pymysql"] = Field(
        default="auto",
        description="auto (connectorx, else mysqlclient, else pymysql) or one of them.",
    )
    page_size: Annotated[int, Field(gt=0)] = Field(
        default=50_000,
        validation_alias=AliasChoices("pageSize", "page_size"),
        description="Rows per keyset query (each streamed in batches of fetchSize).",
    )

    @field_validator("incre_column", "start_location", "order_by_column", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("split_strategy", "driver", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _incremental_needs_column(self) -> MysqlReaderParams:
        if self.incre_column is None:
            for name, given in (
                ("polling", self.polling),
                ("startLocation", self.start_location is not None),
                ("useMaxFunc", self.use_max_func),
            ):
                if given:
                    msg = f"`{name}` needs `increColumn` (the column that grows)"
                    raise ValueError(msg)
        index = self.incre_index()
        if index is not None:
            specs = self.column_specs()
            if specs is None:
                msg = "`increColumn` as a number indexes `column`, which lists no columns"
                raise ValueError(msg)
            if not 0 <= index < len(specs):
                msg = f"`increColumn` {index} is outside `column` ({len(specs)} columns)"
                raise ValueError(msg)
        if self.custom_sql is not None and self.column_specs() is None:
            return self  # ChunJun wants the columns named; syncx reads the query's own
        return self

    def incre_index(self) -> int | None:
        """``increColumn`` as an index into ``column``, when it is a number."""
        raw = self.incre_column
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().isdigit():
            return int(raw.strip())
        return None

    def incre_name(self) -> str | None:
        """``increColumn`` as a column name."""
        index = self.incre_index()
        if index is not None:
            specs = self.column_specs()
            assert specs is not None
            return specs[index].name
        return None if self.incre_column is None else str(self.incre_column).strip()


# -- incremental state --------------------------------------------------------------------------


@dataclass
class Watermark:
    """How far an incremental read got: rows with ``inc < value`` were read, and rows with
    ``inc == value`` whose key is in ``keys`` (or ``<= key_max`` after more than
    :data:`BOUNDARY_KEYS` of them). ``inclusive`` False: every row with ``inc == value`` was
    read (no key to tell them apart)."""

    value: Any = None
    keys: set[Any] = field(default_factory=set)
    key_max: Any = None
    inclusive: bool = True
    seen: bool = False
    """Whether ``value`` is set (a NULL-free max was observed or given)."""

    def update(self, inc: pa.Array, tie: pa.Array | None) -> None:
        """Take in one emitted batch's ``increColumn`` values and keys."""
        if len(inc) == 0 or inc.null_count == len(inc):
            return
        top = pc.max(inc)
        value = _plain(top.as_py())
        if not self.seen or value > self.value:
            self.value, self.keys, self.key_max, self.seen = value, set(), None, True
        if value != self.value:
            return
        if tie is None:
            self.inclusive = False
            return
        at = pc.equal(inc, top)
        ties = [_plain(v) for v in tie.filter(pc.fill_null(at, False)).to_pylist()]
        self._add_keys([v for v in ties if v is not None])

    def _add_keys(self, keys: Sequence[Any]) -> None:
        if self.key_max is not None:
            self.key_max = max([self.key_max, *keys])
            return
        self.keys.update(keys)
        if len(self.keys) > BOUNDARY_KEYS:
            self.key_max = max(self.keys)
            self.keys = set()

    def merge(self, other: Watermark) -> None:
        """Combine with another split's (or the previous run's) watermark."""
        if not other.seen:
            return
        if not self.seen or other.value > self.value:
            self.value, self.keys, self.key_max = other.value, set(other.keys), other.key_max
            self.inclusive, self.seen = other.inclusive, True
            return
        if other.value == self.value:
            self.inclusive = self.inclusive and other.inclusive
            if other.key_max is not None:
                self._add_keys([other.key_max])
                if self.key_max is None:
                    self.key_max = max([other.key_max, *self.keys])
                    self.keys = set()
            self._add_keys(sorted(other.keys, key=repr))

    def to_json(self) -> dict[str, Any]:
        """The form kept in positions and in the job's state."""
        out: dict[str, Any] = {"value": encode_value(self.value), "inclusive": self.inclusive}
        if self.key_max is not None:
            out["keyMax"] = encode_value(self.key_max)
        else:
            out["keys"] = [encode_value(k) for k in sorted(self.keys, key=_sort_key)]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Watermark:
        """Rebuild a watermark stored by :meth:`to_json` (``None``: nothing read yet)."""
        if not raw:
            return cls()
        key_max = raw.get("keyMax")
        return cls(
            value=decode_value(raw["value"]),
            keys={decode_value(k) for k in raw.get("keys") or []},
            key_max=None if key_max is None else decode_value(key_max),
            inclusive=bool(raw.get("inclusive", True)),
            seen=True,
        )


def _plain(value: Any) -> Any:
    """Comparable, JSON-encodable Python values (UTC-naive datetimes)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


# -- the reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Extra:
    """Columns selected only for bookkeeping: the key, the increColumn and the tie key."""

    key: str | None
    inc: str | None
    tie: str | None


class MysqlReader(SqlReader):
    """Reads one MySQL table or query in resumable key-range splits (see the module docs)."""

    Parameters = MysqlReaderParams  # type: ignore[assignment]
    plugin_name: ClassVar[str] = "mysqlreader"
    split_reader_class: ClassVar[type[SqlSplitReader]]
    params: MysqlReaderParams

    def __init__(self, params: MysqlReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._mysql_source: Source | None = None
        self._types: dict[str, MysqlType] = {}
        self._constants: dict[int, tuple[str, str]] = {}
        """Output position → (name, value) of constant columns (``value`` of a missing column)."""
        self._extra: _Extra | None = None
        self._driver: str | None = None
        self._output: pa.Schema | None = None
        limit_malloc_arenas()  # before the runtime starts its threads

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
    def schema(self) -> pa.Schema | None:
        self.source()
        return self._output

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
            return [Split("poll", {"mode": "poll", "from": self._poll_start()})]
        if self.params.split_strategy == "mod" and source.range is not None and parallelism > 1:
            assert source.key is not None
            nulls = source.key.nullable or source.range.nullable
            splits = [
                Split(
                    f"mod-{i}",
                    {
                        "mode": "keyset",
                        "key": source.key.name,
                        "range": None,
                        "mod": {"column": source.range.name, "n": parallelism, "i": i},
                        "nulls": nulls and i == 0,
                    },
                )
                for i in range(parallelism)
            ]
        else:
            splits = super().plan(parallelism)
        bounds = self._incremental_bounds()
        if bounds is None:
            return splits
        return [Split(s.id, {**s.data, **bounds}) for s in splits]

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        if split.data.get("mode") == "poll":
            return self.split_reader_class(self, split, position)
        return super().open(split, position)

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
                whole = Split(split.id, {k: v for k, v in split.data.items() if k != "mod"})
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
        name = self.incre_column()
        if name is None or self.params.polling:
            return None
        merged = self._stored_watermark()
        for position in positions.values():
            if isinstance(position, dict) and position.get("inc"):
                merged.merge(Watermark.from_json(position["inc"]))
        if not merged.seen:
            return self.ctx.job_state or None
        return {"version": JOB_STATE_VERSION, "increColumn": name, "watermark": merged.to_json()}

    # -- hooks -------------------------------------------------------------------------------

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
        mod = split.data.get("mod")
        if mod and source.range is not None:
            conds.append(sa.func.mod(source.range.expr, int(mod["n"])) == int(mod["i"]))
        if split.data.get("from") is not None and split.data.get("mode") != "poll":
            conds.extend(self.after_watermark(Watermark.from_json(split.data["from"])))
        upper = split.data.get("to")
        if upper is not None:
            conds.append(self._inc_expr() <= decode_value(upper))
        return conds

    # -- shared state ------------------------------------------------------------------------

    @override
    def source(self) -> Source:
        with self._lock:
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
            read_timeout=self.params.query_time_out,
        )

    def incre_column(self) -> str | None:
        """The increColumn's name in the source (resolved case-insensitively)."""
        name = self.params.incre_name()
        if name is None:
            return None
        self.source()
        assert self._extra is not None
        return self._extra.inc

    def extra(self) -> _Extra:
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
            at = sa.and_(inc == value, tie.not_in(sorted(mark.keys, key=_sort_key)))
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
        return out if out.num_rows else None

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
        self._extra = _Extra(key.name if key is not None else None, inc, tie)
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
        """``from`` (watermark or startLocation) and ``to`` (useMaxFunc) of this run."""
        if self.incre_column() is None:
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
            bounds["from"] = mark.to_json()
        if self.params.use_max_func:
            top = self._current_max()
            if top is not None:
                bounds["to"] = encode_value(top)
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
        if str(state.get("increColumn", "")).lower() != self.incre_column().lower():  # type: ignore[union-attr]
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
        return _plain(value)

    def _parse_location(self, text: str) -> Any:
        """``startLocation`` as a value of the increColumn's type."""
        name = self.extra().inc
        assert name is not None
        mt = self._types[name]
        try:
            value = pc.cast(pa.array([text.strip()]), pa.string())
            parsed = _parse_location_array(value, mt)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            msg = f"'{text}' is not a value of increColumn '{name}' ({mt.arrow}): {exc}"
            raise MysqlConfigError([ConfigIssue(f"{self.param_path}.startLocation", msg)]) from exc
        return _plain(parsed[0].as_py())

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


class MysqlSplitReader(SqlSplitReader):
    """One open split, read with the reader's driver in streamed keyset pages.

    Positions are the generic ones (``{"after": key}``, ``{"nulls": n}``, ``{"offset": n}``)
    plus ``{"inc": watermark}`` in incremental runs, and ``{"poll": watermark}`` when polling.
    """

    _reader: MysqlReader

    def __init__(self, reader: SqlReader, split: Split, position: Position | None) -> None:
        super().__init__(reader, split, position)
        assert isinstance(reader, MysqlReader)
        self._driver = reader.driver()
        self._fetcher = reader.new_fetcher(self._driver)
        raw = position.get("inc") if isinstance(position, dict) else None
        self._mark = Watermark.from_json(raw)
        self._failures = 0

    # -- reading -----------------------------------------------------------------------------

    @override
    def _read(self, mode: str | None) -> Iterator[pa.RecordBatch | None]:
        return self._poll() if mode == "poll" else super()._read(mode)

    @override
    def _release(self) -> None:
        self._fetcher.close()

    def _select(self, query: Select[Any]) -> tuple[Select[Any], list[tuple[str, MysqlType]]]:
        chosen = self._reader.selected(self._driver)
        query = query.with_only_columns(
            *[expr for _, _, expr in chosen], maintain_column_froms=True
        )
        return query, [(name, mt) for name, mt, _ in chosen]

    def _run(self, query: Select[Any]) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
        """Run a query with this split's driver; yields full batches (key columns included)."""
        query, columns = self._select(query)
        engine = self._reader.engine()
        compiled = query.compile(
            dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = dict(compiled.params)
        for key, value in params.items():
            params[key] = _plain(value)
        yield from self._fetcher.stream(str(compiled), params, columns, self._reader.page_rows)

    def _attempt_failed(self, exc: BaseException, what: str) -> None:
        """After a failed query: fall back from connectorx, or count a lost connection (and
        wait before the retry), or re-raise."""
        reader = self._reader
        if isinstance(exc, DriverCannotRead):
            fallback = "mysqlclient" if _installed_text("mysqlclient") else "pymysql"
            log.warning(
                "%s: connectorx cannot read %s (%s); reading it with %s",
                reader.plugin_name,
                what,
                exc,
                fallback,
            )
            self._fetcher.close()
            self._driver = fallback
            self._fetcher = reader.new_fetcher(fallback)
            return
        if not is_connection_lost(exc):
            if isinstance(exc, Exception) and errno(exc) is not None:
                detail = error_text(exc, [reader.params.secret()])
                msg = f"{reader.plugin_name}: {what} failed: {detail}"
                raise query_failure(exc, msg) from exc
            raise exc
        self._fetcher.close()
        detail = error_text(exc, [reader.params.secret()])
        while True:
            self._failures += 1
            if self._failures > len(RETRY_DELAYS):
                msg = (
                    f"{reader.plugin_name}: lost the connection while reading {what} "
                    f"({self._failures} attempts): {detail}"
                )
                raise RetriableError(msg) from exc
            delay = RETRY_DELAYS[self._failures - 1]
            log.warning(
                "%s: connection lost while reading %s (%s); retrying in %ss",
                reader.plugin_name,
                what,
                detail,
                delay,
            )
            reader.ctx.stopping.wait(delay)
            if self._driver != "connectorx":
                return
            # connectorx waits 30 s for a server that is down: ask with pymysql first
            try:
                connect(reader.engine().url).close()
            except Exception as probe:
                if not is_connection_lost(probe):
                    raise
                detail = error_text(probe, [reader.params.secret()])
                continue
            return

    def _emit(
        self, batch: pa.RecordBatch, errors: dict[int, str], position: dict[str, Any]
    ) -> pa.RecordBatch | None:
        """Track the watermark, set the position, return the output rows."""
        extra = self._reader.extra()
        if extra.inc is not None and batch.num_rows:
            tie = batch.column(extra.tie) if extra.tie is not None else None
            self._mark.update(batch.column(extra.inc), tie)
        if self._mark.seen and self._split.data.get("mode") != "poll":
            position = {**position, "inc": self._mark.to_json()}
        self._position = position
        return self._reader.output_batch(batch, errors)

    @override
    def _keyset(self) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        source = reader.source()
        assert source.key is not None
        key_name = source.key.name
        unique = source.key.unique
        after: Any = _START
        if self._in_keyset():
            after = decode_value(self._position["after"])  # type: ignore[index]
        limit = reader.params.page_size
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            got = 0
            last: Any = _START
            carry: list[tuple[pa.RecordBatch, dict[int, str]]] = []
            try:
                for batch, errors in self._run(reader.page_query(self._split, after, limit)):
                    self._failures = 0
                    got += batch.num_rows
                    keys = batch.column(key_name)
                    last = python_value(keys, batch.num_rows - 1)
                    if unique:
                        after = last
                        yield self._emit(batch, errors, {"after": encode_value(last)})
                        continue
                    carry.append((batch, errors))
                    ready, carry, emitted_key = _cut_ties(carry, key_name)
                    if ready is not None:
                        after = emitted_key
                        yield self._emit(*ready, {"after": encode_value(emitted_key)})
                    if stopping.is_set():
                        return
            except Exception as exc:
                self._attempt_failed(exc, f"split {self._split.id}")
                continue
            if not unique and last is not _START:
                if got >= limit:  # the run of equal keys may go on past the page
                    carry = list(self._run(reader.tie_query(self._split, last))) or carry
                rows, errors = _concat(carry)
                after = last
                yield self._emit(rows, errors, {"after": encode_value(last)})
            if got < limit:
                return

    @override
    def _custom(self) -> Iterator[pa.RecordBatch | None]:
        return self._stream(nulls=False, custom=True)

    @override
    def _stream(self, *, nulls: bool, custom: bool = False) -> Iterator[pa.RecordBatch | None]:
        """Rows with a NULL key, a table without key, or customSql: one streamed query whose
        position is the number of rows emitted (``None`` when its order is not stable)."""
        reader = self._reader
        tag = "nulls" if nulls else "offset"
        resumable = not custom and reader.stream_resumable()
        offset = 0
        if isinstance(self._position, dict) and tag in self._position:
            offset = int(self._position[tag])
        emitted = 0
        while not reader.ctx.stopping.is_set():
            if custom:
                source = reader.source()
                query = (
                    sa.select(*source.select_list())
                    .select_from(source.from_)
                    .where(*reader.conditions(self._split))
                )
                if emitted:
                    query = query.offset(emitted)
            else:
                query = reader.stream_query(self._split, offset + emitted, nulls=nulls)
            try:
                for batch, errors in self._run(query):
                    self._failures = 0
                    emitted += batch.num_rows
                    position: dict[str, Any] = {tag: offset + emitted} if resumable else {}
                    yield self._emit(batch, errors, position)
                    if reader.ctx.stopping.is_set():
                        return
            except Exception as exc:
                self._attempt_failed(exc, "customSql" if custom else f"split {self._split.id}")
                continue
            return

    def _poll(self) -> Iterator[pa.RecordBatch | None]:
        """Polling: ``inc`` (then the tie key) order after the cursor; idle ticks between polls."""
        reader = self._reader
        extra = reader.extra()
        assert extra.inc is not None
        raw = self._position.get("poll") if isinstance(self._position, dict) else None
        if raw is None:
            raw = self._split.data.get("from")
        self._mark = Watermark.from_json(raw)
        if self._position is None and raw is not None:
            self._position = {"poll": raw}
        source = reader.source()
        inc = reader._inc_expr()
        order = [inc] + ([reader._column_expr(extra.tie)] if extra.tie else [])
        limit = reader.params.page_size
        interval = reader.params.polling_interval / 1000
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            conds = [*reader._where_only(), *reader.after_watermark(self._mark), inc.is_not(None)]
            query = sa.select(*source.select_list()).select_from(source.from_).where(*conds)
            query = query.order_by(*order).limit(limit)
            got = 0
            carry: list[tuple[pa.RecordBatch, dict[int, str]]] = []
            try:
                for batch, errors in self._run(query):
                    self._failures = 0
                    got += batch.num_rows
                    if extra.tie is not None:
                        yield self._emit_poll(batch, errors)
                        continue
                    carry.append((batch, errors))
                    ready, carry, _ = _cut_ties(carry, extra.inc)
                    if ready is not None:
                        yield self._emit_poll(*ready)
            except Exception as exc:
                self._attempt_failed(exc, "the polling query")
                continue
            if carry:
                rows, errors = _concat(carry)
                if got >= limit:  # complete the run of the last value
                    last = python_value(rows.column(extra.inc), rows.num_rows - 1)
                    tie_query = (
                        sa.select(*source.select_list())
                        .select_from(source.from_)
                        .where(*reader._where_only(), inc == last)
                    )
                    rows, errors = _concat(list(self._run(tie_query)))
                yield self._emit_poll(rows, errors)
            if got >= limit:
                continue
            waited = 0.0
            while waited < interval and not stopping.is_set():
                step = min(1.0, interval - waited)
                stopping.wait(step)
                waited += step
                yield None

    def _emit_poll(self, batch: pa.RecordBatch, errors: dict[int, str]) -> pa.RecordBatch | None:
        extra = self._reader.extra()
        assert extra.inc is not None
        tie = batch.column(extra.tie) if extra.tie is not None else None
        self._mark.update(batch.column(extra.inc), tie)
        if extra.tie is None:
            self._mark.inclusive = False
        self._position = {"poll": self._mark.to_json()}
        return self._reader.output_batch(batch, errors)


def _installed_text(driver: str) -> bool:
    try:
        __import__("MySQLdb" if driver == "mysqlclient" else "pymysql")
    except ImportError:
        return False
    return True


def _concat(
    parts: list[tuple[pa.RecordBatch, dict[int, str]]],
) -> tuple[pa.RecordBatch, dict[int, str]]:
    """Batches (with their row errors) as one."""
    if len(parts) == 1:
        return parts[0]
    errors: dict[int, str] = {}
    offset = 0
    for batch, bad in parts:
        for row, error in bad.items():
            errors[offset + row] = error
        offset += batch.num_rows
    table = pa.Table.from_batches([b for b, _ in parts])
    return table.combine_chunks().to_batches()[0] if offset else parts[0][0], errors


def _cut_ties(
    carry: list[tuple[pa.RecordBatch, dict[int, str]]], key: str
) -> tuple[
    tuple[pa.RecordBatch, dict[int, str]] | None, list[tuple[pa.RecordBatch, dict[int, str]]], Any
]:
    """Split buffered rows (ordered by ``key``) before their last run of equal keys: the rows
    before can be emitted (their position is exact), the run waits for more rows."""
    rows, errors = _concat(carry)
    keys = rows.column(key)
    count = rows.num_rows
    last = keys[count - 1]
    same = pc.fill_null(pc.equal(keys, last), False).to_numpy(zero_copy_only=False)
    differ = np.flatnonzero(~same)
    if differ.size == 0:
        return None, [(rows, errors)], None
    cut = int(differ[-1]) + 1
    head = rows.slice(0, cut)
    tail = rows.slice(cut)
    head_errors = {r: e for r, e in errors.items() if r < cut}
    tail_errors = {r - cut: e for r, e in errors.items() if r >= cut}
    return (head, head_errors), [(tail, tail_errors)], python_value(keys, cut - 1)


MysqlReader.split_reader_class = MysqlSplitReader
