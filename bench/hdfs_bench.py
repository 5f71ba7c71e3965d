"""HDFS benchmark: MySQL → HDFS Parquet against ``mariadb-dump``, on the local disk and over WebHDFS.

Not a test: it prints wall times, peak RSS and the ratios the HDFS issue sets as targets,
measured in one run on the project's private MariaDB (``scripts/mariadb-test-server.sh``) and the
``orders`` table of ``bench/orders.py`` (``mysqlreader`` → ``hdfswriter``, Snappy Parquet,
the Hive types declared, 2 channels, checkpoints every 10 s):

- (a) ``defaultFS: file:///`` (a local folder) against ``mariadb-dump --quick`` of the same
  table: at most 2x (the HDFS issue), 1.25x (the performance issue);
- (b) the WebHDFS test server (``tests/servers/webhdfs.py``, NameNode + DataNode over HTTP),
  run in its own process so that it does not share syncx's GIL, against (a): at most 1.5x;
- peak RSS of the syncx process (``ru_maxrss`` of the child): at most 300 MB, at ``--rows`` and
  at ``--big-rows`` (a second table, 8M rows by default, generated once), whose rows/s must be
  within 10% of (a)'s.

Rounds are interleaved (dump, local, WebHDFS, dump, ...) and the medians are compared, so that
a busy machine slows both sides of a ratio alike. Every run's files are counted back (rows, and
their sizes: one file per channel below ``maxFileSize``). The table is generated once into the
database ``syncx_bench`` and kept for later runs (``bench/mysql_bench.py`` uses it too).

Usage::

    python bench/hdfs_bench.py                          # 2M rows, 3 rounds
    python bench/hdfs_bench.py --rows 200000 --rounds 1 # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mysql_bench import (
    REPO,
    Run,
    dump,
    ensure_table,
    job_file,
    reader,
    server,
    syncx,
    table_arguments,
    written,
)
from orders import HIVE_COLUMNS

CHECKPOINT_SECONDS = 10
WAREHOUSE = "/user/hive/warehouse/bench.db/orders"


@contextmanager
def webhdfs_server(root: Path) -> Iterator[str]:
    """The WebHDFS test server in its own process; yields its ``webhdfs://`` address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.webhdfs", "--root", str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # http://127.0.0.1:PORT once it listens
        if not url.startswith("http://"):
            msg = f"the WebHDFS test server did not start (it printed {url!r})"
            raise RuntimeError(msg)
        yield "webhdfs://" + url.removeprefix("http://")
    finally:
        process.terminate()
        process.wait(timeout=10)


def hdfs_job(
    folder: Path,
    name: str,
    table: str,
    port: int,
    default_fs: str,
    path: str,
    columns: list[dict[str, str]] | None = None,
) -> Path:
    """``mysql_bench``'s job file with an ``hdfswriter`` and checkpoints every 10 s.

    ``columns``: the writer's ``column`` list (names and Hive types), as a ChunJun job declares
    the Hive table; without it the writer takes the reader's types.
    """
    writer: dict[str, Any] = {
        "name": "hdfswriter",
        "parameter": {
            "defaultFS": default_fs,
            "hadoopConfig": {"hadoop.user.name": "syncx"},
            "path": path,
            "fileType": "parquet",
            "compress": "snappy",
            "writeMode": "overwrite",
        },
    }
    if columns:
        writer["parameter"]["column"] = columns
    return job_file(folder, name, reader(port, table), writer, CHECKPOINT_SECONDS)


