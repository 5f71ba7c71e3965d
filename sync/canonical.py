"""One form per value, whatever Arrow type carries it, so two copies of a table compare.

``syncx verify`` reads a source and its copy through different readers (a MySQL table and a
Parquet folder), whose Arrow types may differ for the same value: ``int32`` and ``int64``,
``float32`` and ``float64``, a UTC ``TIMESTAMP`` and a naive one, a ``TIME`` and the Hive string
it was written as. :func:`canonical_value` maps each of them to one Arrow type and value (cheap
casts, to be hashed), :func:`canonical_text` to one string (to be shown).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["canonical_text", "canonical_value", "time_text"]


def time_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """TIME values (``time32``/``time64``/``duration``) as MySQL writes them:
    ``[-]HH:MM:SS[.ffffff]``, hours past 24 as they are (``838:59:59``), the fraction only when
    there is one; NULL stays NULL."""
    unit = pa.time64("us") if pa.types.is_time(column.type) else pa.duration("us")
    micros = pc.cast(pc.cast(column, unit, safe=False), pa.int64())
    size = pc.abs(micros)
    seconds = pc.divide(size, 1_000_000)
    fraction = pc.remainder(size, 1_000_000)

    def padded(values: pa.Array, width: int = 2) -> pa.Array:
        return pc.utf8_lpad(pc.cast(values, pa.string()), width, "0")

    return pc.binary_join_element_wise(
        pc.if_else(pc.less(micros, 0), "-", ""),
        padded(pc.divide(seconds, 3600)),
        ":",
        padded(pc.remainder(pc.divide(seconds, 60), 60)),
        ":",
        padded(pc.remainder(seconds, 60)),
        pc.if_else(
            pc.equal(fraction, 0), "", pc.binary_join_element_wise(".", padded(fraction, 6), "")
        ),
        "",
    )


def canonical_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The canonical text of every value (NULL stays NULL).

    Numbers in their shortest decimal form (floats as ``float64``), decimals with their scale,
    timestamps as naive UTC with microseconds, dates ISO, TIME values as MySQL writes them,
    binary as lowercase hex, everything else as Arrow casts it to text.
    """
    t = column.type
    if pa.types.is_string(t):
        return column
    if pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return pc.cast(column, pa.string())
    if pa.types.is_floating(t):
        return pc.cast(pc.cast(column, pa.float64()), pa.string())
    if pa.types.is_timestamp(t):
        return pc.cast(pc.cast(column, pa.timestamp("us"), safe=False), pa.string())
    if pa.types.is_time(t) or pa.types.is_duration(t):
        return time_text(column)
    if pa.types.is_date(t):
        return pc.cast(pc.cast(column, pa.date32()), pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        # no hex kernel in Arrow: the only per-value Python here, for binary columns alone
        return pa.array([None if v is None else v.hex() for v in column.to_pylist()], pa.string())
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def canonical_value(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The value in one Arrow type per family (NULL stays NULL), so that equal values hash alike.

    Integers and booleans as ``int64``, floats as ``float64``, timestamps as naive UTC
    microseconds and dates as days (``int64``), strings and binary as they are; decimals,
    ``BIGINT UNSIGNED`` and TIME values as :func:`canonical_text` (their copies are often text:
    Hive has no unsigned or TIME type).
    """
    t = column.type
    if (pa.types.is_integer(t) and t != pa.uint64()) or pa.types.is_boolean(t):
        return pc.cast(column, pa.int64())
    if pa.types.is_floating(t):
        return pc.cast(column, pa.float64())
    if pa.types.is_timestamp(t):
        return pc.cast(pc.cast(column, pa.timestamp("us"), safe=False), pa.int64())
    if pa.types.is_date(t):
        return pc.cast(pc.cast(pc.cast(column, pa.date32()), pa.int32()), pa.int64())
    if pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pc.cast(column, pa.binary())
    if pa.types.is_binary(t):
        return column
    return canonical_text(column)
