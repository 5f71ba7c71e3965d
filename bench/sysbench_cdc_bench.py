"""sysbench's ``oltp_write_only`` load replicated by ``binlogreader`` → ``sqlwriter`` exactly-once
into PostgreSQL and into MariaDB: events per second, and the time to converge (issue 16).

The case of the issue: sysbench's tables (``--tables`` x ``--rows``, default 4 x 20,000) on
the private MariaDB, ``snapshot: initial``, ``table: "*"``; each target's tables made by
sysbench's own DDL for that database (:mod:`tests.servers.sysbench`). Per backend:

1. **Catch-up**: a bounded job (``stopAt: now``) copies the tables; sysbench runs ``--seconds``
   at full speed on 2 threads with no job running; the same job restored
   (``--restore latest-or-new``) then applies the binlog's row events (4 per sysbench
   transaction: two updates, a delete and the insert of the deleted id again). Printed: the
   copy's rows/s and the apply's row events/s over the run's wall time, start-up included.
2. **Live**: on fresh tables, an unbounded job (checkpoints every second) copies and streams
   while sysbench runs ``--seconds`` at ``--rate`` transactions/s; printed: the seconds from
   the end of the load until the target equals the source (row by row), and the job's events/s.

Every phase ends by comparing every row of every table. The numbers measured, before and after
the reader parsed each table map once: the README, "CDC (binlog)", "Under sysbench".

    PYTHONPATH=. python bench/sysbench_cdc_bench.py [--tables 4] [--rows 20000] [--seconds 20]
        [--rate 500] [--backend postgresql|mariadb] [--phase catch-up|live]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import sysbench as sb  # noqa: E402
from tests.servers.mariadb import MariaDB, ensure_server  # noqa: E402
from tests.servers.sysbench import Database  # noqa: E402

SYNCX = [str(Path(sys.executable).with_name("syncx"))]
CONVERGE_TIMEOUT = 600.0
"""Seconds after the load ends that the live job may take to make the target equal."""


def job(server: MariaDB, source: Database, target: Database, **reader: Any) -> dict[str, Any]:
    """binlogreader (snapshot: initial) of ``source``'s tables → sqlwriter exactly-once."""
    params = {
        "jdbcUrl": f"jdbc:mysql://{server.host}:{server.port}/{source.name}",
        "username": server.user,
        "password": server.password,
        "pavingData": False,
        "snapshot": "initial",
        **reader,
    }
    writer = {"url": target.url, "table": "*", "semantic": "exactly-once"}
    return {
        "job": {
            "content": [
                {
                    "reader": {"name": "binlogreader", "parameter": params},
                    "writer": {"name": "sqlwriter", "parameter": writer},
                }
            ],
            "setting": {
                "errorLimit": {"record": 0},
                "restore": {"isRestore": True, "checkpointInterval": 1},
            },
        }
    }


def command(folder: Path, spec: dict[str, Any], *args: str) -> list[str]:
    """``syncx run`` of ``spec`` (saved in ``folder``) with its state and metrics there."""
    path = folder / "job.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return [
        *SYNCX,
        "run",
        str(path),
        f"--state-dir={folder / 'state'}",
        f"--metrics-file={folder / 'metrics.json'}",
        *args,
    ]


def run(folder: Path, spec: dict[str, Any], *args: str) -> tuple[int, float]:
    """(rows written, wall seconds) of a bounded run."""
    started = time.perf_counter()
    done = subprocess.run(command(folder, spec, *args), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"syncx failed:\n{done.stderr[-3000:]}")
    return written(folder), wall


def written(folder: Path) -> int:
    return int(json.loads((folder / "metrics.json").read_text())["metrics"]["numWrite"])


def differing(source: Database, target: Database, tables: int) -> list[str]:
    """The sysbench tables whose rows differ between ``source`` and ``target``."""
    names = [f"sbtest{i}" for i in range(1, tables + 1)]
    return [n for n in names if not sb.table_rows(source, n).equals(sb.table_rows(target, n))]


