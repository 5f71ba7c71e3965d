"""Kafka's default key partitioner (murmur2, as the Java client and librdkafka's
``murmur2_random``), vectorized over an Arrow array of keys.

Choosing the partitions here lets the writer hand librdkafka one batch per partition, which
takes its single-partition path: no partitioner call and no partition lookup per message.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["partitions", "spans"]

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)


def _murmur2(rows: np.ndarray) -> np.ndarray:
    """murmur2 of each row of ``rows`` (uint8, one key of the same length per row)."""
    count, length = rows.shape
    h = np.full(count, _SEED ^ np.uint32(length), np.uint32)
    whole = length - length % 4
    if whole:
        words = np.ascontiguousarray(rows[:, :whole]).view("<u4")
        for i in range(words.shape[1]):
            k = words[:, i] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    tail = length % 4
    if tail:
        for i in reversed(range(tail)):
            h ^= rows[:, whole + i].astype(np.uint32) << np.uint32(8 * i)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def spans(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Where each value of a string or binary array starts in its data buffer, and its length
    (a null's length is whatever its offsets say: mostly 0)."""
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    bounds = np.frombuffer(array.buffers()[1], np.int64 if wide else np.int32)
    bounds = bounds[array.offset : array.offset + len(array) + 1].astype(np.int64)
    return bounds[:-1], np.diff(bounds)


def partitions(keys: pa.Array, count: int) -> np.ndarray:
    """The partition of each key among ``count`` partitions: ``(murmur2(key) & 0x7fffffff) %
    count``; -1 for a null key (librdkafka then picks one at random, as ``murmur2_random``)."""
    result = np.full(len(keys), -1, np.int32)
    if not len(keys):
        return result
    starts, lengths = spans(keys)
    data = keys.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    valid = np.asarray(keys.is_valid()) if keys.null_count else np.ones(len(keys), bool)
    for length in np.unique(lengths[valid]):
        members = np.flatnonzero(valid & (lengths == length))
        rows = raw[starts[members, None] + np.arange(length)]
        hashed = _murmur2(rows) & np.uint32(0x7FFFFFFF)
        result[members] = (hashed % np.uint32(count)).astype(np.int32)
    return result