def to_hdfs(job: Path, folder: Path, target: Path, rows: int) -> tuple[Run, list[int]]:
    """One run of ``job`` writing into the local folder ``target``; its files, then removed."""
    run = syncx(job, folder)
    sizes = written(target, rows)
    shutil.rmtree(target, ignore_errors=True)
    return run, sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    table_arguments(parser)
    parser.add_argument(
        "--big-rows", type=int, default=8_000_000, help="second table, rows/s and RSS (0: skip)"
    )
    args = parser.parse_args(argv)

    server(args.port)
    ensure_table(args.port, args.table, args.rows)
    big_table = f"{args.table}_{args.big_rows // 1_000_000}m"
    if args.big_rows:
        ensure_table(args.port, big_table, args.big_rows)
    with tempfile.TemporaryDirectory(prefix="syncx-hdfs-bench-") as tmp:
        folder = Path(tmp)
        root = folder / "webhdfs-root"
        local = folder / "local"
        dumps: list[float] = []
        locals_: list[Run] = []
        remotes: list[Run] = []
        bigs: list[Run] = []
        local_sizes: list[int] = []
        remote_sizes: list[int] = []
        with webhdfs_server(root) as default_fs:
            local_job = hdfs_job(
                folder, "hdfs-local", args.table, args.port, "file:///", str(local), HIVE_COLUMNS
            )
            big_job = hdfs_job(
                folder, "hdfs-big", big_table, args.port, "file:///", str(local), HIVE_COLUMNS
            )
            remote_job = hdfs_job(
                folder, "hdfs-webhdfs", args.table, args.port, default_fs, WAREHOUSE
            )
            for number in range(1, args.rounds + 1):
                dumps.append(dump(args.port, args.table, folder / "dump.sql").seconds)
                (folder / "dump.sql").unlink()
                run, local_sizes = to_hdfs(local_job, folder, local, args.rows)
                locals_.append(run)
                run, remote_sizes = to_hdfs(
                    remote_job, folder, root / WAREHOUSE.lstrip("/"), args.rows
                )
                remotes.append(run)
                line = (
                    f"round {number}: dump {dumps[-1]:.2f}s, syncx→file:// "
                    f"{locals_[-1].seconds:.2f}s ({locals_[-1].peak_mb:.0f} MB), syncx→WebHDFS "
                    f"{remotes[-1].seconds:.2f}s ({remotes[-1].peak_mb:.0f} MB)"
                )
                if args.big_rows:
                    bigs.append(to_hdfs(big_job, folder, local, args.big_rows)[0])
                    line += f", {args.big_rows:,} rows {bigs[-1].seconds:.2f}s "
                    line += f"({bigs[-1].peak_mb:.0f} MB)"
                print(line, flush=True)

    dump_s = statistics.median(dumps)
    local_s = statistics.median(r.seconds for r in locals_)
    remote_s = statistics.median(r.seconds for r in remotes)
    peak = max(r.peak_mb for r in [*locals_, *remotes])
    mib = 1024 * 1024
    print()
    print(f"{args.table}: {args.rows:,} rows; medians of {args.rounds} interleaved round(s)")
    print(f"  mariadb-dump --quick              {dump_s:7.2f} s")
    print(
        f"  syncx MySQL→HDFS Parquet, file:// {local_s:7.2f} s   ratio to dump "
        f"{local_s / dump_s:.2f}x (target ≤ 1.25x)"
    )
    print(
        f"  syncx MySQL→HDFS Parquet, WebHDFS {remote_s:7.2f} s   ratio to file:// "
        f"{remote_s / local_s:.2f}x (target ≤ 1.5x)"
    )
    print(f"  peak RSS of syncx                 {peak:7.0f} MB, highest run (target ≤ 300 MB)")
    if bigs:
        small_rate = args.rows / local_s
        big_rate = args.big_rows / statistics.median(r.seconds for r in bigs)
        big_peak = max(r.peak_mb for r in bigs)
        print(
            f"  rows/s at {args.rows:,} and {args.big_rows:,} rows (file://)   "
            f"{small_rate:,.0f} vs {big_rate:,.0f}: {big_rate / small_rate:.2f}x "
            "(target within 10%)"
        )
        print(f"  peak RSS at {args.big_rows:,} rows       {big_peak:7.0f} MB (target ≤ 300 MB)")
    print(f"  files, file://  {[f'{s / mib:.1f} MiB' for s in local_sizes]}")
    print(f"  files, WebHDFS  {[f'{s / mib:.1f} MiB' for s in remote_sizes]}")


if __name__ == "__main__":
    main()
