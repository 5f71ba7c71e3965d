"""Types and values: SQLAlchemy types as Arrow types, rows as record batches, key values as JSON."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

__all__ = [
    "BadValue",
    "arrow_type_of",
    "decode_value",
    "encode_value",
    "is_orderable",
    "rows_to_batch",
    "value_converter",
]

DEFAULT_DECIMAL_SCALE = 10
"""Scale given to a NUMERIC without declared precision (SQLAlchemy's own default scale)."""


def arrow_type_of(sql_type: TypeEngine[Any]) -> pa.DataType:
    """The Arrow type that holds values of a SQLAlchemy column type.

    Integer → int64, Float → float64, Numeric(p,s) → decimal128(p,s) (decimal256 above 38 digits,
    decimal128(38,10) when undeclared), DateTime → timestamp('us') (UTC-zoned when the column has
    a time zone), Date → date32, Time → time64('us'), Interval → duration('us'), Boolean → bool,
    binary types → binary, ARRAY → list, and text, enums, UUID, JSON and anything else → string.
    """
    t = sql_type
    if isinstance(t, sqltypes.Boolean):
        return pa.bool_()
    if isinstance(t, sqltypes.Integer):
        return pa.int64()
    if isinstance(t, sqltypes.Float):
        return pa.float64()
    if isinstance(t, sqltypes.Numeric):
        if not t.asdecimal:
            return pa.float64()
        precision, scale = t.precision, t.scale
        if precision is None:
            return pa.decimal128(38, DEFAULT_DECIMAL_SCALE if scale is None else scale)
        if precision <= 38:
            return pa.decimal128(precision, scale or 0)
        if precision <= 76:
            return pa.decimal256(precision, scale or 0)
        return pa.string()
    if isinstance(t, sqltypes.DateTime):
        return pa.timestamp("us", tz="UTC" if t.timezone else None)
    if isinstance(t, sqltypes.Date):
        return pa.date32()
    if isinstance(t, sqltypes.Time):
        return pa.time64("us")
    if isinstance(t, sqltypes._AbstractInterval):
        return pa.duration("us")
    if isinstance(t, sqltypes._Binary):
        return pa.binary()
    if isinstance(t, sqltypes.ARRAY):
        return pa.list_(arrow_type_of(t.item_type))
    return pa.string()


def value_converter(sql_type: TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How to turn a fetched value into what :func:`arrow_type_of` expects (None: as is)."""
    target = arrow_type_of(sql_type)
    if not pa.types.is_string(target):
        return None
    if isinstance(sql_type, sqltypes.JSON):
        return _json_text
    if isinstance(sql_type, sqltypes.String | sqltypes.Enum):
        return None
    return _text


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def is_orderable(sql_type: TypeEngine[Any]) -> bool:
    """Whether ORDER BY works on the type everywhere (PostgreSQL cannot sort ``json``)."""
    return not (
        isinstance(sql_type, sqltypes.NullType)
        or (isinstance(sql_type, sqltypes.JSON) and type(sql_type).__name__ != "JSONB")
    )


_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    TypeError,
    ValueError,
    OverflowError,
    decimal.InvalidOperation,
)


@dataclass(frozen=True)
class BadValue:
    """A fetched value that Arrow could not hold: which row, which column, why."""

    row: int
    field: str
    error: str


def rows_to_batch(
    rows: Sequence[Sequence[Any]],
    schema: pa.Schema,
    converters: Sequence[Callable[[Any], Any] | None] | None = None,
) -> tuple[pa.RecordBatch, list[BadValue]]:
    """A record batch of the first ``len(schema)`` values of each row, built column-wise.

    Each column is one ``pa.array`` call over the transposed rows. A column that fails is
    retried value by value: the rows whose value does not fit are dropped from the batch and
    returned as :class:`BadValue` s (their row numbers index ``rows``).
    """
    width = len(schema)
    columns: list[tuple[Any, ...]] = []
    if rows:
        columns = [tuple(c) for c in zip(*rows, strict=False)][:width]
    if not columns:
        columns = [() for _ in range(width)]
    arrays: list[pa.Array] = []
    bad: dict[int, BadValue] = {}
    for position, target in enumerate(schema):
        values: Sequence[Any] = columns[position]
        convert = converters[position] if converters else None
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        try:
            arrays.append(pa.array(values, type=target.type, from_pandas=False))
        except _ARROW_ERRORS:
            kept: list[Any] = []
            for index, value in enumerate(values):
                try:
                    pa.array([value], type=target.type)
                except _ARROW_ERRORS as exc:
                    error = f"{target.name}: cannot hold {value!r} as {target.type}: {exc}"
                    bad.setdefault(index, BadValue(index, target.name, error))
                    kept.append(None)
                else:
                    kept.append(value)
            arrays.append(pa.array(kept, type=target.type))
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if bad:
        batch = batch.filter(pa.array([i not in bad for i in range(len(rows))]))
    return batch, sorted(bad.values(), key=lambda b: b.row)


# -- positions ----------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """A key value as JSON that :func:`decode_value` turns back into the same type.

    ``None``, bools, ints, floats and strings are themselves; other types are a one-key mapping
    naming the type: ``{"$date": "2024-01-31"}``, ``{"$decimal": "1.50"}``, ``{"$bytes": b64}``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    msg = f"cannot store a {type(value).__name__} key value in a checkpoint"
    raise TypeError(msg)


def decode_value(raw: Any) -> Any:
    """The value :func:`encode_value` encoded."""
    if not isinstance(raw, dict):
        return raw
    ((tag, value),) = raw.items()
    decoders: dict[str, Callable[[Any], Any]] = {
        "$datetime": dt.datetime.fromisoformat,
        "$date": dt.date.fromisoformat,
        "$time": dt.time.fromisoformat,
        "$timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
        "$decimal": decimal.Decimal,
        "$bytes": base64.b64decode,
        "$uuid": uuid.UUID,
    }
    if tag not in decoders:
        msg = f"unknown key value tag {tag!r} in a checkpoint position"
        raise ValueError(msg)
    return decoders[tag](value)