def load(source: Database, tables: int, rows: int, seconds: float, *extra: str) -> int:
    """Run sysbench for ``seconds`` on 2 threads over ids 1 to ``rows``; the transactions it
    committed."""
    size = (f"--tables={tables}", f"--table-size={rows}")
    out = sb.sysbench(source, "run", *size, "--threads=2", f"--time={seconds:g}", *extra)
    return sb.transactions(out)


@contextlib.contextmanager
def databases(
    server: MariaDB, backend: str, tables: int, rows: int
) -> Iterator[tuple[Database, Database]]:
    """A source database of sysbench's tables on ``server`` and a target of ``backend`` with
    the same tables empty, dropped afterwards."""
    with (
        sb.mariadb_scratch(server, "sb_src") as source,
        sb.scratch(server, backend, "sb_dst") as target,
    ):
        sb.prepare(source, tables, rows)
        sb.prepare(target, tables, 0)
        yield source, target


def catch_up(
    server: MariaDB, backend: str, tables: int, rows: int, seconds: float, folder: Path
) -> None:
    with databases(server, backend, tables, rows) as (source, target):
        spec = job(server, source, target, stopAt="now")
        copied, copy_wall = run(folder, spec)
        committed = load(source, tables, rows, seconds)
        applied, wall = run(folder, spec, "--restore=latest-or-new")
        bad = differing(source, target, tables)
        verdict = f"tables differ: {bad}" if bad else "tables equal"
        print(
            f"{backend:10s} catch-up: copy {copied:,} rows in {copy_wall:.1f}s "
            f"({copied / copy_wall:,.0f} rows/s); sysbench {committed:,} transactions in "
            f"{seconds:g}s ({committed * sb.EVENTS_PER_TRANSACTION / seconds:,.0f} ev/s made); "
            f"applied {applied:,} row events in {wall:.1f}s ({applied / wall:,.0f} ev/s); "
            f"{verdict}",
            flush=True,
        )


def live(
    server: MariaDB,
    backend: str,
    tables: int,
    rows: int,
    seconds: float,
    rate: int,
    folder: Path,
) -> None:
    with databases(server, backend, tables, rows) as (source, target):
        started = time.perf_counter()
        log = (folder / "live.log").open("wb")
        process = subprocess.Popen(
            command(folder, job(server, source, target)), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            committed = load(source, tables, rows, seconds, f"--rate={rate}")
            ended = time.perf_counter()
            while differing(source, target, tables):
                if process.poll() is not None or time.perf_counter() - ended > CONVERGE_TIMEOUT:
                    print(f"{backend:10s} live: did NOT converge (log: {folder / 'live.log'})")
                    return
                time.sleep(0.5)
            converged = time.perf_counter()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait()
            log.close()
        events = written(folder)
        print(
            f"{backend:10s} live: sysbench {committed:,} transactions in {seconds:g}s at "
            f"--rate={rate}; target equal {converged - ended:.1f}s after the load ended; "
            f"{events:,} rows written in {converged - started:.1f}s "
            f"({events / (converged - started):,.0f} ev/s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=500, help="sysbench tps of the live phase")
    parser.add_argument("--backend", choices=["postgresql", "mariadb"], action="append")
    parser.add_argument("--phase", choices=["catch-up", "live"], action="append")
    args = parser.parse_args()
    server = ensure_server()
    for backend in args.backend or ["postgresql", "mariadb"]:
        for phase in args.phase or ["catch-up", "live"]:
            with tempfile.TemporaryDirectory() as tmp:
                if phase == "catch-up":
                    catch_up(server, backend, args.tables, args.rows, args.seconds, Path(tmp))
                else:
                    live(
                        server, backend, args.tables, args.rows, args.seconds, args.rate, Path(tmp)
                    )


if __name__ == "__main__":
    main()
