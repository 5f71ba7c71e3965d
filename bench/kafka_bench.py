"""Kafka benchmarks against the private broker, each with its physical limit measured in the same run.

    .venv/bin/python bench/kafka_bench.py [--messages 1000000] [--rows 2000000] [--rounds 3]
                                          [--lag-seconds 20] [--only consume|produce|lag]

1. **Consume**: ``--messages`` JSON order messages in a 3-partition topic. The limit: a
   confluent-kafka consume loop that only counts messages (3 partitions assigned). The job:
   ``kafkareader`` (codec json, 7 typed columns, 3 channels, ``stopAt: latest``) → ``filewriter``
   Parquet. Ratio job / limit (target 0.7). Peak RSS of the job at ``--messages`` and at a
   fifth of it (flat when it does not grow with the message count).
2. **Produce**: the ``orders`` table (``--rows``, bench/orders.py) into a 3-partition topic by
   ``mysqlreader → kafkawriter`` exactly-once (keyed by id, hash-by-key, 2 channels). The limit:
   a produce loop of the same number of pre-serialized ~200-byte messages (idempotent producer,
   acks=all, one flush). ``--rounds`` rounds (3) each measure the limit, then the job; the
   round of the median ratio job / limit is compared with the target (0.6): the machine's speed
   moves from minute to minute (the limit alone varied by a third between runs), and a round's
   two sides are measured a few seconds apart. The same messages through librdkafka's batch
   call (as the writer produces them) are printed beside it. With the private broker, the CPU
   time of each process (the bench's producer, syncx, Tansu, MariaDB) is read from ``/proc``
   around both runs and printed per message, with what the machine's cores leave syncx per row
   at 0.6 of the limit once Tansu and MariaDB have had theirs: the budget the target must fit.
   Last, the *floor*: the job's parts done alone on the same rows (connectorx reading the
   table, syncx's JSON encoding, the batch produce in a transaction, with MariaDB's and the
   broker's CPU), their CPU a row summed, and the ratio that sum would reach with every core
   busy all the time and no start-up (:func:`produce_floor`).
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
from collections.abc import Iterator
from contextlib import contextmanager
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


def raw_produce_batched(
    bootstrap: str, name: str, values: list[bytes], *, transactional: bool = False
) -> tuple[float, float, float]:
    """The same messages as :func:`raw_produce` through librdkafka's batch call (4,096 a call,
    keys partitioned by syncx's murmur2, as the writer makes them; in one transaction when
    ``transactional``, as exactly-once): what the library can do without a Python call a
    message. Returns (msg/s, this process's CPU seconds, the broker's CPU seconds)."""
    import confluent_kafka  # noqa: PLC0415 - beside the names imported above

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 20,
        "partitioner": "murmur2_random",
        "log_level": 0,
    }
    if transactional:
        config["transactional.id"] = f"bench-{name}"
    producer = Producer(config)
    client = BatchProducer(confluent_kafka, producer, murmur2=True)
    array = pa.array(values, pa.binary())
    keys = pa.array([f'{{"id":{i}}}'.encode() for i in range(len(values))], pa.binary())
    producer.list_topics(timeout=10)
    if transactional:
        producer.init_transactions(10)
        producer.begin_transaction()
    with cpu_used(broker_pid()) as used:
        started = time.perf_counter()
        for start in range(0, len(values), 4096):
            client.produce(name, keys.slice(start, 4096), array.slice(start, 4096))
        producer.flush(120)
        if transactional:
            producer.commit_transaction(30)
        elapsed = time.perf_counter() - started
    client.close()
    return len(values) / elapsed, used.own, used.others[0]


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


@dataclass
class CpuUsed:
    """CPU seconds used inside a :func:`cpu_used` block: this process's, and each process's
    given to it (in their order)."""

    own: float = 0.0
    others: tuple[float, ...] = ()


@contextmanager
def cpu_used(*pids: int | None) -> Iterator[CpuUsed]:
    """Measure the CPU this process and the processes ``pids`` use inside the block."""
    used = CpuUsed()
    own, others = time.process_time(), [cpu_seconds(pid) for pid in pids]
    yield used
    used.own = time.process_time() - own
    used.others = tuple(cpu_seconds(pid) - b for pid, b in zip(pids, others, strict=True))


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


def produce_job(server: MariaDB, database: str, bootstrap: str, name: str) -> dict[str, Any]:
    """``orders`` → a 3-partition topic, exactly-once, keyed by id, 2 channels."""
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
    fields = ["id", "user_id", "sku", "qty", "price", "status", "note", "created_at", "updated_at"]
    writer = {
        "name": "kafkawriter",
        "parameter": {
            "topic": name,
            "partitionAssignColumns": ["id"],
            "tableFields": fields,
            "partitionStrategy": "hash-by-key",
            "producerSettings": {"bootstrap.servers": bootstrap, "linger.ms": 20},
        },
    }
    content = [{"reader": reader, "writer": writer}]
    return {"job": {"content": content, "setting": {"speed": {"channel": 2}}}}


@dataclass(frozen=True)
class ProduceRound:
    """One round: the limit loop's rate and CPU, the job's rate and every process's CPU."""

    limit: float
    loop_cpu: float
    loop_broker_cpu: float
    rate: float
    job: Job
    broker_cpu: float
    mariadb_cpu: float

    @property
    def ratio(self) -> float:
        return self.rate / self.limit


