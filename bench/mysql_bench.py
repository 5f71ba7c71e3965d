"""MySQL benchmark: syncx against the server's own tools on the ``orders`` table, as ratios.

Not a test: it prints wall times, peak RSS and the ratios the MySQL issue sets as targets,
measured in one run on the project's private MariaDB (``scripts/mariadb-test-server.sh``):

- MySQL → Parquet (``mysqlreader`` → ``filewriter``, 2 channels, checkpoints every 2 s) against
  ``mariadb-dump --quick`` of the same table into a file: at most 2x;
- MySQL → MySQL (``mysqlwriter`` exactly-once, XA, 2 channels) into an empty copy against one
  ``LOAD DATA LOCAL INFILE`` of the same rows in one transaction: at most 2.5x;
- peak RSS of the syncx process (MySQL → Parquet): under 400 MB, and not growing with the table
  (``--rows`` against ``--big-rows``, medians of the rounds, within 10%).

Rounds are interleaved (dump, parquet, LOAD DATA, copy, dump, ...) and the medians are compared,
so that a busy machine slows both sides of a ratio alike. The tables are generated once by
``bench/orders.py`` into the database ``syncx_bench`` and kept for later runs.

Usage::

    python bench/mysql_bench.py                       # 2M rows, 3 rounds, RSS at 2M and 4M
    python bench/mysql_bench.py --rows 200000 --rounds 1 --big-rows 0   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orders import create_orders, write_tsv

REPO = Path(__file__).resolve().parent.parent
SYNCX = Path(sys.executable).with_name("syncx")
DATABASE = "syncx_bench"


@dataclass
class Run:
    seconds: float
    peak_mb: float


def server(port: int) -> None:
    env = {**os.environ, "SYNCX_TEST_MYSQL_PORT": str(port)}
    subprocess.run(
        ["bash", str(REPO / "scripts" / "mariadb-test-server.sh"), "start"],
        check=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def table_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rows``, ``--rounds``, ``--table`` and ``--port``: what every bench on the ``orders``
    table of the private MariaDB takes."""
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table", default="orders", help="table of syncx_bench to generate/use")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SYNCX_TEST_MYSQL_PORT", "3307"))
    )


def connect(port: int, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        password="",
        database=database,
        autocommit=True,
        charset="utf8mb4",
        local_infile=True,
    )


def ensure_table(port: int, table: str, rows: int) -> None:
    """``syncx_bench.<table>`` with ``rows`` orders (generated when missing or of another size)."""
    conn = connect(port)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4")
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s",
                (DATABASE, table),
            )
            exists = cur.fetchone()[0] == 1
            count = -1
            if exists:
                cur.execute(f"SELECT COUNT(*) FROM `{DATABASE}`.`{table}`")
                count = cur.fetchone()[0]
        if count != rows:
            print(f"generating {DATABASE}.{table} with {rows:,} rows ...", flush=True)
            create_orders(conn, DATABASE, rows, table)
    finally:
        conn.close()


