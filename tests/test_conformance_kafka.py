"""The conformance kit (:mod:`sync.testing`) run by ``kafkareader`` and ``kafkawriter``.

The reader reads a fresh uuid-named topic seeded with known JSON messages, bounded by
``stopAt: latest``; the writer writes exactly-once into a fresh topic, read back with a
``read_committed`` consumer; the crash round runs kafkareader → kafkawriter. Only the plugins'
public surface is used: they are loaded by name and configured as a job file configures them.

Tansu (the private broker) hides open transactions from ``read_committed`` consumers but not
aborted ones, and a consumer cannot tell a message of an aborted transaction from one of a
committed transaction (the ``syncx.txn`` header names the transaction, not its outcome; the
commit/abort markers are control records librdkafka never delivers). So the writer's exact
checks (:class:`TestKafkaWriter`, and the crash round's exact end state) need a real Kafka
(``$KAFKA_BOOTSTRAP``); on Tansu the crash round checks that no message is lost or invented.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, ClassVar

import pyarrow as pa
import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sync.testing import (
    CrashConformance,
    JobCase,
    ReaderCase,
    ReaderConformance,
    WriterCase,
    WriterConformance,
)

pytestmark = pytest.mark.kafka

REAL_KAFKA = bool(os.environ.get("KAFKA_BOOTSTRAP"))
PARTITIONS = 3
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
COLUMNS = [
    {"name": "id", "type": "bigint"},
    {"name": "name", "type": "string"},
    {"name": "amount", "type": "double"},
]


def _rows(count: int, first: int = 1) -> pa.Table:
    ids = list(range(first, first + count))
    return pa.table(
        {
            "id": ids,
            "name": [f"név-{i}" if i % 4 else None for i in ids],
            "amount": [i * 0.5 for i in ids],
        },
        schema=SCHEMA,
    )


def _topic(bootstrap: str, rows: pa.Table | None = None) -> str:
    """A new uuid-named topic of :data:`PARTITIONS` partitions, holding ``rows`` as JSON."""
    name = f"kit-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(10)
    if rows is not None and rows.num_rows:
        producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        for row in rows.to_pylist():
            producer.produce(name, json.dumps(row).encode(), partition=row["id"] % PARTITIONS)
        assert producer.flush(10) == 0
    return name


def _read_back(bootstrap: str, topic: str, quiet: float = 1.0) -> pa.Table:
    """The rows a ``read_committed`` consumer sees in ``topic`` (parsed from the JSON values)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kit-check-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[dict[str, Any]] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            found.append(json.loads(message.value()))
            last = time.monotonic()
    finally:
        consumer.close()
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in SCHEMA.names} for row in found], schema=SCHEMA
    )


def _reader(bootstrap: str, topic: str) -> dict[str, Any]:
    return {
        "name": "kafkareader",
        "parameter": {
            "topic": topic,
            "mode": "earliest-offset",
            "codec": "json",
            "stopAt": "latest",
            "groupId": f"g-{topic}",
            "column": COLUMNS,
            "consumerSettings": {"bootstrap.servers": bootstrap},
        },
    }


def _writer(bootstrap: str, topic: str) -> dict[str, Any]:
    return {
        "name": "kafkawriter",
        "parameter": {
            "topic": topic,
            "tableFields": SCHEMA.names,
            "partitionAssignColumns": ["id"],
            "semantic": "exactly-once",
            "producerSettings": {"bootstrap.servers": bootstrap},
        },
    }


_EXACT_READ_BACK = pytest.mark.skipif(
    not REAL_KAFKA,
    reason="Tansu's read_committed consumers also return aborted transactions' records: the "
    "exact read-back needs a real Kafka ($KAFKA_BOOTSTRAP)",
)


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


class TestKafkaReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, bootstrap: str) -> ReaderCase:
        rows = _rows(40)
        spec = _reader(bootstrap, _topic(bootstrap, rows))
        return ReaderCase(spec["name"], spec["parameter"], rows, ["id"], channels=2, batch_rows=6)


@_EXACT_READ_BACK
class TestKafkaWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, bootstrap: str) -> WriterCase:
        topic = _topic(bootstrap)
        spec = _writer(bootstrap, topic)
        return WriterCase(
            spec["name"],
            spec["parameter"],
            _rows(30),
            ["id"],
            read_back=lambda: _read_back(bootstrap, topic),
        )


@pytest.mark.slow
class TestKafkaCrash(CrashConformance):
    """kafkareader (``stopAt: latest``) → kafkawriter (exactly-once), killed and restored.

    Exact against a real Kafka. On Tansu the aborted transactions' records (the originals of a
    transaction a restore wrote again) stay visible, so the kit's at-least-once check runs
    there: every message arrives and no message that was never read.
    """

    exactly_once: ClassVar[bool] = REAL_KAFKA

    @pytest.fixture
    def job_case(self, bootstrap: str) -> JobCase:
        rows = _rows(300)
        source, target = _topic(bootstrap, rows), _topic(bootstrap)
        job = {
            "job": {
                "content": [
                    {"reader": _reader(bootstrap, source), "writer": _writer(bootstrap, target)}
                ],
                "setting": {"speed": {"channel": 2}},
            }
        }
        return JobCase(job, rows, ["id"], lambda: _read_back(bootstrap, target))