def produce_round(
    server: MariaDB, database: str, rows: int, values: list[bytes], folder: Path, index: int
) -> ProduceRound:
    """The limit loop, then the job, each on a restarted empty broker."""
    bootstrap = broker(empty=True)
    with cpu_used(broker_pid()) as loop:
        limit = raw_produce(bootstrap, topic(bootstrap), values)
    bootstrap = broker(empty=True)
    job = produce_job(server, database, bootstrap, topic(bootstrap))
    with cpu_used(broker_pid(), mariadb_pid(server)) as servers:
        run = run_job(job, folder, f"produce-{index}")
    return ProduceRound(limit, loop.own, loop.others[0], rows / run.seconds, run, *servers.others)


@dataclass(frozen=True)
class Floor:
    """CPU seconds of the job's parts done alone: what no MySQL → Kafka job of these tools
    can spend less than (see :func:`produce_floor`)."""

    read: float
    mariadb: float
    encode: float
    produce: float
    broker: float

    @property
    def total(self) -> float:
        return self.read + self.mariadb + self.encode + self.produce + self.broker


def produce_floor(server: MariaDB, database: str, values: list[bytes]) -> Floor:
    """The job's three parts alone, on the same rows: connectorx reading the table in 2
    partitions (the job's 2 channels; the CPU of this process and of MariaDB), syncx's JSON
    encoding of its batches (values and keys, each batch dropped as the job drops it), and
    the batch produce of as many messages in one transaction (this process and the broker).
    What the job spends beyond their sum is syncx's own: start-up, conversions, the engine's
    hand-over, the spool."""
    import connectorx  # noqa: PLC0415 - a bench extra

    from libs.kafka.jsonenc import json_object  # noqa: PLC0415 - beside the engine's imports

    url = f"mysql://{server.user}:{server.password}@{server.host}:{server.port}/{database}"
    with cpu_used(mariadb_pid(server)) as read:
        table = connectorx.read_sql(
            url, "SELECT * FROM orders", partition_on="id", partition_num=2, return_type="arrow"
        )
    table = table.set_column(4, "price", table.column("price").cast(pa.decimal128(12, 2)))
    with cpu_used() as encode:
        for batch in table.to_batches(4096):
            json_object(table.schema.names, batch.columns)
            json_object(["id"], [batch.column(0)])
    del table
    bootstrap = broker(empty=True)
    _, produce_cpu, broker_cpu = raw_produce_batched(
        bootstrap, topic(bootstrap), values, transactional=True
    )
    return Floor(read.own, read.others[0], encode.own, produce_cpu, broker_cpu)


