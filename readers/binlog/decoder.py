"""Binlog row images as Arrow-ready values: per-table shapes and a fast binary row decoder.

A table's columns get their Arrow types from the one MySQL type table
(:func:`libs.mysql.types.mysql_type_of`, via :func:`~libs.mysql.types.column_type_of_binlog`
for table maps and :func:`~libs.mysql.types.column_type_of_info` for snapshots), so streamed and
copied rows have the same layout. :class:`RowDecoder` reads FULL row images straight from the
event bytes, one function per column (about 5x faster than ``mysql-replication``'s decoder);
tables with types it does not read (MySQL's binary JSON, old temporal types) are left to the
library, whose values :meth:`TableShape.values` converts.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from libs.cdc import SourceInfo, TableLayout
from libs.mysql.types import ColumnType, FieldType, mysql_type_of

__all__ = ["Change", "RowDecoder", "TableShape", "value_converter"]

Change = tuple[str, Any, Any, SourceInfo]
"""``(op, before, after, source)`` of one row change (``op``: c, u, d, or r for snapshots)."""


# -- values the library decoded ------------------------------------------------------------------


def value_converter(column: ColumnType) -> Callable[[Any], Any] | None:
    """``mysql-replication``'s value of a column → a value of its Arrow type (None: as is)."""
    family = column.family
    if family == "set":
        order = column.members

        def set_text(value: Any) -> str:
            if isinstance(value, str):
                return value
            chosen = set(value)
            ordered = [v for v in order if v in chosen] + sorted(chosen - set(order))
            return ",".join(ordered)

        return set_text
    if family == "bit":
        return _bool_value if column.size == 1 else _bit_value
    if family == "json":
        return _json_value
    if family == "time":
        return _time_value
    if family == "text":
        return _string_value
    if family == "binary" and column.size:
        width = column.size

        def fixed_binary(value: Any) -> bytes:
            return _binary_value(value).ljust(width, b"\0")

        return fixed_binary  # BINARY(n): the binlog drops the trailing zero bytes
    if family in ("binary", "geometry"):
        return _binary_value
    return None


