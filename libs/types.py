"""Column types: ChunJun/SQL type names to Arrow types, and casting batches to a target schema.

A value that cannot be cast is not a crash: :func:`conform` returns the rows that converted and a
dirty record (``conversion`` or ``null``) for each row that did not.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from sync.canonical import time_text
from sync.contract import DirtyRecord

__all__ = ["arrow_type", "cast", "conform", "java_date_format", "row_of", "time_text"]

_SIMPLE: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "byte": pa.int8(),
    "tinyint": pa.int8(),
    "short": pa.int16(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "integer": pa.int32(),
    "mediumint": pa.int32(),
    "long": pa.int64(),
    "bigint": pa.int64(),
    "biginteger": pa.decimal128(38, 0),
    "float": pa.float32(),
    "double": pa.float64(),
    "real": pa.float64(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "bit": pa.bool_(),
    "string": pa.string(),
    "varchar": pa.string(),
    "char": pa.string(),
    "character": pa.string(),
    "text": pa.string(),
    "json": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "datetime": pa.timestamp("us"),
    "time": pa.time64("us"),
    "binary": pa.binary(),
    "bytes": pa.binary(),
    "blob": pa.binary(),
    "varbinary": pa.binary(),
}
_DECIMAL = re.compile(r"^(?:decimal|numeric|bigdecimal)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")
_SIZED = re.compile(r"^([a-z ]+?)\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\)(?:\s+unsigned)?$")


def arrow_type(name: str, *, default_string: bool = False) -> pa.DataType:
    """The Arrow type for a column type name (``bigint``, ``decimal(12,2)``, ``varchar(32)``).

    ``default_string`` follows ChunJun's stream plugins, where an unknown name means string.
    """
    key = name.strip().lower()
    match = _DECIMAL.match(key)
    if match:
        precision = int(match.group(1) or 38)
        scale = int(match.group(2) or (18 if match.group(1) is None else 0))
        return (
            pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        )
    unsigned = key.endswith(" unsigned")
    key = key.removesuffix(" unsigned").strip()
    sized = _SIZED.match(key)
    if sized:
        key = sized.group(1).strip()
    if unsigned and key in {"bigint", "long"}:
        return pa.uint64()
    if key in _SIMPLE:
        return _SIMPLE[key]
    if default_string:
        return pa.string()
    msg = f"unknown column type '{name}'; known: {', '.join(sorted(_SIMPLE))}, decimal(p,s)"
    raise ValueError(msg)


def row_of(batch: pa.RecordBatch, index: int) -> dict[str, object]:
    """One row as a dict (for dirty records and printing only: never on a hot path)."""
    return batch.slice(index, 1).to_pylist()[0]


def cast(column: pa.Array, kind: pa.DataType) -> pa.Array:
    """``column`` as ``kind``, safely (a lossy value raises). A decimal becomes a float through
    its exact text: Arrow's decimal-to-float cast divides in floating point and can miss the
    nearest float by one unit in the last place (2.555334071108395 as ``decimal(16, 15)`` became
    2.5553340711083954), where parsing the text rounds correctly."""
    if pa.types.is_decimal(column.type) and pa.types.is_floating(kind):
        column = pc.cast(column, pa.string())
    return pc.cast(column, kind, safe=True)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
    """Cast ``batch`` column by column (by position) to ``schema``; bad rows become dirty.

    The common case is one vectorized cast per column, done once. Only when a cast fails are the
    failing rows found one by one, reported, and dropped from the batch (and the rest cast again).
    """
    if batch.num_columns != len(schema):
        msg = (
            f"the reader delivers {batch.num_columns} column(s) {batch.schema.names} but the writer "
            f"expects {len(schema)} {schema.names}"
        )
        raise ValueError(msg)
    if batch.schema.equals(schema):
        return batch, []
    bad: dict[int, DirtyRecord] = {}
    columns: list[pa.Array] = []
    failed = False
    for position, target in enumerate(schema):
        column = batch.column(position)
        if column.type != target.type:
            try:
                column = cast(column, target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                failed = True
                _find_bad_values(batch, position, target, bad)
        columns.append(column)
        if not target.nullable and column.null_count:
            for index in pc.indices_nonzero(pc.is_null(column)).to_pylist():
                bad.setdefault(
                    index,
                    DirtyRecord(
                        row_of(batch, index), f"{target.name} must not be null", "null", target.name
                    ),
                )
    if bad or failed:
        keep = pa.array([i not in bad for i in range(batch.num_rows)])
        batch = batch.filter(keep)
        columns = [cast(batch.column(i), f.type) for i, f in enumerate(schema)]
    return pa.RecordBatch.from_arrays(columns, schema=schema), list(bad.values())


def _find_bad_values(
    batch: pa.RecordBatch, position: int, target: pa.Field, bad: dict[int, DirtyRecord]
) -> None:
    column = batch.column(position)
    for index in range(len(column)):
        if index in bad:
            continue
        try:
            cast(column.slice(index, 1), target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            error = f"{target.name}: cannot convert {column.type} to {target.type}: {exc}"
            bad[index] = DirtyRecord(row_of(batch, index), error, "conversion", target.name)


_JAVA_DATE = (
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("hh", "%I"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("SSSSSS", "%f"),
    ("SSS", "%f"),
    ("a", "%p"),
)


def java_date_format(pattern: str) -> str:
    """A Java ``SimpleDateFormat`` pattern (ChunJun's column ``format``) as a ``strptime``
    format: common letters only, ``'quoted'`` text literal, ``''`` a quote."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "'":
            end = pattern.find("'", i + 1)
            end = len(pattern) if end < 0 else end
            out.append(pattern[i + 1 : end].replace("%", "%%") if end > i + 1 else "'")
            i = end + 1
            continue
        for java, python in _JAVA_DATE:
            if pattern.startswith(java, i):
                out.append(python)
                i += len(java)
                break
        else:
            out.append("%%" if pattern[i] == "%" else pattern[i])
            i += 1
    return "".join(out)
