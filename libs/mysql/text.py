"""An Arrow batch as ``LOAD DATA`` text or SQL ``VALUES`` rows, built with Arrow compute."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from libs.types import time_text

Form = Literal["text", "hex", "plain", "quoted", "bit"]
"""How a column is written: ``text`` (escaped string), ``hex`` (binary, as hex digits),
``plain`` (numbers), ``quoted`` (decimals, floats, dates and times: their text), ``bit``
(an unsigned number loaded into a BIT column)."""


def column_form(field: pa.Field, bit: bool) -> Form:
    """How a target column of Arrow type ``field.type`` is written."""
    t = field.type
    if bit:
        return "bit"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "hex"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "plain"
    return "quoted"


_HEX_DIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _hex(array: pa.Array) -> pa.Array:
    """A binary array as upper-case hex digits (a string array), nulls kept."""
    if not pa.types.is_binary(array.type):
        array = array.cast(pa.binary())
    count = len(array)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=count + 1, offset=array.offset * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)[start:end]
        if buffers[2] is not None and end > start
        else np.empty(0, dtype=np.uint8)
    )
    digits = np.empty(data.size * 2, dtype=np.uint8)
    digits[0::2] = _HEX_DIGITS[data >> 4]
    digits[1::2] = _HEX_DIGITS[data & 15]
    new_offsets = ((offsets - start) * 2).astype(np.int32)
    hexed = pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(new_offsets), pa.py_buffer(digits)]
    )
    if array.null_count:
        hexed = pc.if_else(array.is_null(), pa.scalar(None, pa.string()), hexed)
    return hexed


def _as_text(array: pa.Array) -> pa.Array:
    """Numbers, decimals, dates and times as MySQL reads them (UTC for zoned timestamps)."""
    t = array.type
    if pa.types.is_boolean(t):
        array = array.cast(pa.int8())
    elif pa.types.is_timestamp(t) and t.tz is not None:
        array = array.cast(pa.timestamp(t.unit))
    elif pa.types.is_duration(t):
        return time_text(array)
    return array.cast(pa.string())


_TSV_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\x00", "\\0"))
_SQL_ESCAPES = (
    ("\\", "\\\\"),
    ("'", "\\'"),
    ("\x00", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\x1a", "\\Z"),
)


def _escape(array: pa.Array, escapes: Sequence[tuple[str, str]]) -> pa.Array:
    pattern = "[" + "".join(re.escape(c) for c, _ in escapes) + "]"
    if not pc.any(pc.match_substring_regex(array, pattern)).as_py():
        return array
    for char, replacement in escapes:
        array = pc.replace_substring(array, char, replacement)
    return array


def _column_text(array: pa.Array, form: Form, *, sql: bool) -> pa.Array:
    """One column as text for ``LOAD DATA`` (``sql=False``) or a SQL ``VALUES`` list."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if form == "hex":
        text = _hex(array)
        if sql:
            text = pc.binary_join_element_wise("X'", text, "'", "")
    elif form == "text":
        text = array.cast(pa.string())
        text = _escape(text, _SQL_ESCAPES if sql else _TSV_ESCAPES)
        if sql:
            text = pc.binary_join_element_wise("'", text, "'", "")
    else:
        text = _as_text(array)
        if sql and form == "quoted":
            text = pc.binary_join_element_wise("'", text, "'", "")
    null = "NULL" if sql else "\\N"
    return pc.fill_null(text, null) if text.null_count else text


def tsv_text(batch: pa.RecordBatch, forms: Sequence[Form]) -> pa.Buffer:
    """``batch`` as ``LOAD DATA`` input: fields by tab, rows by newline, ``\\`` escapes, ``\\N``
    for NULL, binary columns as hex (loaded with ``UNHEX``). One buffer, no per-row Python."""
    columns = [_column_text(batch.column(i), form, sql=False) for i, form in enumerate(forms)]
    rows = pc.binary_join_element_wise(*columns, "\t") if len(columns) > 1 else columns[0]
    lines = pc.binary_join_element_wise(rows, "", "\n")
    return _data(lines)


def sql_values(batch: pa.RecordBatch, forms: Sequence[Form]) -> list[bytes]:
    """Each row of ``batch`` as a SQL row constructor ``(v1,v2,...)`` (UTF-8 bytes)."""
    columns = [_column_text(batch.column(i), form, sql=True) for i, form in enumerate(forms)]
    inner = pc.binary_join_element_wise(*columns, ",") if len(columns) > 1 else columns[0]
    rows = pc.binary_join_element_wise("(", inner, ")", "")
    return [value.encode("utf-8") for value in rows.to_pylist()]


def _data(array: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array without nulls (its data buffer's used part)."""
    count = len(array)
    if count == 0:
        return pa.py_buffer(b"")
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=count + 1, offset=array.offset * 4)
    return buffers[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


# -- XA -----------------------------------------------------------------------------------------

# -- misc ---------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (always quoted)."""
    return "`" + name.replace("`", "``") + "`"
