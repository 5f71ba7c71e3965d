"""binlogreader benchmarks on the private MariaDB: read rate, apply rate, end-to-end lag.

    .venv/bin/python bench/binlog_bench.py [--changes 200000] [--lag-seconds 20] [--big-rows N]

1. **Read rate**: ``--changes`` row changes (inserts in 1,000-row transactions, updates,
   deletes) on a 7-column table, then the binlog read back: by the reader alone (in-process,
   batches counted) and by a ``binlogreader → streamwriter`` job (``print: false``), in row
   events per second.
2. **Apply rate**: the same changes replicated into a second database by ``mysqlwriter``
   (exactly-once: applied inside the checkpoint's XA transaction; at-least-once: a local
   transaction per checkpoint) and by ``sqlwriter`` (exactly-once through its change-staging
   tables, the path of targets without XA), checked equal with ``CHECKSUM TABLE``; row events
   per second over the run's wall time, start-up included (targets: 40,000 for mysqlwriter
   exactly-once, 10,000 for the others).
3. **Lag**: an endless ``binlogreader → mysqlwriter`` job (exactly-once, checkpoints every 0.5 s)
   while a steady load of 2,000 and then 5,000 changes/s (70% inserts, 20% updates, 10% deletes,
   10 changes per transaction, a connection per 1,000 changes/s) runs on the source; a poller
   measures, for every inserted row, the time from its source commit to its visibility in the
   target. Percentiles printed (target: p99 under 1 s at 5,000 changes/s).
4. **A big transaction**: one ``UPDATE`` of ``--big-rows`` rows (one source transaction, 1M by
   default) read by a ``binlogreader → streamwriter`` job with the default
   ``transactionBufferBytes`` (64 MiB: the rest spills to the state folder) and with a bound
   past the transaction's size (held in memory until its XID): peak RSS of the process (measured
   alone, :func:`mysql_bench.measured`) and changes per second.

Numbers are medians of ``--rounds`` rounds where a round is cheap (rates), single runs
otherwise. Each run is a real ``syncx run`` process (start-up included in job rates; the
in-process reader rate excludes it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.mysql_bench import measured  # noqa: E402
from readers.binlog import BinlogReader, BinlogReaderParams  # noqa: E402
from sync.contract import JobContext  # noqa: E402
from sync.model import Setting  # noqa: E402
from tests.servers.mariadb import MariaDB, ensure_server  # noqa: E402

TABLE = (
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(40), qty INT, "
    "price DECIMAL(10,2), paid TINYINT, created_ms BIGINT, channel VARCHAR(10))"
)
SYNCX = [str(Path(sys.executable).with_name("syncx"))]


def _row(server: MariaDB, sql: str, database: str | None = None) -> tuple[Any, ...]:
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return tuple(cur.fetchone())
    finally:
        conn.close()


def _gtid(server: MariaDB) -> str:
    return str(_row(server, "SELECT @@gtid_binlog_pos")[0])


def _end(server: MariaDB) -> dict[str, Any]:
    file, pos = _row(server, "SHOW MASTER STATUS")[:2]
    return {"journalName": file, "position": int(pos)}


def _load_changes(server: MariaDB, database: str, count: int) -> int:
    """``count`` changes: half inserts, a quarter updates, a quarter deletes."""
    conn = server.connect(database)
    inserts = count // 2
    rows = [
        (i, f"customer-{i % 1000}", i % 7, f"{i * 1.5 % 1000:.2f}", i % 2, 0, "web")
        for i in range(inserts)
    ]
    with conn.cursor() as cur:
        for start in range(0, inserts, 1000):
            cur.execute("BEGIN")
            cur.executemany(
                "INSERT INTO orders VALUES (%s,%s,%s,%s,%s,%s,%s)", rows[start : start + 1000]
            )
            cur.execute("COMMIT")
        updates = count // 4
        for start in range(0, updates, 1000):
            cur.execute(
                f"UPDATE orders SET qty = qty + 1 WHERE id >= {start} AND id < {start + 1000}"
            )
        deletes = count - inserts - updates
        for start in range(0, deletes, 1000):
            cur.execute(
                f"DELETE FROM orders WHERE id >= {inserts - deletes + start} AND "
                f"id < {inserts - deletes + start + 1000}"
            )
    conn.close()
    return count


def _job(server: MariaDB, source: str, writer: dict[str, Any], **reader: Any) -> dict[str, Any]:
    params = {
        "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{source}",
        "username": server.user,
        "password": server.password,
        "pavingData": False,
        **reader,
    }
    return {
        "job": {
            "content": [
                {"reader": {"name": "binlogreader", "parameter": params}, "writer": writer}
            ],
            "setting": {"restore": {"isRestore": True, "checkpointInterval": 2}},
        }
    }


WRITERS = (
    ("mysqlwriter", "exactly-once", "mysqlwriter exactly-once (XA)"),
    ("mysqlwriter", "at-least-once", "mysqlwriter at-least-once"),
    ("sqlwriter", "exactly-once", "sqlwriter exactly-once (staged)"),
)
"""The apply paths measured: (plugin, semantic, label)."""
TARGETS = {"mysqlwriter exactly-once (XA)": 40_000}
"""Row events/s each path must reach (wall time of the run, start-up included); others 10,000."""


def _writer(server: MariaDB, target: str, name: str, semantic: str) -> dict[str, Any]:
    """``name`` writing every source table into the target table of its name."""
    return {
        "name": name,
        "parameter": {
            "url": f"mysql+pymysql://{server.user}@{server.host}:{server.port}/{target}",
            "table": "*",
            "semantic": semantic,
            "batchSize": 4096,
        },
    }


def _run(job: dict[str, Any], folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    metrics = folder / f"{name}-metrics.json"
    started = time.perf_counter()
    done = subprocess.run(
        [
            *SYNCX,
            "run",
            str(path),
            f"--state-dir={folder / (name + '-state')}",
            f"--metrics-file={metrics}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    report = json.loads(metrics.read_text())
    report["wall"] = wall
    return report


def _reader_alone(server: MariaDB, source: str, start: str, end: dict[str, Any]) -> float:
    params = BinlogReaderParams.model_validate(
        {
            "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{source}",
            "username": server.user,
            "password": server.password,
            "pavingData": False,
            "start": {"gtid": start},
            "stopAt": end,
        }
    )
    ctx = JobContext.of("bench", Path(tempfile.gettempdir()), Setting(), run_id="bench")
    reader = BinlogReader(params, ctx)
    (split,) = reader.plan(1)
    opened = reader.open(split, None)
    started = time.perf_counter()
    rows = sum(b.num_rows for b in opened.batches() if b is not None)
    elapsed = time.perf_counter() - started
    opened.close()
    return rows / elapsed


def _checksum(server: MariaDB, database: str) -> int:
    return int(_row(server, "CHECKSUM TABLE orders", database)[1])


def _database(server: MariaDB, prefix: str) -> str:
    """A fresh database holding an empty ``orders`` table."""
    name = server.create_database(prefix)
    conn = server.connect(name)
    with conn.cursor() as cur:
        cur.execute(TABLE)
    conn.close()
    return name


def rates(server: MariaDB, changes: int, rounds: int, folder: Path) -> None:
    source = _database(server, "bench_src")
    start = _gtid(server)
    load_started = time.perf_counter()
    _load_changes(server, source, changes)
    load = time.perf_counter() - load_started
    end = _end(server)
    print(f"\n== {changes:,} row changes written in {load:.1f}s ({changes / load:,.0f}/s) ==")
    reader = {"start": {"gtid": start}, "stopAt": end}
    alone = [_reader_alone(server, source, start, end) for _ in range(rounds)]
    null_writer = {"name": "streamwriter", "parameter": {"print": False}}
    to_null = []
    for index in range(rounds):
        report = _run(_job(server, source, null_writer, **reader), folder, f"null-{index}")
        to_null.append(report["metrics"]["numRead"] / report["wall"])
    results: dict[str, list[float]] = {}
    for index in range(rounds):  # interleaved: a busy moment of the machine hits all of them
        for name, semantic, label in WRITERS:
            target = _database(server, "bench_dst")
            report = _run(
                _job(server, source, _writer(server, target, name, semantic), **reader),
                folder,
                f"{name}-{semantic}-{index}",
            )
            if _checksum(server, source) != _checksum(server, target):
                raise SystemExit(f"{label}: target differs from source")
            results.setdefault(label, []).append(report["metrics"]["numWrite"] / report["wall"])
            server.drop_database(target)
    server.drop_database(source)
    read = statistics.median(alone)
    print(f"{'reader alone (in-process)':42s} {read:10,.0f} row events/s")
    print(f"{'binlog -> null (syncx run)':42s} {statistics.median(to_null):10,.0f} row events/s")
    for label, values in results.items():
        rate = statistics.median(values)
        target = TARGETS.get(label, 10_000)
        verdict = "meets" if rate >= target else "MISSES"
        print(
            f"binlog -> {label:32s} {rate:10,.0f} row events/s "
            f"({rate / read:.2f}x of the read rate; {verdict} the {target:,}/s target); "
            "tables equal"
        )


def big_transaction(server: MariaDB, rows: int, folder: Path) -> None:
    """Peak RSS and rate of binlog → null over one ``rows``-row UPDATE, spilled or not."""
    source = _database(server, "bench_big")
    conn = server.connect(source)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO orders SELECT seq, CONCAT('customer-', seq % 1000), seq % 7, "
            f"seq % 1000 * 1.5, seq % 2, 0, 'web' FROM seq_1_to_{rows}"
        )
    start = _gtid(server)
    with conn.cursor() as cur:
        cur.execute("UPDATE orders SET qty = qty + 1, channel = 'app'")
    conn.close()
    reader = {"start": {"gtid": start}, "stopAt": _end(server)}
    null_writer = {"name": "streamwriter", "parameter": {"print": False}}
    print(f"\n== one UPDATE of {rows:,} rows (one source transaction), binlog -> null ==")
    for label, bound in (("spilled (default 64 MiB)", None), ("in memory (bound 64 GiB)", 2**36)):
        params = {**reader, **({"transactionBufferBytes": bound} if bound else {})}
        path = folder / f"big-{bound}.json"
        path.write_text(json.dumps(_job(server, source, null_writer, **params)), encoding="utf-8")
        state = folder / f"big-{bound}-state"
        run = measured([*SYNCX, "run", str(path), f"--state-dir={state}"])
        print(
            f"{label:28s} peak RSS {run.peak_mb:6.0f} MB  {run.seconds:5.1f}s  "
            f"{rows / run.seconds:8,.0f} changes/s"
        )
    server.drop_database(source)


BLOCK = 10**9
"""Each load connection inserts ids of its own block (``k * BLOCK + 1`` on), so that the poller
sees every row whatever order the connections commit in."""


class ChangeLoad:
    """A steady change load: ``rate`` changes/s in transactions of 10 (7 inserts, 2 updates,
    1 delete) over ``connections`` connections (one Python connection commits at most about a
    thousand changes a second here); each inserted row carries the time of its transaction in
    ms (taken just before the statements; the commit follows within a millisecond or two)."""

    def __init__(self, server: MariaDB, database: str, rate: int, connections: int) -> None:
        self.server, self.database = server, database
        self.rate = rate / connections
        self.stop = threading.Event()
        self.done = [0] * connections
        self.threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(connections)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> int:
        """Stop; the changes made."""
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return sum(self.done)

    def _run(self, block: int) -> None:
        conn = self.server.connect(self.database)
        cur = conn.cursor()
        base = block * BLOCK
        next_id = base + 1
        started = time.perf_counter()
        while not self.stop.is_set():
            due = int((time.perf_counter() - started) * self.rate)
            while self.done[block] + 10 <= due and not self.stop.is_set():
                first, next_id = next_id, next_id + 7
                now = int(time.time() * 1000)
                cur.execute("BEGIN")
                cur.executemany(
                    "INSERT INTO orders VALUES (%s,%s,%s,%s,%s,%s,%s)",
                    [
                        (i, f"c{i % 97}", i % 9, "1.50", 0, now, "web")
                        for i in range(first, first + 7)
                    ],
                )
                cur.execute(
                    "UPDATE orders SET qty = qty + 1 WHERE id IN (%s, %s)",
                    (max(base + 1, first - 3), max(base + 1, first - 5)),
                )
                cur.execute("DELETE FROM orders WHERE id = %s", (max(base + 1, first - 20),))
                cur.execute("COMMIT")
                self.done[block] += 10
            time.sleep(0.002)
        conn.close()


def lag(server: MariaDB, rate: int, seconds: float, folder: Path) -> dict[str, float]:
    source = _database(server, "bench_lag")
    target = _database(server, "bench_dst")
    writer = _writer(server, target, "mysqlwriter", "exactly-once")
    job = _job(server, source, writer, start={"gtid": _gtid(server)})
    job["job"]["setting"]["restore"]["checkpointInterval"] = 0.5
    path = folder / f"lag-{rate}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    process = subprocess.Popen(
        [*SYNCX, "run", str(path), f"--state-dir={folder / f'lag-{rate}-state'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)  # start-up
    connections = max(1, rate // 1000)
    load = ChangeLoad(server, source, rate, connections)
    load.start()
    samples: list[float] = []
    seen = [k * BLOCK for k in range(connections)]
    poller = server.connect(target)
    started = time.monotonic()
    try:
        with poller.cursor() as cur:
            while time.monotonic() - started < seconds:
                for block in range(connections):
                    cur.execute(
                        "SELECT id, created_ms FROM orders WHERE id > %s AND id < %s",
                        (seen[block], (block + 1) * BLOCK),
                    )
                    now = time.time() * 1000
                    for row_id, created in cur.fetchall():
                        seen[block] = max(seen[block], row_id)
                        if created:
                            samples.append((now - created) / 1000)
                time.sleep(0.02)
    finally:
        achieved = load.join() / (time.monotonic() - started)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        poller.close()
        server.drop_database(source)
        server.drop_database(target)
    return {"offered": rate, "achieved": achieved, **percentiles(samples)}


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``samples`` (NaN when there are none), and their count."""
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {
        "samples": len(ordered),
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": ordered[-1] if ordered else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--big-rows", type=int, default=1_000_000, help="0: skip")
    args = parser.parse_args()
    os.environ.setdefault("SYNCX_TEST_MYSQL_PORT", "3307")
    server = ensure_server()
    with tempfile.TemporaryDirectory(prefix="binlog-bench-") as tmp:
        folder = Path(tmp)
        rates(server, args.changes, args.rounds, folder)
        if args.big_rows:
            big_transaction(server, args.big_rows, folder)
        if args.skip_lag:
            return
        print(
            f"\n== end-to-end lag, binlog -> MySQL exactly-once, {args.lag_seconds:.0f}s per load =="
        )
        for rate in (2000, 5000):
            result = lag(server, rate, args.lag_seconds, folder)
            verdict = ""
            if rate == 5000:
                verdict = "  (target p99 < 1 s: " + ("met" if result["p99"] < 1 else "MISSED") + ")"
            print(
                f"{rate:5d} changes/s offered ({result['achieved']:,.0f} achieved): "
                f"p50 {result['p50']:.2f}s  p95 {result['p95']:.2f}s  p99 {result['p99']:.2f}s  "
                f"max {result['max']:.2f}s over {result['samples']:,} rows{verdict}"
            )


if __name__ == "__main__":
    main()