def count_rows(port: int, table: str, database: str = DATABASE) -> int:
    """``SELECT COUNT(*)`` of ``database.table``."""
    conn = connect(port, database)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def written(folder: Path, rows: int) -> list[int]:
    """Sizes of the visible Parquet files in ``folder``, after checking they hold ``rows`` rows."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    found = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    if found != rows:
        msg = f"{folder} holds {found:,} rows, not {rows:,}"
        raise RuntimeError(msg)
    return [p.stat().st_size for p in files]


def empty_copy(port: int, source: str, target: str) -> None:
    conn = connect(port, DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{target}`")
            cur.execute(f"CREATE TABLE `{target}` LIKE `{source}`")
    finally:
        conn.close()


# Forks and runs a command, then writes its wall time and ``ru_maxrss`` (KiB) into argv[1].
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        os.write(2, f"{sys.argv[2]}: {exc}\\n".encode())
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def measured(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stdout: Any = None,
    stderr: Path | None = None,
) -> Run:
    """Wall time and peak RSS of one process (its stderr kept in ``stderr`` when given).

    The process is started from a small launcher (a fresh ``python -S``, a few MB): a child
    forked from this process would start with this process's memory counted in its
    ``ru_maxrss`` (fork copies the RSS counters, exec keeps the old peak), so a 5 MB
    ``mariadb-dump`` read as large as the benchmark itself. The peak is ``ru_maxrss`` from the
    launcher's ``wait4``: the tool's own, or that of the largest child it waited for if larger,
    so a tool that works in one process, threads included, is measured whole. The wall time is
    taken in the launcher, around fork and wait. The tool's stderr goes to a file, not a pipe,
    so that a chatty tool cannot fill the pipe and block.
    """
    with (
        stderr.open("w+b") if stderr else tempfile.TemporaryFile() as errors,
        tempfile.NamedTemporaryFile("r") as report,
    ):
        process = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, report.name, *args],
            stdout=stdout or subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, **(env or {})},
            check=False,
        )
        if process.returncode != 0:
            errors.seek(0)
            error = errors.read().decode(errors="replace")
            msg = f"{' '.join(args[:3])} failed ({process.returncode}):\n{error[-2000:]}"
            raise RuntimeError(msg)
        seconds, peak_kib = report.read().split()
    return Run(float(seconds), int(peak_kib) / 1024)


def dump(port: int, table: str, out: Path) -> Run:
    with out.open("wb") as target:
        return measured(
            [
                "mariadb-dump",
                "--no-defaults",
                "--host=127.0.0.1",
                f"--port={port}",
                "--user=root",
                "--quick",
                "--single-transaction",
                DATABASE,
                table,
            ],
            stdout=target,
        )


def load_data(port: int, tsv: Path, source: str = "orders", target: str = "orders_load") -> float:
    """One ``LOAD DATA LOCAL INFILE`` of the rows into an empty copy, in one transaction."""
    empty_copy(port, source, target)
    conn = connect(port, DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            started = time.perf_counter()
            cur.execute("START TRANSACTION")
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE `{target}` CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'",
                (str(tsv),),
            )
            cur.execute("COMMIT")
            return time.perf_counter() - started
    finally:
        conn.close()


def reader(port: int, table: str) -> dict[str, Any]:
    return {
        "name": "mysqlreader",
        "parameter": {
            "connection": [
                {"jdbcUrl": [f"jdbc:mysql://127.0.0.1:{port}/{DATABASE}"], "table": [table]}
            ],
            "username": "root",
            "password": "",
            "column": ["*"],
            "splitPk": "id",
        },
    }


def job_file(
    folder: Path,
    name: str,
    reader: dict[str, Any],
    writer: dict[str, Any],
    checkpoint_seconds: float = 2,
) -> Path:
    """Write a 2-channel job with checkpoints every ``checkpoint_seconds`` and return its path."""
    job = {
        "name": name,
        "job": {
            "content": [{"reader": reader, "writer": writer}],
            "setting": {
                "speed": {"channel": 2},
                "restore": {"isRestore": True, "checkpointInterval": checkpoint_seconds},
                "errorLimit": {"record": 0},
            },
        },
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job, indent=1))
    return path


def syncx(job: Path, folder: Path) -> Run:
    state = folder / "state" / job.stem
    shutil.rmtree(state, ignore_errors=True)
    return measured([str(SYNCX), "run", str(job), "--state-dir", str(state)])


def to_parquet(
    port: int, table: str, folder: Path, rows: int, checkpoint_seconds: float = 2
) -> Run:
    """``mysqlreader`` → ``filewriter`` Snappy Parquet; the files are counted back, then removed."""
    out = folder / f"parquet-{table}"
    shutil.rmtree(out, ignore_errors=True)
    writer = {
        "name": "filewriter",
        "parameter": {
            "path": str(out),
            "fileType": "parquet",
            "compress": "snappy",
            "writeMode": "overwrite",
        },
    }
    job = job_file(folder, f"parquet-{table}", reader(port, table), writer, checkpoint_seconds)
    run = syncx(job, folder)
    written(out, rows)
    shutil.rmtree(out, ignore_errors=True)
    return run


def to_mysql(port: int, folder: Path, source: str = "orders", target: str = "orders_copy") -> Run:
    """``mysqlwriter`` exactly-once (XA, 2 channels) into an empty copy of ``source``."""
    empty_copy(port, source, target)
    writer = {
        "name": "mysqlwriter",
        "parameter": {
            "connection": [
                {"jdbcUrl": f"jdbc:mysql://127.0.0.1:{port}/{DATABASE}", "table": [target]}
            ],
            "username": "root",
            "password": "",
            "writeMode": "insert",
            "semantic": "exactly-once",
        },
    }
    return syncx(job_file(folder, "mysql-copy", reader(port, source), writer), folder)


def check_copy(port: int, source: str = "orders", target: str = "orders_copy") -> None:
    conn = connect(port, DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CHECKSUM TABLE `{source}`, `{target}` EXTENDED")
            sums = [row[1] for row in cur.fetchall()]
    finally:
        conn.close()
    if sums[0] != sums[1]:
        msg = f"{target} differs from {source} (checksums {sums})"
        raise RuntimeError(msg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--big-rows", type=int, default=4_000_000, help="second table for the RSS check (0: skip)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SYNCX_TEST_MYSQL_PORT", "3307"))
    )
    args = parser.parse_args(argv)

    server(args.port)
    ensure_table(args.port, "orders", args.rows)
    if args.big_rows:
        ensure_table(args.port, "orders_big", args.big_rows)
    with tempfile.TemporaryDirectory(prefix="syncx-mysql-bench-") as tmp:
        folder = Path(tmp)
        tsv = folder / "orders.tsv"
        write_tsv(tsv, args.rows)
        dumps: list[float] = []
        parquets: list[Run] = []
        loads: list[float] = []
        copies: list[Run] = []
        bigs: list[Run] = []
        for number in range(1, args.rounds + 1):
            dumps.append(dump(args.port, "orders", folder / "dump.sql").seconds)
            (folder / "dump.sql").unlink()
            parquets.append(to_parquet(args.port, "orders", folder, args.rows))
            loads.append(load_data(args.port, tsv))
            copies.append(to_mysql(args.port, folder))
            check_copy(args.port)
            line = (
                f"round {number}: dump {dumps[-1]:.2f}s, syncx→parquet {parquets[-1].seconds:.2f}s "
                f"({parquets[-1].peak_mb:.0f} MB), LOAD DATA {loads[-1]:.2f}s, "
                f"syncx→mysql {copies[-1].seconds:.2f}s ({copies[-1].peak_mb:.0f} MB)"
            )
            if args.big_rows:
                bigs.append(to_parquet(args.port, "orders_big", folder, args.big_rows))
                line += f", syncx→parquet of {args.big_rows:,} rows {bigs[-1].peak_mb:.0f} MB"
            print(line, flush=True)

    dump_s = statistics.median(dumps)
    parquet_s = statistics.median(r.seconds for r in parquets)
    load_s = statistics.median(loads)
    copy_s = statistics.median(r.seconds for r in copies)
    peak = max(r.peak_mb for r in parquets)
    typical = statistics.median(r.peak_mb for r in parquets)
    print()
    print(f"orders: {args.rows:,} rows; medians of {args.rounds} interleaved round(s)")
    print(f"  mariadb-dump --quick          {dump_s:7.2f} s")
    print(
        f"  syncx MySQL→Parquet (2 ch)    {parquet_s:7.2f} s   ratio {parquet_s / dump_s:.2f}x "
        "(target ≤ 2x)"
    )
    print(f"  LOAD DATA LOCAL INFILE        {load_s:7.2f} s")
    print(
        f"  syncx MySQL→MySQL (XA, 2 ch)  {copy_s:7.2f} s   ratio {copy_s / load_s:.2f}x "
        "(target ≤ 2.5x)"
    )
    print(
        f"  peak RSS, MySQL→Parquet       {peak:7.0f} MB, highest of the rounds (target < 400 MB)"
    )
    if bigs:
        big = statistics.median(r.peak_mb for r in bigs)
        print(
            f"  peak RSS, {args.rows:,} vs {args.big_rows:,} rows (medians)   {typical:.0f} MB vs "
            f"{big:.0f} MB, ratio {big / typical:.2f} (target within 10%)"
        )


if __name__ == "__main__":
    main()
