"""Arrow columns to JSON text, column-wise: one JSON document per row without per-value Python.

A message per row is the Kafka writer's unit, and building a ``dict`` per row and
``json.dumps`` of it costs more than producing the message. Here every column is turned into
its JSON text with Arrow compute kernels (numbers and booleans as they print, strings escaped and
quoted, temporal values as quoted ISO text, nulls as ``null``, structs as nested objects), and a
row's document is the element-wise join of ``"name":`` and the column texts. Binary and other
types without a text kernel go through Python (base64 for binary), column by column.

Strings are escaped for ``"`` and ``\\``; a string holding a control character is encoded by
:func:`json.dumps` (rare in practice, still correct). Times
with a zone are written in UTC with a ``Z``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_column", "json_object", "json_objects"]


def _text(value: str) -> pa.Scalar:
    """An Arrow string scalar: compute calls given Python strings convert them on every call,
    and pyarrow's conversion retries a failed optional import each time (slow without pandas)."""
    return pa.scalar(value, pa.string())


_QUOTE = _text('"')
_EMPTY = _text("")
_NULL = _text("null")
_QUOTE_Z = _text('Z"')
_CONTROL = re.compile(r"[\x00-\x1f]")


def _quoted(text: pa.Array) -> pa.Array:
    """``"text"`` with JSON escapes (nulls stay null).

    The bytes of the whole column are scanned once (NumPy) for ``"``, ``\\`` and control
    characters; ``"`` and ``\\`` are then escaped column-wise, and a value holding a control
    character is encoded by :func:`json.dumps`, which is always right and rarely needed."""
    data = text.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    escaped = text
    for byte, old, new in ((0x5C, "\\", "\\\\"), (0x22, '"', '\\"')):
        if (raw == byte).any():
            escaped = pc.replace_substring(escaped, pattern=old, replacement=new)
    quoted = pc.binary_join_element_wise(_QUOTE, escaped, _QUOTE, _EMPTY)
    if (raw < 0x20).any():
        return pa.array(
            [
                json.dumps(value) if value is not None and _CONTROL.search(value) else done
                for value, done in zip(text.to_pylist(), quoted.to_pylist(), strict=True)
            ],
            pa.string(),
        )
    return quoted


def json_column(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value's JSON text (``null`` for nulls), as a string array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_null(kind):
        text = pa.nulls(len(column), pa.string())
    elif pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        text = pc.if_else(finite, pc.cast(column, pa.string()), pa.scalar(None, pa.string()))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _quoted(pc.cast(column, pa.string()))
    elif pa.types.is_timestamp(kind) and kind.tz is not None:
        utc = pc.cast(column.view(pa.timestamp(kind.unit)), pa.string())
        text = pc.binary_join_element_wise(_QUOTE, utc, _QUOTE_Z, _EMPTY)
    elif pa.types.is_temporal(kind) and not pa.types.is_duration(kind):
        text = pc.binary_join_element_wise(_QUOTE, pc.cast(column, pa.string()), _QUOTE, _EMPTY)
    elif pa.types.is_struct(kind):
        return json_object(
            [kind.field(i).name for i in range(kind.num_fields)],
            [column.field(i) for i in range(kind.num_fields)],
            column.is_valid(),
        )
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        text = pa.array(
            [
                None if v is None else json.dumps(base64.b64encode(v).decode())
                for v in column.to_pylist()
            ],
            pa.string(),
        )
    else:
        text = pa.array(
            [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
            pa.string(),
        )
    return pc.fill_null(text, _NULL)


def json_object(
    names: Sequence[str],
    columns: Sequence[pa.Array | pa.ChunkedArray],
    valid: pa.Array | None = None,
) -> pa.Array:
    """One JSON object per row from named columns (``null`` where ``valid`` is false)."""
    parts: list[pa.Array | pa.Scalar] = []
    for index, (name, column) in enumerate(zip(names, columns, strict=True)):
        prefix = ("{" if index == 0 else ",") + json.dumps(name) + ":"
        parts.extend([_text(prefix), json_column(column)])
    if not parts:
        length = len(valid) if valid is not None else 0
        text = pa.array(["{}"] * length, pa.string())
    else:
        parts.append(_text("}"))
        text = pc.binary_join_element_wise(*parts, _EMPTY)
    if valid is not None:
        text = pc.if_else(valid, text, _NULL)
    return text


def json_objects(batch: pa.RecordBatch, names: Sequence[str] | None = None) -> pa.Array:
    """Each row of ``batch`` as a JSON object, under ``names`` (default: the batch's names)."""
    keys = list(names) if names is not None else batch.schema.names
    return json_object(keys, batch.columns)
