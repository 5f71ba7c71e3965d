"""Arrow arrays of messages into a confluent-kafka producer, a batch per librdkafka call.

confluent-kafka's ``Producer.produce`` is a Python call per message: about 2 µs of CPU each on
the bench machine, the whole of the bench's produce limit loop, and more than syncx spends on
reading and encoding a row. librdkafka's own ``rd_kafka_produce_batch`` enqueues an array of
messages in one call, but confluent-kafka does not wrap it (its ``produce_batch`` takes a Python
dict per message). So :class:`BatchProducer` calls it through :mod:`ctypes`, on the librdkafka
that confluent-kafka loaded and the ``rd_kafka_t`` of a confluent-kafka ``Producer``: the first
field of its C object in every confluent-kafka since 1.0 (``Handle.rk``, after
``PyObject_HEAD``). Payloads and keys are pointers into the Arrow buffers; librdkafka copies
them (``RD_KAFKA_MSG_F_COPY``) before the call returns, and the call runs without the GIL. The
producer's configuration, transactions and flushes stay confluent-kafka's.

Partitions: for a producer configured with the ``murmur2_random`` partitioner, keyed messages
are partitioned here (:mod:`libs.kafka.murmur2`, the same function) and each partition's
messages go in one call for that partition: librdkafka's single-partition path, without a
partitioner call and a partition lookup per message. The partition count comes from the
topic's metadata, asked again every :data:`METADATA_AGE` seconds (a topic that gains
partitions gets keys moved as librdkafka's partitioner would move them, a little later).

Order: when the local queue is full, librdkafka fails that message and every later one of the
call with ``_QUEUE_FULL`` (never a later one alone), so producing the rest again after a short
wait keeps the order. Messages produced this way have no delivery report in Python: a
transactional producer's commit fails when one of them was not delivered, which is how the
exactly-once writer learns of it; the at-least-once writer, which needs the reports, and
platforms where the library cannot be found (no ``/proc/self/maps``, a confluent-kafka major
version other than 1 or 2) use ``produce`` per message instead, with the same results.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa

from libs.kafka.murmur2 import partitions, spans

__all__ = ["METADATA_AGE", "QUEUE_FULL", "TOO_LARGE", "BatchProducer"]

log = logging.getLogger(__name__)

QUEUE_FULL = -184
"""``RD_KAFKA_RESP_ERR__QUEUE_FULL``."""
TOO_LARGE = 10
"""``RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE``."""
_F_COPY = 0x2
_INVALID_ARG = -186
_PARTITION_UA = -1
METADATA_AGE = 60.0
"""Seconds a topic's partition count is used before its metadata is asked again."""

_MESSAGE = np.dtype(
    [
        ("err", "<i4"),
        ("_pad0", "<i4"),
        ("rkt", "<u8"),
        ("partition", "<i4"),
        ("_pad1", "<i4"),
        ("payload", "<u8"),
        ("len", "<u8"),
        ("key", "<u8"),
        ("key_len", "<u8"),
        ("offset", "<i8"),
        ("_private", "<u8"),
    ]
)
"""``rd_kafka_message_t`` on a 64-bit platform (72 bytes)."""


@cache
def _library() -> ctypes.CDLL | None:
    """The librdkafka confluent-kafka loaded, with the signatures used here; ``None`` when it
    cannot be found or trusted."""
    import confluent_kafka  # noqa: PLC0415 - the driver is imported on use

    if ctypes.sizeof(ctypes.c_void_p) != 8 or _MESSAGE.itemsize != 72:
        return None
    if confluent_kafka.version()[0].split(".")[0] not in ("1", "2"):
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "librdkafka" in line}
    if len(paths) != 1:
        return None
    lib = ctypes.CDLL(paths.pop())
    lib.rd_kafka_name.restype = ctypes.c_char_p
    lib.rd_kafka_name.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_type.restype = ctypes.c_int
    lib.rd_kafka_type.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_topic_new.restype = ctypes.c_void_p
    lib.rd_kafka_topic_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.rd_kafka_topic_destroy.restype = None
    lib.rd_kafka_topic_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_produce_batch.restype = ctypes.c_int
    lib.rd_kafka_produce_batch.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    return lib


def _handle(lib: ctypes.CDLL, producer: Any) -> int | None:
    """The ``rd_kafka_t *`` of a confluent-kafka ``Producer``, checked to be a producer's."""
    rk = ctypes.c_void_p.from_address(id(producer) + object.__basicsize__).value
    if not rk or lib.rd_kafka_type(rk) != 0:  # RD_KAFKA_PRODUCER
        return None
    name = lib.rd_kafka_name(rk) or b""
    return rk if name.startswith(b"rdkafka#producer-") else None


def _pointers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each value's address and length in a string or binary array (nulls: 0 and 0)."""
    starts, lengths = spans(array)
    data = array.buffers()[2]
    addresses = starts.astype(np.uint64) + np.uint64(data.address if data is not None else 0)
    lengths = lengths.astype(np.uint64)
    if array.null_count:
        missing = ~np.asarray(array.is_valid())
        addresses[missing] = 0
        lengths[missing] = 0
    return addresses, lengths


