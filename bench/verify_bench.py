"""Verify benchmark: ``syncx verify`` of MySQL against its Parquet copy, against the copy itself.

Not a test: it prints wall times, peak RSS and the ratio the reliability issue sets as a target
(verifying the 2M-row ``orders`` table against its Parquet copy takes at most the time of making
the copy), measured in one run on the private MariaDB and ``bench/orders.py``'s table. Each round
copies the table with ``mysqlreader`` → ``hdfswriter`` (``file://``, Snappy Parquet, 2 channels,
checkpoints every 10 s, as ``bench/hdfs_bench.py``), then verifies that copy with the same job
file; rounds are interleaved and medians compared. Every verify must say EQUAL.

Usage::

    python bench/verify_bench.py                          # 2M rows, 3 rounds
    python bench/verify_bench.py --rows 200000 --rounds 1 # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hdfs_bench import hdfs_job
from mysql_bench import SYNCX, Run, ensure_table, measured, server, syncx, table_arguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    table_arguments(parser)
    args = parser.parse_args(argv)

    server(args.port)
    ensure_table(args.port, args.table, args.rows)
    copies: list[Run] = []
    verifies: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="syncx-verify-bench-") as tmp:
        folder = Path(tmp)
        target = folder / "copy"
        job = hdfs_job(folder, "verify-copy", args.table, args.port, "file:///", str(target))
        for number in range(1, args.rounds + 1):
            shutil.rmtree(target, ignore_errors=True)
            copies.append(syncx(job, folder))
            report = folder / "report.txt"
            with report.open("w") as out:
                run = measured([str(SYNCX), "verify", str(job)], stdout=out)
            text = report.read_text()
            if "EQUAL" not in text:
                msg = f"verify did not find the copy equal: {text}"
                raise RuntimeError(msg)
            verifies.append(run)
            print(
                f"round {number}: copy {copies[-1].seconds:.2f}s ({copies[-1].peak_mb:.0f} MB), "
                f"verify {run.seconds:.2f}s ({run.peak_mb:.0f} MB)",
                flush=True,
            )
    copy_s = statistics.median(r.seconds for r in copies)
    verify_s = statistics.median(r.seconds for r in verifies)
    print()
    print(f"{args.table}: {args.rows:,} rows; medians of {args.rounds} interleaved round(s)")
    print(f"  syncx copy MySQL→Parquet     {copy_s:7.2f} s")
    print(
        f"  syncx verify MySQL↔Parquet   {verify_s:7.2f} s   ratio to the copy "
        f"{verify_s / copy_s:.2f}x (target ≤ 1x)"
    )
    print(f"  peak RSS of verify           {max(r.peak_mb for r in verifies):7.0f} MB")


if __name__ == "__main__":
    main()
