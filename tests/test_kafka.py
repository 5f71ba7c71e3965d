"""kafkareader / kafkawriter against a real broker: Tansu (scripts/kafka-test-server.sh), or the
Kafka at ``$KAFKA_BOOTSTRAP``.

Tansu implements transactions, commit tokens (``send_offsets_to_transaction``), group offsets and
fencing, but its ``read_committed`` consumers also see aborted records: exactly-once tests assert
on what the broker implements (the token, fencing, the messages a recovery writes again, keyed end
states) and count exact message totals only against a real Kafka (``REAL_KAFKA``).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from libs import fs
from libs.kafka.batch import BatchProducer, _library
from libs.kafka.jsonenc import json_objects
from libs.kafka.murmur2 import partitions
from libs.kafka.settings import translate, validate_settings
from readers.kafka.params import KafkaReaderParams, parse_offsets
from sync.contract import JobContext
from sync.errors import FatalError, JobFailedError, JobFileError
from sync.jobfile import load_job
from sync.model import Setting
from tests.conftest import (
    REPO,
    RunCli,
    compat_file,
    compat_files,
    stream_job,
    syncx_command,
)
from tests.crash import Kill, mixed_kill_plan, run_until_done
from tests.servers.kafka import consume_all
from writers.kafka import KafkaTxn, KafkaWriter, KafkaWriterParams
from writers.kafka.spool import commit_marker

pytestmark = pytest.mark.kafka

REAL_KAFKA = bool(os.environ.get("KAFKA_BOOTSTRAP"))
JOBS = REPO / "jobs"


# -- helpers ---------------------------------------------------------------------------------


def new_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1 if not REAL_KAFKA else -1)])
    for future in futures.values():
        future.result(10)
    return name


def produce(
    bootstrap: str, topic: str, values: list[bytes | None], keys: list[Any] | None = None
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for index, value in enumerate(values):
        key = keys[index] if keys else None
        producer.produce(topic, value, key)
    assert producer.flush(10) == 0


def committed(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    consumer.close()
    return {tp.partition: tp.offset for tp in found}


def kafka_reader(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "kafkareader",
        "parameter": {
            "topic": topic,
            "mode": "earliest-offset",
            "codec": "json",
            "stopAt": "latest",
            "groupId": f"g-{topic}",
            "consumerSettings": {"bootstrap.servers": bootstrap},
            **extra,
        },
    }


def kafka_writer(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "kafkawriter",
        "parameter": {
            "topic": topic,
            "producerSettings": {"bootstrap.servers": bootstrap},
            **extra,
        },
    }


def job_of(
    reader: dict[str, Any], writer: dict[str, Any], setting: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"job": {"content": [{"reader": reader, "writer": writer}], "setting": setting or {}}}


def ok(done: Any) -> Any:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


# -- unit: settings, parameters, encoding ------------------------------------------------------


def test_java_settings_are_translated_or_dropped_and_secrets_masked() -> None:
    settings = validate_settings(
        {
            "bootstrap.servers": "h1:9092, h2:9092",
            "zookeeper.connect": "zk:2181",
            "value.serializer": "org.apache.kafka.common.serialization.StringSerializer",
            "buffer.memory": 33554432,
            "max.request.size": 2097152,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": 'PlainLoginModule required username="app" password="hunter2";',
        },
        "producer",
    )
    assert "hunter2" not in repr(settings)
    config, dropped = translate(settings, "producer")
    assert dropped == ["zookeeper.connect", "value.serializer"]
    assert config["bootstrap.servers"] == "h1:9092,h2:9092"
    assert config["queue.buffering.max.kbytes"] == "32768"
    assert config["message.max.bytes"] == "2097152"
    assert config["sasl.username"] == "app" and config["sasl.password"] == "hunter2"


def test_bad_parameters_name_their_path(write_job: Callable[..., Path]) -> None:
    job = job_of(
        kafka_reader("h:1", "t", consumerSettings={"bootstrap.servers": "h:1", "fetch.bogus": 1}),
        kafka_writer("h:1", "t", tableIdToTopicMapping={"db.t": "x"}),
    )
    with pytest.raises(JobFileError) as caught:
        load_job(write_job(job))
    text = str(caught.value)
    assert "job.content[0].reader.parameter.consumerSettings: 'fetch.bogus': unknown key" in text
    assert "either topic or tableIdToTopicMapping" in text
    with pytest.raises(ValueError, match=r"bootstrap\.servers"):
        KafkaReaderParams.model_validate({"topic": "t", "consumerSettings": {}})
    with pytest.raises(ValueError, match="must be in tableFields"):
        KafkaWriterParams.model_validate(
            {
                "topic": "t",
                "producerSettings": {"bootstrap.servers": "h:1"},
                "tableFields": ["a"],
                "partitionAssignColumns": ["b"],
            }
        )
    assert parse_offsets("partition:0,offset:42;partition:1,offset:300", ["t"]) == {
        ("t", 0): 42,
        ("t", 1): 300,
    }
    with pytest.raises(ValueError, match="name the topic"):
        parse_offsets("partition:0,offset:1", ["a", "b"])


def test_json_encoding_is_valid_json_for_every_type() -> None:
    batch = pa.record_batch(
        {
            "i": [1, None],
            "s": ['q"uo\\te\n\x01', None],
            "f": [1.5, float("nan")],
            "d": pa.array([Decimal("12.30"), None], pa.decimal128(10, 2)),
            "t": pa.array([dt.datetime(2024, 5, 1, 12, 0, 1), None], pa.timestamp("us")),
            "b": [b"\x00\xff", None],
            "ok": [True, None],
        }
    )
    rows = [json.loads(text) for text in json_objects(batch).to_pylist()]
    assert rows[0] == {
        "i": 1,
        "s": 'q"uo\\te\n\x01',
        "f": 1.5,
        "d": 12.3,
        "t": "2024-05-01 12:00:01.000000",
        "b": "AP8=",
        "ok": True,
    }
    assert rows[1] == dict.fromkeys(rows[0])


def test_json_encoding_of_columns_without_nulls_folds_their_quotes_into_the_row() -> None:
    """Columns without nulls have no join of their own: their quotes are literals of the row's
    one join. Their escapes, zones, non-finite floats and nested objects must come out alike."""
    moment = dt.datetime(2024, 5, 1, 12, 0, 1)
    batch = pa.record_batch(
        {
            "s": ['q"uo\\te', "plain"],
            "c": ["ctl\x01", "x"],
            "t": pa.array([moment, moment], pa.timestamp("us")),
            "z": pa.array([moment, moment], pa.timestamp("us", tz="UTC")),
            "f": [float("nan"), 2.5],
            "n": pa.array([{"a": 1, "b": 'x"y'}, {"a": 2, "b": "z"}]),
            "i": [1, 2],
        }
    )
    assert all(column.null_count == 0 for column in batch.columns)
    rows = [json.loads(text) for text in json_objects(batch).to_pylist()]
    assert rows == [
        {
            "s": 'q"uo\\te',
            "c": "ctl\x01",
            "t": "2024-05-01 12:00:01.000000",
            "z": "2024-05-01 12:00:01.000000Z",
            "f": None,
            "n": {"a": 1, "b": 'x"y'},
            "i": 1,
        },
        {
            "s": "plain",
            "c": "x",
            "t": "2024-05-01 12:00:01.000000",
            "z": "2024-05-01 12:00:01.000000Z",
            "f": 2.5,
            "n": {"a": 2, "b": "z"},
            "i": 2,
        },
    ]


# -- runs against the broker ---------------------------------------------------------------------


def test_stream_to_kafka_to_parquet_commits_group_offsets(
    bootstrap: str, write_job: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap)
    columns = [{"name": "id", "type": "id"}, {"name": "name", "type": "string"}]
    writer = kafka_writer(
        bootstrap,
        topic,
        tableFields=["id", "name"],
        partitionAssignColumns=["id"],
        partitionStrategy="hash-by-key",
        producerSettings={"bootstrap.servers": bootstrap, "zookeeper.connect": "zk:2181"},
    )
    source = stream_job(columns, [3000], writer)
    done = ok(run_cli("run", write_job(source, "w.json")))
    assert "zookeeper.connect" in done.stderr  # the one warning naming dropped keys
    assert "exactly-once" in done.stderr
    messages = consume_all(bootstrap, topic)
    assert sorted(json.loads(m.value())["id"] for m in messages) == list(range(3000))
    by_partition: dict[str, set[int]] = {}
    for message in messages:
        by_partition.setdefault(message.key().decode(), set()).add(message.partition())
    assert all(len(parts) == 1 for parts in by_partition.values())  # a key stays on one partition
    assert len({m.partition() for m in messages}) == 3

    out = tmp_path / "out"
    reader = kafka_reader(
        bootstrap,
        topic,
        column=[{"name": "id", "type": "bigint"}, {"name": "name"}, {"name": "message"}],
    )
    sink = {"name": "filewriter", "parameter": {"path": str(out), "fileType": "parquet"}}
    read = write_job(job_of(reader, sink, {"speed": {"channel": 2}}), "r.json")
    ok(run_cli("run", read))
    table = pq.read_table(out)
    assert sorted(table.column("id").to_pylist()) == list(range(3000))
    assert json.loads(table.column("message")[0].as_py())["id"] == table.column("id")[0].as_py()
    offsets = committed(bootstrap, f"g-{topic}", topic)
    ends = {p: max(m.offset() for m in messages if m.partition() == p) + 1 for p in range(3)}
    assert all(offsets[p] >= ends[p] for p in range(3)), (offsets, ends)

    # the next run starts where this one ended (not by mode); a new partition is read too
    partitions = 3
    if REAL_KAFKA:  # Tansu has no CreatePartitions
        partitions = 4
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for index in range(3000, 3010):
        producer.produce(
            topic, json.dumps({"id": index, "name": "n"}), partition=index % partitions
        )
    producer.flush(10)
    ok(run_cli("run", read, "--restore", "latest-or-new"))
    assert sorted(pq.read_table(out).column("id").to_pylist()) == list(range(3010))


def test_stream_stops_on_sigterm_and_restores_exactly(
    bootstrap: str, write_job: Callable[..., Path], tmp_path: Path
) -> None:
    topic = new_topic(bootstrap, 2)
    produce(bootstrap, topic, [json.dumps({"id": i}).encode() for i in range(100)])
    out = tmp_path / "out"
    reader = kafka_reader(bootstrap, topic, column=[{"name": "id", "type": "bigint"}])
    del reader["parameter"]["stopAt"]  # endless
    sink = {"name": "filewriter", "parameter": {"path": str(out), "fileType": "parquet"}}
    setting = {"restore": {"isRestore": True, "checkpointInterval": 0.5}}
    path = write_job(job_of(reader, sink, setting), "r.json")
    state = tmp_path / "state"

    def run_until(rows: int, *args: str) -> None:
        process = subprocess.Popen(
            [*syncx_command("run", str(path), "--state-dir", str(state), *args)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _rows_in(out) < rows:
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]

    run_until(100)
    produce(bootstrap, topic, [json.dumps({"id": i}).encode() for i in range(100, 150)])
    run_until(150, "--restore", "latest")
    ids = pq.read_table(out).column("id").to_pylist()
    assert sorted(ids) == list(range(150)), "a restore neither repeats nor skips"


def _rows_in(folder: Path) -> int:
    files = list(folder.glob("*.parquet")) if folder.exists() else []
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def test_specific_offsets_and_a_timestamp_bound(
    bootstrap: str, write_job: Callable[..., Path], run_cli: RunCli
) -> None:
    topic = new_topic(bootstrap, 1)
    produce(bootstrap, topic, [json.dumps({"id": i}).encode() for i in range(10)])
    time.sleep(1.0)
    bound = int(time.time() * 1000)
    time.sleep(0.2)
    produce(bootstrap, topic, [json.dumps({"id": i}).encode() for i in range(10, 15)])
    reader = kafka_reader(
        bootstrap,
        topic,
        mode="specific-offsets",
        offset="partition:0,offset:3",
        stopAt=bound,
        column=[{"name": "id", "type": "int"}],
    )
    sink = {"name": "streamwriter", "parameter": {"print": True}}
    done = ok(run_cli("run", write_job(job_of(reader, sink))))
    assert [int(v) for v in done.stdout.split()] == list(range(3, 10))


def test_dirty_json_and_blank_messages(
    bootstrap: str, write_job: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap, 1)
    values = [b'{"id": 1}', b"not json", b"", None, b'{"id": 2, "extra": [1]}', b'{"id": "x"}']
    produce(bootstrap, topic, values)
    reader = kafka_reader(
        bootstrap, topic, column=[{"name": "id", "type": "int"}], blankIgnore=True
    )
    sink = {"name": "streamwriter", "parameter": {"print": True}}
    setting = {"errorLimit": {"record": 5}, "dirty": {"path": str(tmp_path / "dirty")}}
    done = ok(run_cli("run", write_job(job_of(reader, sink, setting))))
    assert done.stdout.split() == ["1", "2"]
    dirty = [
        json.loads(line)
        for f in (tmp_path / "dirty").rglob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert len(dirty) == 2, dirty
    assert any("not a JSON object" in str(d) for d in dirty)


def test_missing_topic_no_broker_and_secrets(
    bootstrap: str, write_job: Callable[..., Path], run_cli: RunCli
) -> None:
    missing = f"absent-{uuid.uuid4().hex[:6]}"
    reader = kafka_reader(bootstrap, missing)
    done = run_cli("run", write_job(job_of(reader, {"name": "streamwriter"}), "a.json"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"job.content[0].reader.parameter.topic: topic(s) {missing} do not exist" in done.stderr
    assert "createTopic" in done.stderr
    assert (
        missing not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    )

    settings = {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "app",
        "sasl.password": "s3cr3t-pw",
        "socket.timeout.ms": 3000,
    }
    reader = kafka_reader("127.0.0.1:1", "t", consumerSettings=settings)
    done = run_cli("run", write_job(job_of(reader, {"name": "streamwriter"}), "b.json"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no Kafka broker answers at 127.0.0.1:1" in done.stderr
    assert "consumerSettings.bootstrap.servers" in done.stderr
    assert "s3cr3t-pw" not in done.stderr + done.stdout


def test_oversized_message_is_dirty(
    bootstrap: str, write_job: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap, 1)
    columns = [{"name": "id", "type": "id"}, {"name": "pad", "type": "string", "value": "x" * 3000}]
    settings = {"bootstrap.servers": bootstrap, "message.max.bytes": 2000}
    writer = kafka_writer(bootstrap, topic, producerSettings=settings)
    job = stream_job(
        columns, [3], writer, {"errorLimit": {"record": 10}, "dirty": {"path": str(tmp_path / "d")}}
    )
    done = ok(run_cli("run", write_job(job)))
    assert "dirty 3" in done.stderr
    text = "".join(f.read_text() for f in (tmp_path / "d").rglob("*.jsonl"))
    assert "message.max.bytes" in text


def test_batches_keep_their_order_through_a_full_queue_and_refuse_only_oversize_messages(
    bootstrap: str,
) -> None:
    """librdkafka's batch call, with a local queue of 50 messages for 3,000: every message
    arrives once, in order; one over ``message.max.bytes`` is refused by index, not raised."""
    topic = new_topic(bootstrap, 1)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "queue.buffering.max.messages": 50,
            "message.max.bytes": 2000,
            "log_level": 0,
        }
    )
    client = BatchProducer(confluent_kafka, producer)
    assert client.batched, "the batch call is used on this platform"
    values = [f'{{"n":{i}}}' for i in range(3000)]
    values[1234] = "x" * 3000
    keys = pa.array([str(i % 7) for i in range(3000)])
    refused = client.produce(topic, keys, pa.array(values))
    assert refused == {1234: "MSG_SIZE_TOO_LARGE"}
    assert producer.flush(30) == 0
    client.close()
    messages = consume_all(bootstrap, topic)
    expected = [v for i, v in enumerate(values) if i != 1234]
    assert [m.value().decode() for m in messages] == expected
    assert [m.key().decode() for m in messages] == [str(i % 7) for i in range(3000) if i != 1234]


def test_partitioned_batches_refuse_oversize_messages_by_their_own_index(bootstrap: str) -> None:
    """Keyed messages partitioned by syncx go out sorted by partition: a refused message is
    still reported by its index in the batch given, and the others arrive in their order."""
    topic = new_topic(bootstrap, 3)
    config = {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "message.max.bytes": 2000,
        "log_level": 0,
    }
    producer = Producer(config)
    client = BatchProducer(confluent_kafka, producer, murmur2=True)
    values = [f"v{i}" for i in range(600)]
    for big in (5, 301, 598):
        values[big] = "x" * 3000
    keys = pa.array([f'{{"id":{i}}}' for i in range(600)])
    refused = client.produce(topic, keys, pa.array(values))
    assert refused == dict.fromkeys((5, 301, 598), "MSG_SIZE_TOO_LARGE")
    assert producer.flush(30) == 0
    client.close()
    by_partition: dict[int, list[int]] = {}
    for message in consume_all(bootstrap, topic):
        by_partition.setdefault(message.partition(), []).append(int(message.value()[1:]))
    assert len(by_partition) == 3
    assert sorted(n for found in by_partition.values() for n in found) == [
        i for i in range(600) if i not in (5, 301, 598)
    ]
    assert all(found == sorted(found) for found in by_partition.values())


def test_keys_partition_as_librdkafkas_murmur2() -> None:
    """syncx's vectorized murmur2 against librdkafka's own (exported) partitioner: every key
    length's tail, empty keys, a sliced and a large-offset array; null keys get -1."""
    lib = _library()
    assert lib is not None, "librdkafka is found on this platform"
    reference = lib.rd_kafka_msg_partitioner_murmur2
    reference.restype = ctypes.c_int32
    reference.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32]
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(3000)]
    keys += [b"", b"21", b"foobar", b"abc"]
    for count in (1, 3, 7, 2**31 - 1):
        expected = [reference(None, k, len(k), count) for k in keys]
        assert partitions(pa.array(keys, pa.binary()), count).tolist() == expected
        assert partitions(pa.array(keys, pa.large_binary()), count).tolist() == expected
        assert partitions(pa.array([b"x", *keys])[1:], count).tolist() == expected
    assert partitions(pa.array([b"abc", None]), 2**31 - 1).tolist() == [479470107, -1]


