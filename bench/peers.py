"""Peers in the same run: syncx against dlt, Sling and a raw connectorx floor, on one table.

Not a test: it prints wall times, ratios and peak RSS for issue 14's targets, every tool run on
the same ``orders`` table of the project's private MariaDB (``scripts/mariadb-test-server.sh``)
in the same interleaved rounds:

MySQL → Parquet, against ``mariadb-dump --quick`` of the table into a file (the anchor):

- syncx ``mysqlreader`` → ``hdfswriter`` on ``file://``, the Hive types declared in the writer's
  ``column`` list, 2 channels, checkpoints every 10 s, Snappy Parquet;
- syncx ``mysqlreader`` → ``filewriter``, the same settings;
- dlt ``sql_table`` with ``backend="connectorx"`` (2 partitions on ``id``, streamed as Arrow
  batches of dlt's ``chunk_size``), and with dlt's default backend (SQLAlchemy); the
  filesystem destination, Parquet (dlt's default Snappy);
- Sling, the binary of the ``sling-linux-amd64`` wheel called directly
  (``SLING_DUCKDB_COMPUTE=false``), into one Parquet file (Sling's default Snappy);
- the raw floor: connectorx → Arrow (``partition_on="id", partition_num=2``) →
  ``pyarrow.parquet.write_table``, Snappy (``bench/peer_programs.py``).

MySQL → MySQL, against one ``LOAD DATA LOCAL INFILE`` of the same rows into an empty copy, in
one transaction (the anchor): syncx ``mysqlwriter`` exactly-once (XA, 2 channels), dlt
(connectorx source, its ``sqlalchemy`` destination) and Sling, each into a table of its own.

Targets, printed PASS or MISS (a miss does not make the script fail):

- syncx ``hdfswriter`` at most 1.25x ``mariadb-dump``;
- syncx at least 1.2x faster than dlt+connectorx;
- peak RSS of syncx at most 300 MB.

Every tool is a child process, started from a small launcher (``mysql_bench.measured``): its
wall time includes its start, its peak RSS is its ``ru_maxrss`` without this script's memory
(Sling does its work in its one Go process, dlt in its one Python process, so nothing escapes). Every
run's output is counted back (the rows of the Parquet written, the rows in the target table;
syncx's MySQL copy by checksum), so that a broken peer cannot win. A peer whose package is
not installed is skipped with a line saying how to install it (``pip install -e '.[bench]'``);
a peer that fails is reported and left out. Medians of ``--rounds`` interleaved rounds.

Usage::

    python bench/peers.py                                   # 2M rows, 3 rounds
    python bench/peers.py --rows 200000 --rounds 1 --table orders_peers   # a quick look
    python bench/peers.py --rounds 1 --markdown             # and as Markdown, for the README
    python bench/peers.py --skip dlt --skip dlt-mysql       # without the slowest peers
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hdfs_bench import CHECKPOINT_SECONDS, hdfs_job, to_hdfs
from mysql_bench import (
    DATABASE,
    Run,
    check_copy,
    connect,
    count_rows,
    dump,
    ensure_table,
    load_data,
    measured,
    server,
    table_arguments,
    to_mysql,
    to_parquet,
    written,
)
from orders import HIVE_COLUMNS, write_tsv

PROGRAMS = Path(__file__).resolve().with_name("peer_programs.py")
DLT_DATASET = "syncx_bench_dlt"  # dlt → MySQL: the database dlt creates for its dataset
DLT_ENV = {"RUNTIME__DLTHUB_TELEMETRY": "false"}  # no network here: no telemetry
DLT_INSTALL = "pip install 'dlt[parquet]' connectorx, or pip install -e '.[bench]'"
SLING_INSTALL = "pip install sling-linux-amd64 (Linux x86_64), or pip install -e '.[bench]'"
# dlt's connectorx backend: 2 connections like syncx's 2 channels, and streamed (``arrow_stream``,
# batches of dlt's default chunk_size of 50,000 rows) rather than the whole table in memory,
# as dlt's docs advise for large tables.
DLT_CONNECTORX = {
    "return_type": "arrow_stream",
    "batch_size": 50_000,
    "partition_on": "id",
    "partition_num": 2,
}
TARGET_DUMP_RATIO = 1.25
TARGET_DLT_SPEEDUP = 1.2
TARGET_PEAK_MB = 300


@dataclass
class Bench:
    """What every run works on."""

    port: int
    table: str
    rows: int
    folder: Path
    tsv: Path

    def mysql_url(self) -> str:
        """The table's database as connectorx and Sling spell it."""
        return f"mysql://root:@127.0.0.1:{self.port}/{DATABASE}"

    def sqlalchemy_url(self, database: str = DATABASE) -> str:
        """The database as SQLAlchemy (dlt) spells it, with the C driver when it is installed."""
        driver = "mysqldb" if importlib.util.find_spec("MySQLdb") else "pymysql"
        return f"mysql+{driver}://root:@127.0.0.1:{self.port}/{database}"


