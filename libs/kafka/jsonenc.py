"""Arrow columns to JSON text, column-wise: one JSON document per row without per-value Python.

A message per row is the Kafka writer's unit, and building a ``dict`` per row and
``json.dumps`` of it costs more than producing the message. Here every column is turned into
its JSON text with Arrow compute kernels (numbers and booleans as they print, strings escaped and
quoted, temporal values as quoted ISO text, nulls as ``null``, structs as nested objects), and a
row's document is the element-wise join of ``"name":`` and the column texts. Binary and other
types without a text kernel go through Python (base64 for binary), column by column.

Strings are escaped for ``"`` and ``\\``; a string holding a control character is encoded by
:func:`json.dumps` (rare in practice, still correct). Times with a zone are written in UTC with
a ``Z``. A row is one join: the quotes of a column without nulls are literals of that join, not
a join of their own (which was most of the encoding's time).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_column", "json_object", "json_objects"]


@functools.lru_cache(maxsize=4096)
def _text(value: str) -> pa.Scalar:
    """An Arrow string scalar: compute calls given Python strings convert them on every call,
    and pyarrow's conversion retries a failed optional import each time (slow without pandas).
    Kept per text: a job's literals (names, separators) repeat in every batch, and each
    scalar made costs a few µs."""
    return pa.scalar(value, pa.string())


_EMPTY = _text("")
_NULL = _text("null")
_NONE = pa.scalar(None, pa.string())


def _escaped(text: pa.Array) -> pa.Array | None:
    """The JSON escapes of a string array, without its quotes (nulls stay null); ``None`` when
    a value holds a control character (the caller encodes those with :func:`json.dumps`).

    The column's bytes (only its own: a batch sliced from a larger one shares its buffer) are
    searched once each for ``\\`` and ``"`` (``bytes`` search) and their least byte is taken
    (NumPy) for control characters; ``"`` and ``\\`` are then escaped column-wise where they
    occur."""
    _validity, offsets, data = text.buffers()
    if not len(text) or data is None:
        return text
    bounds = np.frombuffer(offsets, np.int32, len(text) + 1, text.offset * 4)
    raw = data[int(bounds[0]) : int(bounds[-1])].to_pybytes()
    if raw and np.frombuffer(raw, np.uint8).min() < 0x20:
        return None
    for old, new in (("\\", "\\\\"), ('"', '\\"')):
        if old.encode() in raw:
            text = pc.replace_substring(text, pattern=old, replacement=new)
    return text


def _pieces(column: pa.Array | pa.ChunkedArray) -> tuple[str, pa.Array, str]:
    """A column's JSON text as (opening literal, values, closing literal): strings and times are
    ``"`` + text + ``"``. The values are null where the JSON is ``null``. Kept apart so that a
    column without nulls needs no join of its own: its literals join its neighbours'."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _pieces(column.dictionary_decode())
    if pa.types.is_null(kind):
        return "", pa.nulls(len(column), pa.string()), ""
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return "", pc.cast(column, pa.string()), ""
    if pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        return "", pc.if_else(finite, pc.cast(column, pa.string()), _NONE), ""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.cast(column, pa.string())
        escaped = _escaped(text)
        if escaped is not None:
            return '"', escaped, '"'
        dumped = [None if v is None else json.dumps(v) for v in text.to_pylist()]
        return "", pa.array(dumped, pa.string()), ""
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        return '"', pc.cast(column.view(pa.timestamp(kind.unit)), pa.string()), 'Z"'
    if pa.types.is_temporal(kind) and not pa.types.is_duration(kind):
        return '"', pc.cast(column, pa.string()), '"'
    if pa.types.is_struct(kind):
        fields = [kind.field(i).name for i in range(kind.num_fields)]
        text = json_object(fields, [column.field(i) for i in range(kind.num_fields)])
        return "", pc.if_else(column.is_valid(), text, _NONE), ""
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        encoded = [
            None if v is None else json.dumps(base64.b64encode(v).decode())
            for v in column.to_pylist()
        ]
        return "", pa.array(encoded, pa.string()), ""
    dumped = [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()]
    return "", pa.array(dumped, pa.string()), ""


def _joined(opening: str, values: pa.Array, closing: str) -> pa.Array:
    """``opening`` + value + ``closing`` for each value, ``null`` for nulls."""
    if opening or closing:
        values = pc.binary_join_element_wise(_text(opening), values, _text(closing), _EMPTY)
    return pc.fill_null(values, _NULL) if values.null_count else values


def json_column(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value's JSON text (``null`` for nulls), as a string array."""
    return _joined(*_pieces(column))


def json_object(
    names: Sequence[str],
    columns: Sequence[pa.Array | pa.ChunkedArray],
    valid: pa.Array | None = None,
) -> pa.Array:
    """One JSON object per row from named columns (``null`` where ``valid`` is false).

    One join makes every row: the names, separators and the quotes of columns without nulls are
    literals between the column texts; a column with nulls is joined with its quotes first."""
    parts: list[pa.Array | pa.Scalar] = []
    literal = "{"
    for index, (name, column) in enumerate(zip(names, columns, strict=True)):
        literal += ("," if index else "") + json.dumps(name) + ":"
        opening, values, closing = _pieces(column)
        if values.null_count:
            values, opening, closing = _joined(opening, values, closing), "", ""
        parts.extend([_text(literal + opening), values])
        literal = closing
    if not parts:
        length = len(valid) if valid is not None else 0
        text = pa.array(["{}"] * length, pa.string())
    else:
        parts.append(_text(literal + "}"))
        text = pc.binary_join_element_wise(*parts, _EMPTY)
    if valid is not None:
        text = pc.if_else(valid, text, _NULL)
    return text


def json_objects(batch: pa.RecordBatch, names: Sequence[str] | None = None) -> pa.Array:
    """Each row of ``batch`` as a JSON object, under ``names`` (default: the batch's names)."""
    keys = list(names) if names is not None else batch.schema.names
    return json_object(keys, batch.columns)