def produce(server: MariaDB, rows: int, rounds: int, folder: Path) -> None:
    database = f"kafka_bench_{uuid.uuid4().hex[:8]}"
    conn = server.connect()
    conn.local_infile = True
    create_orders(server.connect(), database, rows)
    settle(conn)
    conn.close()
    try:
        values = [v + b" " * 40 for v in messages(rows)]  # about the size of a row's JSON
        done: list[ProduceRound] = []
        per_row = 1e6 / rows
        for index in range(rounds):
            one = produce_round(server, database, rows, values, folder, index)
            done.append(one)
            cpu = ""
            if broker_pid() is not None:
                cpu = (
                    f"; CPU µs a message: the loop {one.loop_cpu * per_row:.2f} (+ broker "
                    f"{one.loop_broker_cpu * per_row:.2f}), the job: syncx "
                    f"{one.job.cpu * per_row:.2f}, broker {one.broker_cpu * per_row:.2f}, "
                    f"MariaDB {one.mariadb_cpu * per_row:.2f}"
                )
            print(
                f"produce round {index + 1}: limit {one.limit:,.0f} msg/s; job "
                f"{one.rate:,.0f} rows/s (ratio {one.ratio:.2f}); peak RSS {one.job.rss:.0f} MB"
                + cpu,
                flush=True,
            )
        middle = sorted(done, key=lambda r: r.ratio)[len(done) // 2]
        bootstrap = broker(empty=True)
        batched = raw_produce_batched(bootstrap, topic(bootstrap), values)[0]
        print(
            f"produce: median of {rounds} rounds: limit {middle.limit:,.0f} msg/s; mysql orders "
            f"→ kafka exactly-once {middle.rate:,.0f} rows/s (ratio {middle.ratio:.2f}, target "
            f"0.6); peak RSS {max(r.job.rss for r in done):.0f} MB; the same messages through "
            f"librdkafka's batch call: {batched:,.0f} msg/s (job / that "
            f"{middle.rate / batched:.2f})",
            flush=True,
        )
        if broker_pid() is not None:
            cores = os.cpu_count() or 1
            budget = cores / (0.6 * middle.limit) * 1e6
            left = budget - (middle.broker_cpu + middle.mariadb_cpu) * per_row
            print(
                f"produce CPU budget (median round): at 0.6 of the limit, {cores} cores give "
                f"{budget:.2f} µs a row in all: {left:.2f} for syncx once the broker and "
                f"MariaDB have had theirs; syncx used {middle.job.cpu * per_row:.2f}, of which "
                f"the bare produce call of the limit's loop takes "
                f"{middle.loop_cpu * per_row:.2f}",
                flush=True,
            )
            floor = produce_floor(server, database, values)
            best = cores / (floor.total / rows) / middle.limit
            print(
                f"produce floor, µs a row, the parts alone: connectorx read {floor.read * per_row:.2f} "
                f"+ MariaDB {floor.mariadb * per_row:.2f}, JSON encoding "
                f"{floor.encode * per_row:.2f}, batch produce in a transaction "
                f"{floor.produce * per_row:.2f} + broker {floor.broker * per_row:.2f}: "
                f"{floor.total * per_row:.2f} in all against the budget's {budget:.2f}. With "
                f"every core busy all the time and no start-up, that floor reaches "
                f"{best:.2f} of the median round's limit",
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
    parser.add_argument("--rounds", type=int, default=3, help="produce: rounds, median compared")
    parser.add_argument("--lag-rate", type=int, default=5000)
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--only", choices=["consume", "produce", "lag"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncx-kafka-bench-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "consume"):
            consume(args.messages, folder)
        if args.only in (None, "produce"):
            produce(ensure_server(), args.rows, args.rounds, folder)
        if args.only in (None, "lag"):
            lag(ensure_server(), broker(empty=True), args.lag_rate, args.lag_seconds, folder)


if __name__ == "__main__":
    main()