class BatchProducer:
    """Produces Arrow arrays of keys and values through one confluent-kafka ``Producer``."""

    def __init__(
        self, kafka: ModuleType, producer: Any, *, per_message: bool = False, murmur2: bool = False
    ) -> None:
        """``murmur2``: the producer's partitioner is ``murmur2_random`` (keyed messages are
        partitioned here, see the module docs)."""
        self.kafka = kafka
        self.producer = producer
        lib = None if per_message else _library()
        self._lib = lib
        self._rk = _handle(lib, producer) if lib is not None else None
        self._murmur2 = murmur2
        self._topics: dict[str, int] = {}
        self._counts: dict[str, tuple[int, float]] = {}

    @property
    def batched(self) -> bool:
        """Whether messages go through ``rd_kafka_produce_batch`` (else ``produce`` each)."""
        return self._rk is not None

    def produce(
        self, topic: str, keys: pa.Array | None, values: pa.Array, partition: int = _PARTITION_UA
    ) -> dict[int, str]:
        """Enqueue ``values`` (``keys[i]`` the key of ``values[i]``; null values are
        tombstones), waiting while the local queue is full; returns the index and error name
        of each message librdkafka refused for itself (over ``message.max.bytes``). Any other
        refusal raises ``KafkaException``."""
        if not len(values):
            return {}
        if self._rk is None:
            return self._one_by_one(topic, keys, values, partition)
        messages = np.zeros(len(values), _MESSAGE)
        messages["payload"], messages["len"] = _pointers(values)
        if keys is not None:
            messages["key"], messages["key_len"] = _pointers(keys)
        rkt = self._topic(topic)
        count = self._partition_count(topic) if partition == _PARTITION_UA else 0
        if keys is None or not count:
            return self._produce_batch(rkt, partition, messages)
        chosen = partitions(keys, count)
        # one stable sort puts each partition's messages together, in their produce order; the
        # messages are taken in that order as rows of words (a structured take is 4x slower)
        order = np.argsort(chosen, kind="stable")
        words = messages.view(np.uint64).reshape(len(messages), _MESSAGE.itemsize // 8)
        ordered = words[order].view(_MESSAGE).reshape(len(messages))
        bounds = [0, *(np.flatnonzero(np.diff(chosen[order])) + 1).tolist(), len(order)]
        refused: dict[int, str] = {}
        for start, end in itertools.pairwise(bounds):
            target = int(chosen[order[start]])
            for index, name in self._produce_batch(rkt, target, ordered[start:end]).items():
                refused[int(order[start + index])] = name
        return refused

    def _produce_batch(self, rkt: int, partition: int, messages: np.ndarray) -> dict[int, str]:
        """One ``rd_kafka_produce_batch`` of ``messages``, again from the first one the full
        queue refused until all are in; the refused messages' indexes and error names."""
        assert self._lib is not None
        refused: dict[int, str] = {}
        done = 0
        while done < len(messages):
            rest = messages[done:]
            self._lib.rd_kafka_produce_batch(rkt, partition, _F_COPY, rest.ctypes.data, len(rest))
            failed = np.flatnonzero(rest["err"])
            full = failed[rest["err"][failed] == QUEUE_FULL]
            end = int(full[0]) if len(full) else len(rest)  # from there on: all queue full
            for index in failed[failed < end]:
                refused[done + int(index)] = self._refusal(int(rest["err"][index]))
            if not len(full):
                break
            done += end
            self.producer.poll(0.005)
        return refused

    def _partition_count(self, topic: str) -> int:
        """The topic's partition count when this producer partitions keys itself, else 0."""
        if not self._murmur2:
            return 0
        count, since = self._counts.get(topic, (0, -METADATA_AGE))
        now = time.monotonic()
        if now - since >= METADATA_AGE:
            try:
                found = self.producer.list_topics(topic, timeout=10).topics.get(topic)
            except self.kafka.KafkaException:
                found = None
            count = len(found.partitions) if found is not None and found.error is None else 0
            self._counts[topic] = (count, now)
        return count

    def _refusal(self, code: int) -> str:
        """The name of an error librdkafka gave a single message; raises unless it is one the
        caller records as a dirty message."""
        error = self.kafka.KafkaError(code)
        if code != TOO_LARGE:
            raise self.kafka.KafkaException(error)
        return error.name()

    def _one_by_one(
        self, topic: str, keys: pa.Array | None, values: pa.Array, partition: int
    ) -> dict[int, str]:
        produce: Callable[..., None] = self.producer.produce
        refused: dict[int, str] = {}
        texts = values.to_pylist()
        names = keys.to_pylist() if keys is not None else [None] * len(texts)
        for index, (key, value) in enumerate(zip(names, texts, strict=True)):
            while True:
                try:
                    produce(topic, value, key, partition)
                    break
                except BufferError:
                    self.producer.poll(0.05)
                except self.kafka.KafkaException as exc:
                    error = exc.args[0]
                    if error.code() != TOO_LARGE:
                        raise
                    refused[index] = error.name()
                    break
        self.producer.poll(0)
        return refused

    def _topic(self, topic: str) -> int:
        rkt = self._topics.get(topic)
        if rkt is None:
            assert self._lib is not None
            rkt = self._lib.rd_kafka_topic_new(self._rk, topic.encode(), None)
            if not rkt:
                reason = f"librdkafka refuses a handle for topic {topic!r}"
                raise self.kafka.KafkaException(self.kafka.KafkaError(_INVALID_ARG, reason))
            self._topics[topic] = rkt
        return rkt

    def close(self) -> None:
        """Release the topic handles (before the producer itself goes)."""
        if self._lib is not None:
            for rkt in self._topics.values():
                self._lib.rd_kafka_topic_destroy(rkt)
        self._topics.clear()
