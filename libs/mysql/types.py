"""MySQL column types as Arrow types, the same for every driver, and column-wise decoding.

:class:`MysqlType`, :func:`mysql_type` (from SQLAlchemy), :func:`mysql_type_of_field` (from the
protocol); text values are parsed column-wise with Arrow casts (:func:`decode_text`) and
connectorx's Arrow columns are cast to the same types (:func:`from_connectorx`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

from libs.sql import (
    BadValue,
)

Wire = Literal["text", "bit"]


@dataclass(frozen=True)
class MysqlType:
    """How one MySQL column is read and written: its Arrow type and its wire form.

    ``wire`` is ``text`` (the value's text, parsed with an Arrow cast) or ``bit`` (a BIT value:
    big-endian bytes). ``select`` says how the column is selected per driver family: text
    drivers select ``FLOAT`` as ``DOUBLE`` (MariaDB prints FLOAT with 6 digits); connectorx
    selects as text what it cannot hold exactly (``char``).
    """

    arrow: pa.DataType
    wire: Wire = "text"
    text_select: Literal["as-is", "double"] = "as-is"
    arrow_select: Literal["as-is", "char"] = "as-is"
    sql: str = ""
    """The MySQL type as written in DDL, for messages and docs."""


_INT_BITS = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 32, "INTEGER": 32, "INT": 32, "BIGINT": 64}


def _int_type(bits: int, unsigned: bool) -> pa.DataType:
    kinds = {
        8: (pa.int8(), pa.uint8()),
        16: (pa.int16(), pa.uint16()),
        32: (pa.int32(), pa.uint32()),
        64: (pa.int64(), pa.uint64()),
    }
    return kinds[bits][1 if unsigned else 0]


def _decimal_type(precision: int | None, scale: int | None, sql: str) -> MysqlType:
    precision = 10 if precision is None else precision
    scale = 0 if scale is None else scale
    arrow = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    exact_in_connectorx = precision <= 28 and scale <= 10
    return MysqlType(arrow, arrow_select="as-is" if exact_in_connectorx else "char", sql=sql)


def mysql_type(sql_type: TypeEngine[Any]) -> MysqlType:
    """The :class:`MysqlType` of a reflected column (SQLAlchemy's MySQL types)."""
    t = sql_type
    name = type(t).__name__.upper()
    if isinstance(t, mysql_types.BIT):
        length = t.length or 1
        return MysqlType(pa.bool_() if length == 1 else pa.uint64(), "bit", sql=f"BIT({length})")
    if isinstance(t, mysql_types.YEAR):
        return MysqlType(pa.int16(), sql="YEAR")
    if isinstance(t, sqltypes.Boolean):
        return MysqlType(pa.int8(), sql="BOOLEAN")
    if isinstance(t, sqltypes.Integer):
        bits = _INT_BITS.get(name, 64)
        unsigned = bool(getattr(t, "unsigned", False))
        return MysqlType(_int_type(bits, unsigned), sql=name + (" UNSIGNED" if unsigned else ""))
    if isinstance(t, sqltypes.Float):
        if name == "FLOAT":  # 4 bytes; FLOAT(p > 24) is reflected as DOUBLE
            return MysqlType(pa.float32(), text_select="double", sql="FLOAT")
        return MysqlType(pa.float64(), sql="DOUBLE")
    if isinstance(t, sqltypes.Numeric):
        return _decimal_type(t.precision, t.scale, f"DECIMAL({t.precision},{t.scale})")
    if isinstance(t, mysql_types.TIMESTAMP):
        return MysqlType(pa.timestamp("us", tz="UTC"), sql="TIMESTAMP")
    if isinstance(t, sqltypes.DateTime):
        return MysqlType(pa.timestamp("us"), sql="DATETIME")
    if isinstance(t, sqltypes.Date):
        return MysqlType(pa.date32(), sql="DATE")
    if isinstance(t, sqltypes.Time):
        return MysqlType(pa.duration("us"), arrow_select="char", sql="TIME")
    if isinstance(t, sqltypes._Binary | sqltypes.LargeBinary):
        return MysqlType(pa.binary(), sql=name)
    if isinstance(t, sqltypes.String | sqltypes.Enum | sqltypes.JSON):
        return MysqlType(pa.string(), sql=name)
    if isinstance(t, sqltypes.NullType):  # GEOMETRY and other types SQLAlchemy does not know
        return MysqlType(pa.binary(), sql="(unknown)")
    return MysqlType(pa.string(), sql=name)


# MySQL protocol field types (``include/mysql_com.h``); flags likewise.
_T_DECIMAL, _T_TINY, _T_SHORT, _T_LONG, _T_FLOAT, _T_DOUBLE = 0, 1, 2, 3, 4, 5
_T_NULL, _T_TIMESTAMP, _T_LONGLONG, _T_INT24, _T_DATE, _T_TIME = 6, 7, 8, 9, 10, 11
_T_DATETIME, _T_YEAR, _T_NEWDATE, _T_VARCHAR, _T_BIT = 12, 13, 14, 15, 16
_T_JSON, _T_NEWDECIMAL, _T_ENUM, _T_SET = 245, 246, 247, 248
_T_TINY_BLOB, _T_MEDIUM_BLOB, _T_LONG_BLOB, _T_BLOB = 249, 250, 251, 252
_T_VAR_STRING, _T_STRING, _T_GEOMETRY = 253, 254, 255
_FLAG_UNSIGNED = 32
_BINARY_CHARSET = 63


def mysql_type_of_field(
    type_code: int, length: int, scale: int, flags: int, charsetnr: int
) -> MysqlType:
    """The :class:`MysqlType` of a result column from its protocol metadata (``customSql``)."""
    unsigned = bool(flags & _FLAG_UNSIGNED)
    ints = {_T_TINY: 8, _T_SHORT: 16, _T_INT24: 32, _T_LONG: 32, _T_LONGLONG: 64}
    if type_code in ints:
        return MysqlType(_int_type(ints[type_code], unsigned), sql="integer")
    if type_code in (_T_DECIMAL, _T_NEWDECIMAL):
        precision = max(1, length - (1 if scale else 0) - (0 if unsigned else 1))
        return _decimal_type(min(precision, 65), scale, f"DECIMAL({precision},{scale})")
    if type_code == _T_FLOAT:
        return MysqlType(pa.float32(), text_select="double", sql="FLOAT")
    if type_code == _T_DOUBLE:
        return MysqlType(pa.float64(), sql="DOUBLE")
    if type_code == _T_TIMESTAMP:
        return MysqlType(pa.timestamp("us", tz="UTC"), sql="TIMESTAMP")
    if type_code == _T_DATETIME:
        return MysqlType(pa.timestamp("us"), sql="DATETIME")
    if type_code in (_T_DATE, _T_NEWDATE):
        return MysqlType(pa.date32(), sql="DATE")
    if type_code == _T_TIME:
        return MysqlType(pa.duration("us"), arrow_select="char", sql="TIME")
    if type_code == _T_YEAR:
        return MysqlType(pa.int16(), sql="YEAR")
    if type_code == _T_BIT:
        return MysqlType(pa.bool_() if length == 1 else pa.uint64(), "bit", sql=f"BIT({length})")
    if type_code == _T_GEOMETRY:
        return MysqlType(pa.binary(), sql="GEOMETRY")
    blobs = (_T_TINY_BLOB, _T_MEDIUM_BLOB, _T_LONG_BLOB, _T_BLOB, _T_VAR_STRING, _T_STRING)
    if type_code in (*blobs, _T_VARCHAR) and charsetnr == _BINARY_CHARSET:
        return MysqlType(pa.binary(), sql="BINARY")
    return MysqlType(pa.string(), sql="text")


def is_exact_family(declared: pa.DataType, actual: pa.DataType) -> bool:
    """Whether a ChunJun ``column[].type`` names the family of the column's own type (then the
    column's exact type is kept: ``decimal`` for DECIMAL(12,2), ``int`` for INT UNSIGNED)."""

    def family(t: pa.DataType) -> str:
        if pa.types.is_integer(t):
            return "int"
        if pa.types.is_decimal(t):
            return "decimal"
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "string"
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "binary"
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return "datetime"
        if pa.types.is_time(t) or pa.types.is_duration(t):
            return "time"
        return str(t)

    if pa.types.is_date(declared) != pa.types.is_date(actual):
        return False
    return family(declared) == family(actual)


# -- decoding -----------------------------------------------------------------------------------

_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    ValueError,
    TypeError,
    OverflowError,
)


