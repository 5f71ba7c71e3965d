"""Kafka benchmarks against the private broker, each with its physical limit measured in the same run.

    .venv/bin/python bench/kafka_bench.py [--messages 1000000] [--rows 2000000] [--lag-seconds 20]

1. **Consume**: ``--messages`` JSON order messages in a 3-partition topic. The limit: a
   confluent-kafka consume loop that only counts messages (3 partitions assigned). The job:
   ``kafkareader`` (codec json, 7 typed columns, 3 channels, ``stopAt: latest``) → ``filewriter``
   Parquet. Ratio job / limit (target 0.7). Peak RSS of the job at ``--messages`` and at a
   fifth of it (flat when it does not grow with the message count).
2. **Produce**: the ``orders`` table (``--rows``, bench/orders.py) into a 3-partition topic by
   ``mysqlreader → kafkawriter`` exactly-once (keyed by id, hash-by-key, 2 channels). The limit:
   a produce loop of the same number of pre-serialized ~200-byte messages (idempotent producer,
   acks=all, one flush). Ratio job / limit (target 0.6); the same messages through
   librdkafka's batch call (as the writer produces them) are printed beside it. With the
   private broker, the CPU time of each process (the bench's producer, syncx, Tansu, MariaDB) is
   read from ``/proc`` around both runs and printed per message, with what the machine's cores
   leave syncx per row at 0.6 of the limit once Tansu and MariaDB have had theirs: the budget
   the target must fit.
3. **Lag**: an endless ``binlogreader → kafkawriter`` job (exactly-once, checkpoints every
   0.5 s: a change becomes visible when its checkpoint's transaction commits) while 5,000
   changes/s run on the source; a read_committed consumer measures, for every inserted row, the
   time from its source transaction to its arrival (target: p99 under 2 s).

Rates are messages (rows) per second of a real ``syncx run`` process, start-up included. With
the private broker, each limit and each job starts on a restarted, empty Tansu (see
:func:`broker`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.binlog_bench import ChangeLoad, _database, _gtid, percentiles  # noqa: E402
from bench.orders import create_orders, settle  # noqa: E402
from libs.kafka.batch import BatchProducer  # noqa: E402
from tests.servers.mariadb import MariaDB, ensure_server  # noqa: E402

SYNCX = [sys.executable, "-c", "from sync.cli import main; main()"]


def broker(*, empty: bool = False) -> str:
    """``$KAFKA_BOOTSTRAP``, else the private Tansu broker (started when needed; restarted
    ``empty`` when asked: its memory storage slows down with every message it keeps, which a
    real Kafka's log does not, so each measurement of a pair starts on an empty broker)."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        return given
    env = {**os.environ, "PYTHON": sys.executable}
    script = str(REPO / "scripts" / "kafka-test-server.sh")
    if empty:
        subprocess.run([script, "stop"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([script, "start"], check=True, env=env, stdout=subprocess.DEVNULL)
    return f"127.0.0.1:{os.environ.get('SYNCX_TEST_KAFKA_PORT', '19092')}"


def topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(10)
    return name


def messages(count: int) -> list[bytes]:
    """``count`` pre-serialized JSON orders (~150-200 bytes each)."""
    return [
        json.dumps(
            {
                "id": i,
                "user_id": i % 9973,
                "sku": f"SKU-{i % 5000:05d}",
                "qty": i % 7 + 1,
                "price": f"{(i % 10000) / 100:.2f}",
                "status": "paid",
                "created_at": "2024-01-01 10:00:00.000000",
            }
        ).encode()
        for i in range(count)
    ]


def raw_produce(bootstrap: str, name: str, values: list[bytes]) -> float:
    """The produce limit: pre-serialized messages, idempotent, acks=all, one flush; msg/s."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "log_level": 0,
        }
    )
    producer.list_topics(timeout=10)  # connected before the clock starts: the limit has no start-up
    started = time.perf_counter()
    for index, value in enumerate(values):
        while True:
            try:
                producer.produce(name, value, str(index).encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return len(values) / (time.perf_counter() - started)


def raw_produce_batched(bootstrap: str, name: str, values: list[bytes]) -> float:
    """The same messages as :func:`raw_produce` through librdkafka's batch call (4,096 a call,
    as syncx's writer makes them): what the library can do without a Python call a message."""
    import confluent_kafka  # noqa: PLC0415 - beside the names imported above

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "log_level": 0,
        }
    )
    client = BatchProducer(confluent_kafka, producer)
    array = pa.array(values, pa.binary())
    keys = pa.array([str(i).encode() for i in range(len(values))], pa.binary())
    producer.list_topics(timeout=10)
    started = time.perf_counter()
    for start in range(0, len(values), 4096):
        client.produce(name, keys.slice(start, 4096), array.slice(start, 4096))
    producer.flush(120)
    elapsed = time.perf_counter() - started
    client.close()
    return len(values) / elapsed


def raw_consume(bootstrap: str, name: str, count: int) -> float:
    """The consume limit: 3 partitions assigned, messages only counted; msg/s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{name}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(name, p, 0) for p in range(3)])
    seen = 0
    started = time.perf_counter()
    while seen < count:
        seen += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


_MEASURE = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "used = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(used.ru_utime + used.ru_stime, used.ru_maxrss); sys.exit(done.returncode)"
)
"""Runs a command and prints its CPU seconds and peak RSS (KiB): the job's alone, not the bench's
other children."""


@dataclass(frozen=True)
class Job:
    """A finished job run: wall seconds, CPU seconds, peak RSS in MB."""

    seconds: float
    cpu: float
    rss: float


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The private Tansu broker's pid (None for a broker at ``$KAFKA_BOOTSTRAP``)."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return None
    port = os.environ.get("SYNCX_TEST_KAFKA_PORT", "19092")
    folder = Path(os.environ.get("SYNCX_TEST_KAFKA_DIR", f"/tmp/syncx-kafka-{port}"))
    return int((folder / "tansu.pid").read_text())


def mariadb_pid(server: MariaDB) -> int:
    """The test MariaDB's pid (it runs on this machine)."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@pid_file")
            (pid_file,) = cur.fetchone()
    finally:
        conn.close()
    return int(Path(pid_file).read_text())


def run_job(job: dict[str, Any], folder: Path, name: str) -> Job:
    """Run a job in a child process and measure it."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            *SYNCX,
            "run",
            str(path),
            f"--state-dir={folder / (name + '-state')}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    cpu, rss = done.stdout.split()[-2:]
    return Job(elapsed, float(cpu), int(rss) / 1024)


def consume_job(bootstrap: str, name: str, out: Path) -> dict[str, Any]:
    columns = [
        {"name": "id", "type": "bigint"},
        {"name": "user_id", "type": "int"},
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": "decimal(12,2)"},
        {"name": "status", "type": "string"},
        {"name": "created_at", "type": "timestamp"},
    ]
    reader = {
        "name": "kafkareader",
        "parameter": {
            "topic": name,
            "mode": "earliest-offset",
            "codec": "json",
            "column": columns,
            "stopAt": "latest",
            "consumerSettings": {"bootstrap.servers": bootstrap},
        },
    }
    writer = {"name": "filewriter", "parameter": {"path": str(out), "fileType": "parquet"}}
    content = [{"reader": reader, "writer": writer}]
    return {"job": {"content": content, "setting": {"speed": {"channel": 3}}}}


def consume(count: int, folder: Path) -> None:
    bootstrap = broker(empty=True)
    small = topic(bootstrap)
    raw_produce(bootstrap, small, messages(count // 5))
    rss_small = run_job(
        consume_job(bootstrap, small, folder / "out-small"), folder, "consume-small"
    ).rss
    name = topic(bootstrap)
    raw_produce(bootstrap, name, messages(count))
    limit = raw_consume(bootstrap, name, count)
    job = run_job(consume_job(bootstrap, name, folder / "out-big"), folder, "consume")
    rate = count / job.seconds
    print(
        f"consume: limit {limit:,.0f} msg/s; kafka → parquet {rate:,.0f} msg/s "
        f"(ratio {rate / limit:.2f}, target 0.7); peak RSS {rss_small:.0f} MB at "
        f"{count // 5:,} messages, {job.rss:.0f} MB at {count:,}",
        flush=True,
    )


def produce(server: MariaDB, rows: int, folder: Path) -> None:
    database = f"kafka_bench_{uuid.uuid4().hex[:8]}"
    conn = server.connect()
    conn.local_infile = True
    create_orders(server.connect(), database, rows)
    settle(conn)
    conn.close()
    try:
        values = [v + b" " * 40 for v in messages(rows)]  # about the size of a row's JSON
        bootstrap = broker(empty=True)
        broker_id, mariadb = broker_pid(), mariadb_pid(server)
        before = time.process_time(), cpu_seconds(broker_id)
        limit = raw_produce(bootstrap, topic(bootstrap), values)
        loop_cpu = time.process_time() - before[0]
        loop_broker_cpu = cpu_seconds(broker_id) - before[1]
        bootstrap = broker(empty=True)
        broker_id, name = broker_pid(), topic(bootstrap)
        reader = {
            "name": "mysqlreader",
            "parameter": {
                "connection": [
                    {
                        "jdbcUrl": [f"jdbc:mysql://{server.host}:{server.port}/{database}"],
                        "table": ["orders"],
                    }
                ],
                "username": server.user,
                "password": server.password,
                "column": ["*"],
                "splitPk": "id",
            },
        }
        writer = {
            "name": "kafkawriter",
            "parameter": {
                "topic": name,
                "partitionAssignColumns": ["id"],
                "tableFields": [
                    "id",
                    "user_id",
                    "sku",
                    "qty",
                    "price",
                    "status",
                    "note",
                    "created_at",
                    "updated_at",
                ],
                "partitionStrategy": "hash-by-key",
                "producerSettings": {"bootstrap.servers": bootstrap, "linger.ms": 20},
            },
        }
        job = {
            "job": {
                "content": [{"reader": reader, "writer": writer}],
                "setting": {"speed": {"channel": 2}},
            }
        }
        servers = cpu_seconds(broker_id), cpu_seconds(mariadb)
        run = run_job(job, folder, "produce")
        broker_cpu = cpu_seconds(broker_id) - servers[0]
        mariadb_cpu = cpu_seconds(mariadb) - servers[1]
        rate = rows / run.seconds
        bootstrap = broker(empty=True)
        batched = raw_produce_batched(bootstrap, topic(bootstrap), values)
        print(
            f"produce: limit {limit:,.0f} msg/s; mysql orders → kafka exactly-once "
            f"{rate:,.0f} rows/s (ratio {rate / limit:.2f}, target 0.6); peak RSS {run.rss:.0f} MB; "
            f"the same messages through librdkafka's batch call: {batched:,.0f} msg/s (job / "
            f"that {rate / batched:.2f})",
            flush=True,
        )
        if broker_id is not None:
            per_row = 1e6 / rows
            budget = (os.cpu_count() or 1) / (0.6 * limit) * 1e6
            left = budget - (broker_cpu + mariadb_cpu) * per_row
            print(
                f"produce CPU, µs a message: the limit's loop {loop_cpu * per_row:.2f} "
                f"(+ broker {loop_broker_cpu * per_row:.2f}); "
                f"the job: syncx {run.cpu * per_row:.2f}, broker {broker_cpu * per_row:.2f}, "
                f"MariaDB {mariadb_cpu * per_row:.2f}. At 0.6 of the limit, {os.cpu_count()} "
                f"cores give {budget:.2f} µs a row in all: {left:.2f} for syncx, of which the "
                f"bare produce call takes {loop_cpu * per_row:.2f}",
                flush=True,
            )
    finally:
        server.drop_database(database)


def lag(server: MariaDB, bootstrap: str, rate: int, seconds: float, folder: Path) -> None:
    source = _database(server, "kafka_lag")
    name = f"lag-{uuid.uuid4().hex[:8]}"
    job = {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "binlogreader",
                        "parameter": {
                            "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{source}",
                            "username": server.user,
                            "password": server.password,
                            "pavingData": False,
                            "snapshot": "never",
                            "start": {"gtid": _gtid(server)},
                        },
                    },
                    "writer": {
                        "name": "kafkawriter",
                        "parameter": {
                            "topic": name,
                            "createTopic": True,
                            "topicPartitions": 3,
                            "partitionStrategy": "hash-by-key",
                            "producerSettings": {"bootstrap.servers": bootstrap},
                        },
                    },
                }
            ],
            "setting": {"restore": {"isRestore": True, "checkpointInterval": 0.5}},
        }
    }
    path = folder / "lag.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    process = subprocess.Popen(
        [*SYNCX, "run", str(path), f"--state-dir={folder / 'lag-state'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    time.sleep(3.0)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lag-{name}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(name, p, 0) for p in range(3)])
    load = ChangeLoad(server, source, rate, connections=max(1, rate // 1000))
    load.start()
    samples: list[float] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            for message in consumer.consume(1000, 0.2):
                if message.error() is not None or message.value() is None:
                    continue
                change = json.loads(message.value())
                if change["op"] == "c" and change["after"]["created_ms"]:
                    samples.append(time.time() - change["after"]["created_ms"] / 1000)
    finally:
        achieved = load.join() / (time.monotonic() - started)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        consumer.close()
        server.drop_database(source)
    got = percentiles(samples)
    print(
        f"lag: {achieved:,.0f} changes/s offered {rate:,}; {got['samples']:,} inserts seen; "
        f"p50 {got['p50']:.2f}s p95 {got['p95']:.2f}s p99 {got['p99']:.2f}s (target p99 < 2 s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--lag-rate", type=int, default=5000)
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--only", choices=["consume", "produce", "lag"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncx-kafka-bench-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "consume"):
            consume(args.messages, folder)
        if args.only in (None, "produce"):
            produce(ensure_server(), args.rows, folder)
        if args.only in (None, "lag"):
            lag(ensure_server(), broker(empty=True), args.lag_rate, args.lag_seconds, folder)


if __name__ == "__main__":
    main()