@dataclass
class Peer:
    """One tool of the table: how to run it once (checking its output) and its runs."""

    key: str
    label: str
    part: str  # "parquet" or "mysql"
    run: Callable[[Bench], Run]
    role: str = "peer"  # "anchor", "syncx" or "peer"
    missing: str = ""  # why it cannot run here, and how to install it
    error: str = ""  # its failure, if it failed
    runs: list[Run] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def peak(self) -> float:
        return max(r.peak_mb for r in self.runs)


def dumped_rows(path: Path) -> int:
    """Rows in a ``mariadb-dump`` file, in either layout of its extended INSERTs: one row a line
    (MariaDB 10.11's ``VALUES`` then ``(...),`` lines) or all on one line (``),(`` between rows).

    Exact for ``orders``, whose text (SKUs, statuses, notes of lowercase words) has no ``),(``.
    """
    rows = 0
    with path.open("rb") as lines:
        for line in lines:
            if line.startswith(b"INSERT INTO"):
                line = line.partition(b" VALUES ")[2]  # noqa: PLW2901 - the rows after VALUES
            if line.startswith(b"("):
                rows += line.count(b"),(") + 1
    return rows


def drop(port: int, *tables: str, database: str | None = None) -> None:
    """Drop ``tables`` of ``syncx_bench`` and the whole ``database``, where they exist."""
    conn = connect(port, DATABASE)
    try:
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            if database:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        conn.close()


def expect(what: str, found: int, rows: int) -> None:
    if found != rows:
        msg = f"{what} holds {found:,} rows, not {rows:,}"
        raise RuntimeError(msg)


def run_dump(b: Bench) -> Run:
    out = b.folder / "dump.sql"
    run = dump(b.port, b.table, out)
    expect(str(out), dumped_rows(out), b.rows)
    out.unlink()
    return run


def run_syncx_hdfs(b: Bench) -> Run:
    target = b.folder / "hdfs"
    job = hdfs_job(b.folder, "peers-hdfs", b.table, b.port, "file:///", str(target), HIVE_COLUMNS)
    run, _ = to_hdfs(job, b.folder, target, b.rows)
    return run


def run_syncx_file(b: Bench) -> Run:
    return to_parquet(b.port, b.table, b.folder, b.rows, CHECKPOINT_SECONDS)