def test_batches_land_on_the_partitions_librdkafka_would_choose(bootstrap: str) -> None:
    """Keyed messages partitioned by syncx (a batch call per partition) land where
    ``produce()`` with the ``murmur2_random`` partitioner puts the same keys, in their order;
    keyless ones arrive too."""
    topic = new_topic(bootstrap, 5)
    config = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "log_level": 0}
    plain = Producer(config)
    keys = [f'{{"id":{i % 400}}}' for i in range(2000)]
    for key in keys:
        plain.produce(topic, b"plain", key.encode())
    assert plain.flush(30) == 0
    batched = Producer(config)
    client = BatchProducer(confluent_kafka, batched, murmur2=True)
    assert client.batched, "the batch call is used on this platform"
    values = pa.array([f"batch {i}" for i in range(2000)] + ["keyless"] * 10)
    assert client.produce(topic, pa.array([*keys, *[None] * 10]), values) == {}
    assert batched.flush(30) == 0
    client.close()
    by_source: dict[bytes, dict[str, set[int]]] = {b"plain": {}, b"batch": {}}
    order: dict[int, list[int]] = {}
    keyless = 0
    for message in consume_all(bootstrap, topic):
        value = message.value()
        if value == b"keyless":
            keyless += 1
            continue
        source = value.split(b" ")[0]
        by_source[source].setdefault(message.key().decode(), set()).add(message.partition())
        if source == b"batch":
            order.setdefault(message.partition(), []).append(int(value.split(b" ")[1]))
    assert keyless == 10
    assert by_source[b"batch"] == by_source[b"plain"]
    assert all(len(found) == 1 for found in by_source[b"plain"].values())
    assert len(order) == 5, "the keys spread over every partition"
    assert all(numbers == sorted(numbers) for numbers in order.values())