def _text_array(values: Sequence[Any]) -> pa.Array:
    """Wire values (``str``, ``bytes`` or ``None``) as one Arrow string array."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bytes | bytearray | memoryview):
        return pa.array(values, pa.binary()).cast(pa.string())
    return pa.array(values, pa.string())


def parse_text(text: pa.Array, target: pa.DataType) -> pa.Array:
    """A string array parsed into ``target`` (raises on the first value that does not parse)."""
    if pa.types.is_string(target):
        return text
    if pa.types.is_binary(target):
        return text.cast(pa.binary())
    if pa.types.is_timestamp(target):
        naive = pc.cast(text, pa.timestamp(target.unit))
        return naive if target.tz is None else naive.cast(target)
    if pa.types.is_time(target):
        stamped = pc.binary_join_element_wise("1970-01-01 ", text, "")
        return pc.cast(stamped, pa.timestamp("us")).cast(target)
    if pa.types.is_duration(target):
        return _parse_duration(text).cast(target)
    if pa.types.is_float32(target):
        return pc.cast(pc.cast(text, pa.float64()), target, safe=False)
    return pc.cast(text, target)


_TIME_TEXT = r"^(?P<sign>-?)(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?$"


def _parse_duration(text: pa.Array) -> pa.Array:
    """MySQL ``TIME`` text (``-838:59:59.000000`` … ``838:59:59``) as ``duration('us')``."""
    parts = pc.extract_regex(text, _TIME_TEXT)
    if parts.null_count != text.null_count:
        bad = pc.and_(pc.is_null(parts), pc.is_valid(text))
        first = text.filter(bad)[0].as_py()
        msg = f"'{first}' is not a TIME value"
        raise pa.ArrowInvalid(msg)
    hours, minutes, seconds = (
        pc.cast(pc.struct_field(parts, name), pa.int64()) for name in ("h", "m", "s")
    )
    fraction = pc.cast(pc.utf8_rpad(pc.struct_field(parts, "f"), 6, "0"), pa.int64())
    micros = pc.add(
        pc.multiply(
            pc.add(pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)), seconds), 1_000_000
        ),
        fraction,
    )
    negative = pc.equal(pc.struct_field(parts, "sign"), "-")
    signed = pc.if_else(negative, pc.negate(micros), micros)
    return pc.if_else(pc.is_valid(text), signed, pa.scalar(None, pa.int64())).cast(
        pa.duration("us")
    )


def _bit_array(values: Sequence[Any], target: pa.DataType) -> pa.Array:
    numbers = [None if v is None else int.from_bytes(bytes(v), "big") for v in values]
    if pa.types.is_boolean(target):
        return pa.array([None if n is None else n != 0 for n in numbers], pa.bool_())
    return pa.array(numbers, target)


def _decode_values(values: Sequence[Any], mt: MysqlType) -> pa.Array:
    if mt.wire == "bit":
        return _bit_array(values, mt.arrow)
    if pa.types.is_binary(mt.arrow):
        return pa.array(
            [v.encode("utf-8") if isinstance(v, str) else v for v in values], pa.binary()
        )
    return parse_text(_text_array(values), mt.arrow)


def decode_text(values: Sequence[Any], mt: MysqlType, name: str) -> tuple[pa.Array, dict[int, str]]:
    """A column of wire values as ``mt.arrow``; values that do not convert are nulls in the
    result and come back as errors by row number (the rows become dirty records)."""
    try:
        return _decode_values(values, mt), {}
    except _ARROW_ERRORS:
        pass
    errors: dict[int, str] = {}
    cleaned: list[Any] = []
    for index, value in enumerate(values):
        if value is None:
            cleaned.append(None)
            continue
        try:
            _decode_values([value], mt)
        except _ARROW_ERRORS as exc:
            shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            errors[index] = f"{name}: cannot read {shown!r} as {mt.arrow}: {exc}"
            cleaned.append(None)
        else:
            cleaned.append(value)
    return _decode_values(cleaned, mt), errors


def from_connectorx(
    array: pa.Array | pa.ChunkedArray, mt: MysqlType, name: str
) -> tuple[pa.Array, dict[int, str]]:
    """A connectorx column as ``mt.arrow`` (the same values the text drivers give)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if mt.wire == "bit":
        return _bit_array(array.to_pylist(), mt.arrow), {}
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    elif pa.types.is_large_binary(array.type):
        array = array.cast(pa.binary())
    if array.type == mt.arrow:
        return array, {}
    if pa.types.is_string(array.type) and not pa.types.is_string(mt.arrow):
        try:
            return parse_text(array, mt.arrow), {}
        except _ARROW_ERRORS:
            return decode_text(array.to_pylist(), mt, name)
    if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(mt.arrow):
        return array.cast(pa.timestamp(mt.arrow.unit)).cast(mt.arrow), {}
    return pc.cast(array, mt.arrow), {}


# -- drivers ------------------------------------------------------------------------------------


def python_value(array: pa.Array, index: int) -> Any:
    """One value of an Arrow array as the Python value a query binds (UTC-naive datetimes)."""
    value = array[index].as_py()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def bad_values(errors: dict[int, str], names: Sequence[str]) -> list[BadValue]:
    """Decoding errors as :class:`libs.sql.BadValue` s."""
    out = []
    for row, error in sorted(errors.items()):
        field = error.split(":", 1)[0]
        out.append(BadValue(row, field if field in names else "", error))
    return out


def mysql_sa_type(mt: MysqlType) -> TypeEngine[Any]:
    """A SQLAlchemy type for expressions over a column of ``mt`` (ORDER BY, comparisons)."""
    t = mt.arrow
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_decimal(t):
        return sa.Numeric()
    if pa.types.is_floating(t):
        return sa.Float()
    if pa.types.is_timestamp(t):
        return sa.DateTime()
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    if pa.types.is_binary(t):
        return sa.LargeBinary()
    return sa.String()
