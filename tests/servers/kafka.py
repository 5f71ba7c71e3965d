"""Reading a test topic back whole, from the private Tansu broker or ``$KAFKA_BOOTSTRAP``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition


def consume_all(
    bootstrap: str, topic: str, timeout: float = 60.0, *, committed: bool = True
) -> list[Any]:
    """Every message of ``topic`` (all its partitions) that a ``read_committed`` consumer sees
    (a ``read_uncommitted`` one when ``committed`` is false), in the order polled.

    It reads until every partition has signalled its end (``enable.partition.eof``) at or past
    its high watermark as the read began, not until the topic has been quiet for a while: a busy
    machine can pause longer than any quiet period, and a read-back that stops early reports
    messages as lost. A partition that does not reach its end within ``timeout`` fails the
    read-back, naming it. A ``read_committed`` read's watermark and end are the partition's last
    stable offset; Tansu can keep that below committed messages for good (and then answers 0 for
    the watermark): see ``TestKafkaCrash`` in ``tests/test_conformance_kafka.py``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    found: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                missing = sorted(set(ends) - done)
                msg = f"reading {topic} back: partitions {missing} did not end in {timeout:g}s"
                raise AssertionError(msg)
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                found.append(message)
            elif (
                error.code() == KafkaError._PARTITION_EOF
                and message.offset() >= ends[message.partition()]
            ):
                done.add(message.partition())
    finally:
        consumer.close()
    return found