# -- exactly-once: tokens, fencing, recovery ------------------------------------------------------


def _writer(bootstrap: str, topic: str, job: str, tmp_path: Path, **extra: Any) -> KafkaWriter:
    params = KafkaWriterParams.model_validate(
        {"topic": topic, "producerSettings": {"bootstrap.servers": bootstrap}, **extra}
    )
    ctx = JobContext.of(job, tmp_path, Setting(), run_id="r", checkpoints=True)
    writer = KafkaWriter(params, ctx)
    writer.check()
    return writer


def _rows(start: int, count: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "id": list(range(start, start + count)),
            "v": [f"v{i}" for i in range(start, start + count)],
        }
    )


def test_a_transaction_lost_with_its_process_is_written_again_once(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap)
    writer = _writer(
        bootstrap,
        topic,
        "recover",
        tmp_path,
        partitionAssignColumns=["id"],
        tableFields=["id", "v"],
    )
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    task.write(_rows(0, 50))
    first = task.prepare(1)
    task.commit(first)
    task.write(_rows(50, 70))
    lost: KafkaTxn = task.prepare(2)  # checkpoint 2 stored, then the process dies before commit
    assert lost.count == 70 and lost.checkpoint == 2
    stored = KafkaTxn.from_json(json.loads(json.dumps(lost.to_json())))

    spool = writer.spool_path(lost.spool)
    assert spool.exists()
    # where the lost transaction's messages end: what is written from there is the rewrite
    uncommitted = consume_all(bootstrap, topic, committed=False)
    ends = {m.partition(): m.offset() + 1 for m in uncommitted}

    again = _writer(
        bootstrap,
        topic,
        "recover",
        tmp_path,
        partitionAssignColumns=["id"],
        tableFields=["id", "v"],
    )
    again.begin([stored], fresh=False)  # fences the dead producer, writes checkpoint 2 again
    assert not spool.exists()
    again.begin([stored], fresh=False)  # idempotent: the token says it is committed now
    token = committed(bootstrap, writer.token_group(0), topic, 1)
    assert token[0] == 2
    messages = consume_all(bootstrap, topic)
    rewritten = [m for m in messages if m.offset() >= ends.get(m.partition(), 0)]
    assert sorted(json.loads(m.value())["id"] for m in rewritten) == list(range(50, 120))
    ids = [json.loads(m.value())["id"] for m in messages]
    assert set(ids) == set(range(120))
    if REAL_KAFKA:  # Tansu's read_committed also returns the aborted originals
        assert sorted(ids) == list(range(120))
    for partition in range(3):  # the rewrite keeps partition order
        seen = [json.loads(m.value())["id"] for m in rewritten if m.partition() == partition]
        assert seen == sorted(seen)