def run_dlt(
    b: Bench,
    backend: str,
    backend_kwargs: dict[str, object],
    destination: str,
    target: str,
    dataset: str,
) -> Run:
    """``peer_programs.py dlt``: the table through dlt's ``sql_table`` into ``destination``."""
    workdir = b.folder / "dlt-pipelines"
    shutil.rmtree(workdir, ignore_errors=True)
    run = measured(
        [
            sys.executable,
            str(PROGRAMS),
            "dlt",
            "--source",
            b.sqlalchemy_url(),
            "--table",
            b.table,
            "--backend",
            backend,
            "--backend-kwargs",
            json.dumps(backend_kwargs),
            "--destination",
            destination,
            "--target",
            target,
            "--dataset",
            dataset,
            "--workdir",
            str(workdir),
        ],
        env=DLT_ENV,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return run


def dlt_to_parquet(backend: str, backend_kwargs: dict[str, object]) -> Callable[[Bench], Run]:
    def run_dlt_parquet(b: Bench) -> Run:
        out = b.folder / f"dlt-{backend}"
        shutil.rmtree(out, ignore_errors=True)
        run = run_dlt(b, backend, backend_kwargs, "filesystem", out.as_uri(), "peers")
        written(out / "peers" / b.table, b.rows)
        shutil.rmtree(out, ignore_errors=True)
        return run

    return run_dlt_parquet


def run_dlt_mysql(b: Bench) -> Run:
    drop(b.port, database=DLT_DATASET)  # each round loads into nothing, like the first
    run = run_dlt(b, "connectorx", DLT_CONNECTORX, "mysql", b.sqlalchemy_url(), DLT_DATASET)
    expect(f"{DLT_DATASET}.{b.table}", count_rows(b.port, b.table, DLT_DATASET), b.rows)
    return run


def run_raw(b: Bench) -> Run:
    out = b.folder / "raw" / f"{b.table}.parquet"
    shutil.rmtree(out.parent, ignore_errors=True)
    run = measured(
        [
            sys.executable,
            str(PROGRAMS),
            "raw",
            "--conn",
            b.mysql_url(),
            "--table",
            b.table,
            "--out",
            str(out),
        ]
    )
    written(out.parent, b.rows)
    shutil.rmtree(out.parent, ignore_errors=True)
    return run


def sling_binary() -> Path | None:
    """The Sling binary inside the installed ``sling-linux-amd64`` wheel (``sling``, the
    wrapper package, would download one at run time, which fails offline)."""
    spec = importlib.util.find_spec("sling_linux_amd64")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "sling-linux-amd64"
    return binary if os.access(binary, os.X_OK) else None


def sling(b: Bench, *target: str) -> Run:
    """One ``sling run`` from the table to ``target`` (its ``--tgt-...`` arguments)."""
    binary = sling_binary()
    assert binary is not None
    env = {
        "SLING_DUCKDB_COMPUTE": "false",  # Go's own Parquet writer, no DuckDB download
        "SLING_DISABLE_TELEMETRY": "true",
        "SLING_HOME_DIR": str(b.folder / "sling-home"),
        "SLING_TEMP_DIR": str(b.folder / "sling-tmp"),
    }
    for folder in ("sling-home", "sling-tmp"):
        (b.folder / folder).mkdir(exist_ok=True)
    return measured(
        [
            str(binary),
            "run",
            "--src-conn",
            b.mysql_url(),
            "--src-stream",
            f"{DATABASE}.{b.table}",
            *target,
        ],
        env=env,
    )


def run_sling_parquet(b: Bench) -> Run:
    out = b.folder / "sling" / f"{b.table}.parquet"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir()
    options = json.dumps({"format": "parquet", "compression": "snappy"})
    run = sling(b, "--tgt-object", out.as_uri(), "--tgt-options", options)
    written(out.parent, b.rows)
    shutil.rmtree(out.parent, ignore_errors=True)
    return run


def run_sling_mysql(b: Bench) -> Run:
    target = f"{b.table}_sling"
    drop(b.port, target)
    run = sling(b, "--tgt-conn", b.mysql_url(), "--tgt-object", f"{DATABASE}.{target}")
    expect(f"{DATABASE}.{target}", count_rows(b.port, target), b.rows)
    return run


def run_load_data(b: Bench) -> Run:
    target = f"{b.table}_load"
    seconds = load_data(b.port, b.tsv, b.table, target)
    expect(f"{DATABASE}.{target}", count_rows(b.port, target), b.rows)
    return Run(seconds, math.nan)  # the work is the server's: no client process to measure


def run_syncx_mysql(b: Bench) -> Run:
    run = to_mysql(b.port, b.folder, b.table, f"{b.table}_copy")
    check_copy(b.port, b.table, f"{b.table}_copy")
    return run


def peers() -> list[Peer]:
    """The table's rows, in the order of a round; those that cannot run here say why."""

    def missing(modules: list[str], install: str) -> str:
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"{', '.join(absent)} not installed: {install}" if absent else ""

    dlt_missing = missing(["dlt", "connectorx"], DLT_INSTALL)
    dlt_default_missing = missing(["dlt"], DLT_INSTALL)  # its default backend needs no connectorx
    raw_missing = missing(["connectorx"], "pip install connectorx")
    sling_missing = "" if sling_binary() else f"sling-linux-amd64 not installed: {SLING_INSTALL}"
    return [
        Peer("dump", "mariadb-dump --quick", "parquet", run_dump, role="anchor"),
        Peer("syncx-hdfs", "syncx mysqlreader → hdfswriter", "parquet", run_syncx_hdfs, "syncx"),
        Peer("syncx-file", "syncx mysqlreader → filewriter", "parquet", run_syncx_file, "syncx"),
        Peer(
            "dlt-cx",
            "dlt sql_table, backend connectorx",
            "parquet",
            dlt_to_parquet("connectorx", DLT_CONNECTORX),
            missing=dlt_missing,
        ),
        Peer(
            "dlt",
            "dlt sql_table, default backend",
            "parquet",
            dlt_to_parquet("sqlalchemy", {}),
            missing=dlt_default_missing,
        ),
        Peer("sling", "Sling", "parquet", run_sling_parquet, missing=sling_missing),
        Peer(
            "raw",
            "raw floor: connectorx → pyarrow",
            "parquet",
            run_raw,
            missing=raw_missing,
        ),
        Peer("load-data", "LOAD DATA LOCAL INFILE", "mysql", run_load_data, role="anchor"),
        Peer("syncx-mysql", "syncx mysqlwriter exactly-once", "mysql", run_syncx_mysql, "syncx"),
        Peer(
            "dlt-mysql",
            "dlt connectorx → sqlalchemy destination",
            "mysql",
            run_dlt_mysql,
            missing=dlt_missing,
        ),
        Peer("sling-mysql", "Sling", "mysql", run_sling_mysql, missing=sling_missing),
    ]


PARTS = {"parquet": ("MySQL → Parquet", "dump"), "mysql": ("MySQL → MySQL", "LOAD DATA")}


def rows_of(table: list[Peer], part: str) -> list[tuple[str, float, float, float]]:
    """(label, median seconds, ratio to the part's anchor, peak MB) of the peers that ran."""
    ran = [p for p in table if p.part == part and p.runs and not p.error]
    anchor = next((p for p in ran if p.role == "anchor"), None)
    if anchor is None:
        return []
    base = anchor.median()
    return [(p.label, p.median(), p.median() / base, p.peak()) for p in ran]


def mb(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f} MB"


def targets(table: list[Peer]) -> list[str]:
    """The issue's target lines, PASS or MISS (or not measured, saying what did not run)."""
    by_key = {p.key: p for p in table if p.runs and not p.error}
    hdfs, dump_, dlt_cx = by_key.get("syncx-hdfs"), by_key.get("dump"), by_key.get("dlt-cx")
    syncx_runs = [p for p in table if p.role == "syncx" and p.runs and not p.error]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    first = f"syncx hdfswriter ≤ {TARGET_DUMP_RATIO}x mariadb-dump:"
    if hdfs and dump_:
        ratio = hdfs.median() / dump_.median()
        first += f" {ratio:.2f}x {verdict(ratio <= TARGET_DUMP_RATIO)}"
    else:
        first += " not measured (syncx hdfswriter did not run)"
    second = f"syncx ≥ {TARGET_DLT_SPEEDUP}x faster than dlt+connectorx:"
    if hdfs and dlt_cx:
        speedup = dlt_cx.median() / hdfs.median()
        second += f" hdfswriter {speedup:.2f}x faster"
        if filewriter := by_key.get("syncx-file"):
            second += f" (filewriter {dlt_cx.median() / filewriter.median():.2f}x)"
        second += f" {verdict(speedup >= TARGET_DLT_SPEEDUP)}"
    else:
        second += " not measured (syncx hdfswriter or dlt+connectorx did not run)"
    third = f"syncx peak RSS ≤ {TARGET_PEAK_MB} MB:"
    if syncx_runs:
        top = max(syncx_runs, key=Peer.peak)
        third += (
            f" {top.peak():.0f} MB, the highest run of any syncx job ({top.label}) "
            f"{verdict(top.peak() <= TARGET_PEAK_MB)}"
        )
    else:
        third += " not measured (no syncx job ran)"
    return [first, second, third]


def notes(table: list[Peer]) -> list[str]:
    lines = [f"skipped {p.label} ({p.part}): {p.missing}" for p in table if p.missing]
    lines += [f"failed {p.label} ({p.part}), left out: {p.error}" for p in table if p.error]
    return lines


def print_text(table: list[Peer], args: argparse.Namespace) -> None:
    print()
    print(f"{args.table}: {args.rows:,} rows; medians of {args.rounds} interleaved round(s)")
    for part, (title, anchor) in PARTS.items():
        rows = rows_of(table, part)
        if not rows:
            continue
        ratio = f"x {anchor}"
        print(f"  {title:<42} {'wall (s)':>9} {ratio:>12} {'peak RSS':>9}")
        for label, seconds, factor, peak in rows:
            print(f"    {label:<40} {seconds:9.2f} {factor:11.2f}x {mb(peak):>9}")
    print("  peak RSS: the highest of the rounds; LOAD DATA's work is the server's")
    for line in notes(table):
        print(f"  {line}")
    print("targets (issue 14):")
    for line in targets(table):
        print(f"  {line}")


def print_markdown(table: list[Peer], args: argparse.Namespace) -> None:
    machine = f"{os.cpu_count()} cores, {platform.platform()}"
    print()
    print(
        f"**Peers** ([`bench/peers.py`](bench/peers.py), {datetime.date.today().isoformat()}, "
        f"{machine}; `{args.table}`, {args.rows:,} rows, medians of {args.rounds} interleaved "
        "round(s); peak RSS the highest of the rounds)"
    )
    print()
    print("| part | tool | wall time (median) | ratio to anchor | peak RSS |")
    print("| --- | --- | ---: | ---: | ---: |")
    for part, (title, anchor) in PARTS.items():
        for label, seconds, factor, peak in rows_of(table, part):
            ratio = f"{factor:.2f}x {anchor}"
            print(f"| {title} | {label} | {seconds:.2f} s | {ratio} | {mb(peak)} |")
    print()
    for line in [*notes(table), *targets(table)]:
        print(f"- {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    table_arguments(parser)
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KEY",
        help="leave a tool out (repeatable): "
        + ", ".join(p.key for p in peers() if p.role != "anchor"),
    )
    parser.add_argument(
        "--markdown", action="store_true", help="then the table again, as Markdown with the date"
    )
    args = parser.parse_args(argv)

    table = peers()
    keys = {p.key for p in table}
    if unknown := set(args.skip) - keys:
        parser.error(f"unknown --skip {sorted(unknown)}; the tools are {sorted(keys)}")
    table = [p for p in table if p.key not in args.skip or p.role == "anchor"]
    for line in notes(table):
        print(line)

    server(args.port)
    ensure_table(args.port, args.table, args.rows)
    with tempfile.TemporaryDirectory(prefix="syncx-peers-bench-") as tmp:
        folder = Path(tmp)
        tsv = folder / f"{args.table}.tsv"
        if any(p.key == "load-data" for p in table):
            write_tsv(tsv, args.rows)
        bench = Bench(args.port, args.table, args.rows, folder, tsv)
        try:
            for number in range(1, args.rounds + 1):
                for peer in table:
                    if peer.missing or peer.error:
                        continue
                    try:
                        run = peer.run(bench)
                    except Exception as exc:
                        if peer.role != "peer":
                            raise  # syncx or an anchor broken: the benchmark means nothing
                        lines = [line for line in str(exc).splitlines() if line.strip()]
                        peer.error = " … ".join(dict.fromkeys([lines[0], lines[-1]]))[:400]
                        print(f"round {number}: {peer.label} failed: {peer.error}", flush=True)
                        continue
                    peer.runs.append(run)
                    print(
                        f"round {number}: {PARTS[peer.part][0]:<16} {peer.label:<40} "
                        f"{run.seconds:7.2f} s {mb(run.peak_mb):>8}",
                        flush=True,
                    )
        finally:
            target = args.table
            drop(
                args.port,
                f"{target}_load",
                f"{target}_copy",
                f"{target}_sling",
                database=DLT_DATASET,
            )

    print_text(table, args)
    if args.markdown:
        print_markdown(table, args)


if __name__ == "__main__":
    main()
