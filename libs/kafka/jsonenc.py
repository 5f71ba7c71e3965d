"""Arrow columns to JSON text, column-wise: one JSON document per row without per-value Python.

A message per row is the Kafka writer's unit, and building a ``dict`` per row and
``json.dumps`` of it costs more than producing the message. Here every column is turned into
its JSON text with Arrow compute kernels (numbers and booleans as they print, strings escaped and
quoted, temporal values as quoted ISO text, nulls as ``null``, structs as nested objects), and a
row's document is the element-wise join of ``"name":`` and the column texts. Binary and other
types without a text kernel go through Python (base64 for binary), column by column.

Strings are escaped for ``"`` and ``\\`` and the common control characters; a string holding any
other control character is encoded by :func:`json.dumps` (rare in practice, still correct).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_column", "json_object", "json_objects"]

_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_OTHER_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _quoted(text: pa.Array) -> pa.Array:
    """``"text"`` with JSON escapes (nulls stay null)."""
    escaped = text
    for old, new in _ESCAPES:
        escaped = pc.replace_substring(escaped, old, new)
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    odd = pc.match_substring_regex(text, _OTHER_CONTROL)
    if len(text) and pc.any(odd).as_py():
        fixed = [
            json.dumps(value) if bad else done
            for value, done, bad in zip(
                text.to_pylist(), quoted.to_pylist(), odd.to_pylist(), strict=True
            )
        ]
        return pa.array(fixed, pa.string())
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
    elif (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or (pa.types.is_temporal(kind) and not pa.types.is_duration(kind))
    ):
        text = _quoted(pc.cast(column, pa.string()))
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
    return pc.fill_null(text, "null")


def json_object(
    names: Sequence[str],
    columns: Sequence[pa.Array | pa.ChunkedArray],
    valid: pa.Array | None = None,
) -> pa.Array:
    """One JSON object per row from named columns (``null`` where ``valid`` is false)."""
    parts: list[pa.Array | str] = []
    for index, (name, column) in enumerate(zip(names, columns, strict=True)):
        prefix = ("{" if index == 0 else ",") + json.dumps(name) + ":"
        parts.extend([prefix, json_column(column)])
    if not parts:
        length = len(valid) if valid is not None else 0
        text = pa.array(["{}"] * length, pa.string())
    else:
        parts.append("}")
        text = pc.binary_join_element_wise(*parts, "")
    if valid is not None:
        text = pc.if_else(valid, text, pa.scalar("null", pa.string()))
    return text


def json_objects(batch: pa.RecordBatch, names: Sequence[str] | None = None) -> pa.Array:
    """Each row of ``batch`` as a JSON object, under ``names`` (default: the batch's names)."""
    keys = list(names) if names is not None else batch.schema.names
    return json_object(keys, batch.columns)