def _prepared(
    bootstrap: str, topic: str, job: str, tmp_path: Path
) -> tuple[KafkaWriter, Any, KafkaTxn]:
    """A fresh writer whose one task wrote 10 rows and prepared checkpoint 1."""
    writer = _writer(bootstrap, topic, job, tmp_path)
    writer.begin([], fresh=True)
    task = writer.open(0, 1, None)
    task.write(_rows(0, 10))
    return writer, task, task.prepare(1)


def test_a_committed_spool_is_deleted_in_the_background_and_gone_at_close(
    bootstrap: str, tmp_path: Path
) -> None:
    """The commit leaves the spool's deletion (slow where the disk discards freed blocks) to a
    background thread, and the task's close waits for it: a finished run leaves no spool."""
    writer, task, handle = _prepared(bootstrap, new_topic(bootstrap), "removal", tmp_path)
    spool = writer.spool_path(handle.spool)
    hold = threading.Event()
    held = fs._remover.submit(hold.wait)  # the deletion queues behind this
    try:
        task.commit(handle)
        assert commit_marker(spool).exists()
        assert spool.exists(), "the commit waited for the deletion"
    finally:
        hold.set()
    held.result()
    task.close()
    assert not spool.exists()
    assert commit_marker(spool).exists()


def test_a_lost_transaction_without_its_spool_fails_naming_it(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap)
    writer, _task, lost = _prepared(bootstrap, topic, "nospool", tmp_path)
    # checkpoint 1 stored, then the process dies before commit
    spool = writer.spool_path(lost.spool)
    spool.unlink()  # the state folder's tmp/ emptied by hand
    again = _writer(bootstrap, topic, "nospool", tmp_path)
    with pytest.raises(JobFailedError, match=f"its spool {spool}, which holds its 10 messages"):
        again.begin([lost], fresh=False)


