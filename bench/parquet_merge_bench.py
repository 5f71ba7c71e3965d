"""What merging a group's Parquet segments costs: re-encoding them vs concatenating row groups.

``hdfswriter`` merges the segments of a group (one per checkpoint) into one file at commit
(:mod:`writers.hdfs`). This writes ``--segments`` segments of ``--rows-per-segment`` rows of the
``orders`` table of :mod:`bench.orders` (the same rows as its MySQL table, parsed from its TSV)
with the project's Parquet writer (Snappy, as ``hdfswriter`` writes them), then merges them in a
fresh subprocess per run, in interleaved rounds: ``reencode`` (``FileFormat.merge``: every row
group decoded and written again, the merge before byte-level concatenation) and ``concat``
(``Parquet.merge``). Each run prints its wall-clock seconds, its peak RSS (``ru_maxrss`` of the
subprocess, which includes the interpreter with pyarrow loaded: ``idle`` shows that much; the
segments are written in a subprocess too, as a child's ``ru_maxrss`` counts what its parent
had when it forked) and the merged file's size and row groups.

Usage::

    python bench/parquet_merge_bench.py                          # 3 x 1,000,000 rows, 3 rounds
    python bench/parquet_merge_bench.py --rows-per-segment 200000 --rounds 1
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.orders import ARROW_SCHEMA as SCHEMA
from bench.orders import CHUNK_ROWS, DEFAULT_SEED, _note_corpus, chunk_tsv
from libs.formats.base import FileFormat, Opener
from libs.formats.columnar import Parquet

OPTIONS: dict[str, object] = {"compress": "snappy"}
MODES = ("reencode", "concat")


def write_segments(folder: Path, segments: int, rows: int) -> list[Path]:
    corpus = _note_corpus(DEFAULT_SEED)
    convert = pacsv.ConvertOptions(column_types=SCHEMA)
    read = pacsv.ReadOptions(column_names=SCHEMA.names)
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    paths = []
    chunk = 0
    for number in range(segments):
        path = folder / f"segment-{number}.parquet"
        writer = Parquet().writer(path.open("wb"), SCHEMA, OPTIONS)
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            tsv = chunk_tsv(chunk, number * rows + start + 1, count, DEFAULT_SEED, corpus)
            chunk += 1
            table = pacsv.read_csv(io.BytesIO(tsv.encode()), read, parse, convert)
            for batch in table.to_batches(max_chunksize=10_000):
                writer.write(batch)
        writer.close()
        paths.append(path)
    return paths


def _opener(path: Path) -> Opener:
    return lambda: path.open("rb")


def child(mode: str, folder: Path, segments: int, rows: int) -> None:
    """One merge in this process; prints its seconds and peak RSS as JSON."""
    if mode == "write":
        started = time.perf_counter()
        paths = write_segments(folder, segments, rows)
        size = sum(p.stat().st_size for p in paths) / 2**20
        groups = sum(pq.read_metadata(p).num_row_groups for p in paths)
        print(
            f"{len(paths)} segments of {rows} rows, {size:.1f} MiB, {groups} row groups, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        return
    sources = sorted(folder.glob("segment-*.parquet"))
    target = folder / f"merged-{mode}.parquet"
    started = time.perf_counter()
    if mode != "idle":
        openers: list[Opener] = [_opener(p) for p in sources]
        merge = Parquet().merge if mode == "concat" else FileFormat.merge.__get__(Parquet())
        merge(openers, target.open("wb"), OPTIONS)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"mode": mode, "seconds": seconds, "peak_mb": peak}
    if mode != "idle":
        metadata = pq.read_metadata(target)
        result |= {
            "rows": metadata.num_rows,
            "row_groups": metadata.num_row_groups,
            "mb": target.stat().st_size / 2**20,
        }
        target.unlink()
    print(json.dumps(result))


def run(mode: str, folder: Path, *more: str) -> str:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--dir", str(folder), *more],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--rows-per-segment", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=[*MODES, "idle", "write"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help="keep the segments here (default: a temp dir)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.segments, args.rows_per_segment)
        return
    with tempfile.TemporaryDirectory(prefix="syncx-pqmerge-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not sorted(folder.glob("segment-*.parquet")):
            sizes = (
                "--segments",
                str(args.segments),
                "--rows-per-segment",
                str(args.rows_per_segment),
            )
            print(run("write", folder, *sizes))
        print(run("idle", folder))
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for round_number in range(args.rounds):
            order = MODES if round_number % 2 == 0 else MODES[::-1]
            for mode in order:
                output = run(mode, folder)
                results[mode].append(json.loads(output))
                print(output)
        for mode, runs in results.items():
            print(
                f"{mode:>8}: median {statistics.median(r['seconds'] for r in runs):.2f} s, "
                f"peak RSS {statistics.median(r['peak_mb'] for r in runs):.0f} MB, "
                f"{runs[0]['mb']:.1f} MiB in {runs[0]['row_groups']:.0f} row groups"
            )


if __name__ == "__main__":
    main()