def _bit_value(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    return int(str(value), 2)


def _bool_value(value: Any) -> bool:
    return bool(_bit_value(value))


def _json_value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(_json_safe(value), ensure_ascii=False, separators=(",", ":"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _time_value(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, dt.time):
        return dt.timedelta(
            hours=value.hour,
            minutes=value.minute,
            seconds=value.second,
            microseconds=value.microsecond,
        )
    msg = f"not a TIME value: {value!r}"
    raise ValueError(msg)


def _string_value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _binary_value(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


@dataclass(frozen=True)
class TableShape:
    """A table's layout plus the converters of its columns (cached per table-map)."""

    layout: TableLayout
    names: tuple[str, ...]
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]
    decoder: RowDecoder | None = None
    """Reads row images straight from the event bytes (None: the library decodes)."""
    fast_converters: tuple[tuple[int, Callable[[Any], Any]], ...] = ()
    """What still needs converting after :attr:`decoder` (BIT(1) as a bool)."""

    @classmethod
    def of(
        cls,
        db: str,
        table: str,
        names: Sequence[str],
        types: Sequence[ColumnType],
        key: Sequence[str],
        columns: Sequence[Any] | None = None,
    ) -> TableShape:
        """The shape of ``db.table`` with columns ``names`` of ``types`` (``columns``: the
        binlog table map's, for the fast decoder)."""
        schema = pa.schema(
            [pa.field(n, mysql_type_of(t).arrow) for n, t in zip(names, types, strict=True)]
        )
        converters = tuple(
            (i, c) for i, t in enumerate(types) if (c := value_converter(t)) is not None
        )
        decoder = RowDecoder.for_columns(columns) if columns is not None else None
        fast = tuple(
            (i, c) for i, c in converters if types[i].family == "bit" and types[i].size == 1
        )
        layout = TableLayout(db, table, schema, tuple(key))
        return cls(layout, tuple(names), converters, decoder, fast)

    def changes(self, event: Any, op: str, source: SourceInfo) -> list[Change]:
        """A rows event's changes: ``op`` ``c`` (write), ``u`` (update) or ``d`` (delete)
        with the before and after images; read by :attr:`decoder` where it can, else by the
        library (its values converted)."""
        decoded = None
        if self.decoder is not None:
            try:
                decoded = self.decoder.rows(event, 2 if op == "u" else 1)
            except (ValueError, IndexError, UnicodeDecodeError, struct.error, OverflowError):
                decoded = None  # let the library try (and report)
        if decoded is not None:
            convert = self.convert_fast
            if op == "c":
                return [("c", None, convert(v), source) for v in decoded]
            if op == "d":
                return [("d", convert(v), None, source) for v in decoded]
            return [("u", convert(b), convert(a), source) for b, a in decoded]
        values = self.values
        if op == "c":
            return [("c", None, values(r["values"]), source) for r in event.rows]
        if op == "d":
            return [("d", values(r["values"]), None, source) for r in event.rows]
        return [
            ("u", values(r["before_values"]), values(r["after_values"]), source) for r in event.rows
        ]

    def convert_fast(self, values: list[Any]) -> list[Any]:
        """Values from :attr:`decoder`, converted where still needed (in place)."""
        for index, convert in self.fast_converters:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return values

    def values(self, row: dict[str, Any]) -> list[Any]:
        """A driver row (name → value) as a list in column order, converted."""
        out = [row.get(name) for name in self.names]
        for index, convert in self.converters:
            value = out[index]
            if value is not None:
                out[index] = convert(value)
        return out


# -- fast row decoding --------------------------------------------------------------------------

_ValueReader = Callable[[bytes, int], tuple[Any, int]]
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_EPOCH = dt.datetime(1970, 1, 1)


def _fixed(fmt: str) -> _ValueReader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    return read


def _int24(unsigned: bool) -> _ValueReader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + 3], "little", signed=not unsigned), pos + 3

    return read


def _fsp_reader(fsp: int) -> Callable[[bytes, int], tuple[int, int]]:
    size = (fsp + 1) // 2

    def read(data: bytes, pos: int) -> tuple[int, int]:
        if not size:
            return 0, pos
        value = int.from_bytes(data[pos : pos + size], "big", signed=True)
        if fsp % 2:
            value //= 10
        return value * 10 ** (6 - fsp), pos + size

    return read


def _text(length_bytes: int, encoding: str | None) -> _ValueReader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        length = int.from_bytes(data[pos : pos + length_bytes], "little")
        start = pos + length_bytes
        raw = data[start : start + length]
        return (raw.decode(encoding) if encoding else raw), start + length

    return read


def _decimal_reader(precision: int, scale: int) -> _ValueReader:
    """MySQL's packed DECIMAL: groups of up to 9 digits, big-endian, integral then fraction, the
    sign in the top bit (negative values inverted). Read as one integer whose groups give the
    unscaled value by arithmetic (building the digits as text took a third of the reader's
    time on the bench table)."""
    full_int, rest_int = divmod(precision - scale, 9)
    full_frac, rest_frac = divmod(scale, 9)
    widths = [
        *([(_DIG2BYTES[rest_int], rest_int)] if rest_int else []),
        *[(4, 9)] * (full_int + full_frac),
        *([(_DIG2BYTES[rest_frac], rest_frac)] if rest_frac else []),
    ]
    size = sum(width for width, _ in widths)
    sign = 1 << (size * 8 - 1)
    inverted = ((1 << (size * 8)) - 1) ^ sign  # a negative value's bits, but the sign
    groups: list[tuple[int, int, int]] = []  # (shift, mask, weight), least significant first
    shift, weight = 0, 1
    for width, digits in reversed(widths):
        groups.append((shift, (1 << (width * 8)) - 1, weight))
        shift += width * 8
        weight *= 10**digits
    exact = decimal.Context(prec=precision + 1)
    make = decimal.Decimal
    (_, low_mask, _), *higher = groups
    if len(higher) == 1:  # DECIMAL(10,2) and the like: no loop
        ((high_shift, high_mask, high_weight),) = higher

        def unscaled(raw: int) -> int:
            return (raw & low_mask) + ((raw >> high_shift) & high_mask) * high_weight

    else:

        def unscaled(raw: int) -> int:
            value = raw & low_mask
            for shift_, mask, weight_ in higher:
                value += ((raw >> shift_) & mask) * weight_
            return value

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        raw = int.from_bytes(data[pos : pos + size], "big")
        value = unscaled(raw ^ sign) if raw & sign else -unscaled(raw ^ inverted)
        return make(value).scaleb(-scale, exact), pos + size

    return read


def _datetime2(fsp: int) -> _ValueReader:
    fraction = _fsp_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(data[pos : pos + 5], "big")
        micro, end = fraction(data, pos + 5)
        year_month = (value >> 22) & 0x1FFFF
        try:
            return (
                dt.datetime(
                    year_month // 13,
                    year_month % 13,
                    (value >> 17) & 0x1F,
                    (value >> 12) & 0x1F,
                    (value >> 6) & 0x3F,
                    value & 0x3F,
                    micro,
                ),
                end,
            )
        except ValueError:  # zero dates
            return None, end

    return read


def _timestamp2(fsp: int) -> _ValueReader:
    fraction = _fsp_reader(fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "big")
        micro, end = fraction(data, pos + 4)
        return _EPOCH + dt.timedelta(seconds=seconds, microseconds=micro), end

    return read


_TIME2_FRACTION_SCALE = {0: 0, 1: 10_000, 2: 100, 3: 1}
"""Bytes of a TIME2 fraction → microseconds per stored unit (hundredths, 1/10000 s, µs)."""


def _time2(fsp: int) -> _ValueReader:
    """MySQL's TIME2: a 3-byte offset integer part and a fraction, read as one packed signed
    value as the server does (``my_time_packed_from_binary``), so negative times with a
    fraction come out right (``-00:00:00.000001``; ``mysql-replication`` reads it as
    ``-00:00:01.000001``)."""
    size = (fsp + 1) // 2
    scale = _TIME2_FRACTION_SCALE[size]

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        whole = int.from_bytes(data[pos : pos + 3], "big") - 0x800000
        fraction = int.from_bytes(data[pos + 3 : pos + 3 + size], "big")
        if whole < 0 and fraction:  # a negative time's fraction counts down from the next second
            whole += 1
            fraction -= 1 << (8 * size)
        packed = (whole << 24) + fraction * scale
        hms, micro = divmod(abs(packed), 1 << 24)
        delta = dt.timedelta(
            hours=(hms >> 12) & 0x3FF,
            minutes=(hms >> 6) & 0x3F,
            seconds=hms & 0x3F,
            microseconds=micro,
        )
        return (-delta if packed < 0 else delta), pos + 3 + size

    return read


def _date(data: bytes, pos: int) -> tuple[Any, int]:
    value = int.from_bytes(data[pos : pos + 3], "little")
    try:
        return dt.date((value >> 9) & 0x7FFF, (value >> 5) & 0xF, value & 0x1F), pos + 3
    except ValueError:
        return None, pos + 3


def _encoding(column: Any) -> str | None:
    """The Python codec of a text column; None for binary ones."""
    name = (getattr(column, "character_set_name", None) or "utf8mb4").lower()
    if name == "binary":
        return None
    if name.startswith("utf8"):
        return "utf-8"
    if name == "latin1":
        return "cp1252"
    return name


def _value_reader(column: Any) -> _ValueReader | None:
    """How to read one value of ``column`` from a row image (None: not handled here)."""
    code, unsigned = column.type, column.unsigned
    if code == FieldType.TINY:
        return _fixed("<B" if unsigned else "<b")
    if code == FieldType.SHORT:
        return _fixed("<H" if unsigned else "<h")
    if code == FieldType.INT24:
        return _int24(unsigned)
    if code == FieldType.LONG:
        return _fixed("<I" if unsigned else "<i")
    if code == FieldType.LONGLONG:
        return _fixed("<Q" if unsigned else "<q")
    if code == FieldType.FLOAT:
        return _fixed("<f")
    if code == FieldType.DOUBLE:
        return _fixed("<d")
    if code == FieldType.NEWDECIMAL:
        return _decimal_reader(column.precision, column.decimals)
    if code in (FieldType.VARCHAR, FieldType.VAR_STRING, FieldType.STRING):
        encoding = _encoding(column)
        text = _text(2 if column.max_length > 255 else 1, encoding)
        if code != FieldType.STRING or encoding is not None:
            return text
        width = column.max_length

        def fixed_binary(data: bytes, pos: int) -> tuple[Any, int]:
            value, end = text(data, pos)
            return value.ljust(width, b"\0"), end

        return fixed_binary  # BINARY(n): the binlog drops the trailing zero bytes
    if code in (FieldType.BLOB, FieldType.TINY_BLOB, FieldType.MEDIUM_BLOB, FieldType.LONG_BLOB):
        return _text(column.length_size, _encoding(column))
    if code == FieldType.GEOMETRY:
        return _text(column.length_size, None)
    if code == FieldType.DATETIME2:
        return _datetime2(column.fsp)
    if code == FieldType.TIMESTAMP2:
        return _timestamp2(column.fsp)
    if code == FieldType.TIME2:
        return _time2(column.fsp)
    if code in (FieldType.DATE, FieldType.NEWDATE):
        return _date
    if code == FieldType.YEAR:

        def year(data: bytes, pos: int) -> tuple[Any, int]:
            return data[pos] + 1900, pos + 1

        return year
    if code == FieldType.ENUM and column.enum_values:
        labels = list(column.enum_values)
        size = column.size

        def enum(data: bytes, pos: int) -> tuple[Any, int]:
            index = int.from_bytes(data[pos : pos + size], "little")
            return (labels[index] if index < len(labels) else ""), pos + size

        return enum
    if code == FieldType.SET and column.set_values is not None:
        members = list(column.set_values)
        size = column.size

        def members_of(data: bytes, pos: int) -> tuple[Any, int]:
            mask = int.from_bytes(data[pos : pos + size], "little")
            chosen = [m for i, m in enumerate(members) if mask >> i & 1]
            return ",".join(chosen), pos + size

        return members_of
    if code == FieldType.BIT:
        size = column.bytes

        def bits(data: bytes, pos: int) -> tuple[Any, int]:
            return int.from_bytes(data[pos : pos + size], "big"), pos + size

        return bits
    return None  # JSON (MySQL binary JSON), old-style temporal types: the library decodes


class RowDecoder:
    """Reads the row images of a rows event straight from its bytes.

    ``mysql-replication`` decodes value by value through several method calls each; this
    reads the same FULL row images with one function per column (about 5x faster). Types it
    does not know leave a table to the library's decoder.
    """

    def __init__(self, readers: list[_ValueReader]) -> None:
        self.readers = readers
        self.width = len(readers)
        self.null_bytes = (self.width + 7) // 8

    @classmethod
    def for_columns(cls, columns: Sequence[Any]) -> RowDecoder | None:
        """A decoder for a table map's columns; None when a column's type is not read here."""
        readers = [_value_reader(c) for c in columns]
        if any(r is None for r in readers):
            return None
        return cls(readers)  # type: ignore[arg-type]

    def _image(self, data: bytes, pos: int) -> tuple[list[Any], int]:
        nulls = int.from_bytes(data[pos : pos + self.null_bytes], "little")
        pos += self.null_bytes
        values: list[Any] = []
        append = values.append
        if not nulls:  # the common case: no bit to test per column
            for read in self.readers:
                value, pos = read(data, pos)
                append(value)
            return values, pos
        for index, read in enumerate(self.readers):
            if nulls >> index & 1:
                append(None)
            else:
                value, pos = read(data, pos)
                append(value)
        return values, pos

    def rows(self, event: Any, images: int) -> list[Any] | None:
        """The event's rows (``images`` 2: before/after pairs); None when the event is not a
        plain FULL-image event this decoder can read."""
        wrapper = event.packet
        if getattr(wrapper, "_BinLogPacketWrapper__data_buffer", b""):
            return None
        full = (1 << self.width) - 1
        bitmaps = [event.columns_present_bitmap]
        if images == 2:
            bitmaps.append(event.columns_present_bitmap2)
        for bitmap in bitmaps:
            if int.from_bytes(bitmap, "little") & full != full:
                return None
        if getattr(event, "is_partial_json_update", False):
            return None
        packet = wrapper.packet
        start = packet._position
        data = packet._data[start : start + (event.event_size - wrapper.read_bytes)]
        pos, end = 0, len(data)
        out: list[Any] = []
        image = self._image
        if images == 1:
            while pos < end:
                values, pos = image(data, pos)
                out.append(values)
        else:
            while pos < end:
                before, pos = image(data, pos)
                after, pos = image(data, pos)
                out.append((before, after))
        return out