def test_a_handle_from_before_the_spools_restores_when_committed_and_fails_plainly_if_not(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = new_topic(bootstrap)
    _, task, handle = _prepared(bootstrap, topic, "v1", tmp_path)
    task.commit(handle)
    old = {**handle.to_json(), "v": 1, "tag": "t/1", "starts": {f"{topic}:0": 0}}
    del old["spool"]
    upgraded = KafkaTxn.from_json(old)
    assert upgraded.spool == "" and upgraded.checkpoint == 1
    _writer(bootstrap, topic, "v1", tmp_path).begin([upgraded], fresh=False)  # the token: done
    lost = KafkaTxn.from_json({**old, "checkpoint": 2})
    with pytest.raises(JobFailedError, match="written by a syncx older than the transaction"):
        _writer(bootstrap, topic, "v1", tmp_path).begin([lost], fresh=False)


def test_a_second_job_with_the_same_id_is_fenced(bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap, 1)
    first = _writer(bootstrap, topic, "fenced", tmp_path)
    first.begin([], fresh=True)
    task = first.open(0, 1, None)
    task.write(_rows(0, 5))
    second = _writer(bootstrap, topic, "fenced", tmp_path)
    second.begin([], fresh=True)
    with pytest.raises(
        FatalError, match=f"transactional id {first.transactional_id(0, 0)} was taken over"
    ):
        task.commit(task.prepare(1))


def test_at_least_once_writes_every_row_across_a_kill(bootstrap: str, tmp_path: Path) -> None:
    """``semantic: at-least-once``: an idempotent producer flushed at each checkpoint; a run
    SIGKILLed after its first checkpoint and restored loses no row (some may come twice)."""
    topic = new_topic(bootstrap)
    columns = [{"name": "id", "type": "id"}, {"name": "v", "type": "string"}]
    writer = kafka_writer(
        bootstrap,
        topic,
        tableFields=["id", "v"],
        partitionAssignColumns=["id"],
        semantic="at-least-once",
    )
    job = stream_job(columns, [6000], writer, {"restore": {"isRestore": True}})
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 3000
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    report = run_until_done(
        path,
        tmp_path / "state",
        [Kill(after=0.3, after_output=" stored")],
        extra_args=["--checkpoint-interval", "0.3"],
    )
    assert [run.killed for run in report.runs] == [True, False], report.summary()
    assert "at-least-once" in report.runs[-1].output
    ids = [json.loads(m.value())["id"] for m in consume_all(bootstrap, topic)]
    assert set(ids) == set(range(6000)), "no row lost"


@pytest.mark.slow
def test_killed_runs_lose_no_key(bootstrap: str, tmp_path: Path) -> None:
    """stream → Kafka, exactly-once, SIGKILLed at random moments and at every crash point."""
    topic = new_topic(bootstrap)
    columns = [{"name": "id", "type": "id"}, {"name": "v", "type": "string"}]
    writer = kafka_writer(bootstrap, topic, tableFields=["id", "v"], partitionAssignColumns=["id"])
    job = stream_job(
        columns, [20_000, 20_000], writer, {"speed": {"channel": 2}, "restore": {"isRestore": True}}
    )
    job["job"]["content"][0]["reader"]["parameter"]["permitsPerSecond"] = 10_000
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    # the first run, with every row still to come, dies between storing checkpoint 2 and
    # committing its transactions: a restore must commit them (a later run may have too
    # little left for its second checkpoint to carry messages)
    plan = [
        Kill(crash_at="checkpoint-stored@2"),
        *mixed_kill_plan(
            random.Random(11),
            random_kills=2,
            window=(1.0, 3.0),
            crash_points=["writer-prepared@3", "writer-committed@2"],
        ),
    ]
    report = run_until_done(
        path, tmp_path / "state", plan, extra_args=["--checkpoint-interval", "0.5"], run_timeout=90
    )
    assert report.runs[-1].exit_code == 0
    assert report.runs[0].killed, report.summary()
    restored = "".join(run.output for run in report.runs[1:])
    assert "did not commit before the process stopped" in restored
    # Tansu's read_committed view can end for good before committed messages when the two
    # channels commit at once (TestKafkaCrash in test_conformance_kafka.py): read it all there
    messages = consume_all(bootstrap, topic, committed=REAL_KAFKA)
    keys = [(json.loads(m.key())["id"], json.loads(m.value())["v"]) for m in messages]
    assert {k for k, _ in keys} == set(range(20_000))  # ids repeat per channel: both present
    assert len(set(keys)) == 40_000, "no row lost"
    if REAL_KAFKA:
        assert len(keys) == 40_000, "none written twice"


# -- ChunJun example files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    compat_files(
        "chunjun/kafka__*.json",
        "chunjun/binlog__binlog_kafka*.json",
        "chunjun-1.10-docs/example__kafka_*.json",
    ),
    ids=str,
)
def test_chunjun_kafka_examples_validate_unchanged(path: Path) -> None:
    try:
        load_job(path)
    except JobFileError as exc:
        kafka_issues = [
            i
            for i in exc.issues
            if "kafka" in str(i).lower() or (".writer" in i.path and "kafka" in path.name)
        ]
        assert not kafka_issues, f"{path.name}: {kafka_issues}"


def test_chunjun_kafka_stream_example_runs_with_hosts_replaced(
    bootstrap: str, run_cli: RunCli, tmp_path: Path
) -> None:
    source = compat_file("chunjun/kafka__kafka_stream.json")
    topic = new_topic(bootstrap, 1)
    text = source.read_text().replace("localhost:9092", bootstrap).replace('"da"', f'"{topic}"')
    job = json.loads(text)
    job["job"]["content"][0]["reader"]["parameter"]["stopAt"] = "latest"
    row = {
        "id": 1,
        "name": "a",
        "money": 1.5,
        "dateone": "2024-01-01 00:00:00",
        "age": 3,
        "datethree": "2024-01-01 00:00:00",
        "datesix": "2024-01-01 00:00:00",
        "datenigth": "2024-01-01 00:00:00",
        "dtdate": "2024-01-01",
        "dttime": "10:00:00",
        "dtime": "2024-01-02 03:04:05",
    }
    produce(bootstrap, topic, [json.dumps(row).encode()])
    path = tmp_path / "chunjun.json"
    path.write_text(json.dumps(job))
    done = ok(run_cli("run", path))
    assert done.stdout.startswith("1,a,1.5")
    assert "2024-01-02 03:04:05" in done.stdout
