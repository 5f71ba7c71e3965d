"""What periodic checkpoints cost: a stream → Parquet job with and without them.

The same job (``streamreader``, 2 channels, 7 columns of mixed types → ``filewriter`` Parquet,
2 writer channels) runs with a checkpoint every ``--interval`` seconds (10 by default) and with
none but the final one, in interleaved rounds (A B, B A, A B, ... so that drift of the machine
hits both alike). Each run starts from an empty target, a fresh state directory and no dirty
pages (``sync`` before it). Throughput is rows written per second of the job's own clock
(``elapsedSeconds`` in ``--metrics-file``: start-up of the interpreter excluded); wall-clock
seconds and rows per CPU-second (user + system time of the run) are shown beside it. The medians and their ratio are printed; the target is a
CPU-time overhead under 3%. On a shared machine the clock-based ratio is as noisy as the neighbours;
the CPU-time ratio is much less so (it does not see stalls, only work).

Usage::

    python bench/checkpoint_cost.py                      # 40,000,000 rows per channel (3 checkpoints a run), 3 rounds
    python bench/checkpoint_cost.py --rows-per-channel 2000000 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROWS_PER_CHANNEL = 40_000_000
"""About 20-30 s per run at 0.8-1.3M rows/s (2 cores, shared); ~1.5 GB of Parquet per run."""

COLUMNS = [
    {"name": "id", "type": "id"},
    {"name": "s", "type": "string"},
    {"name": "v", "type": "double"},
    {"name": "n", "type": "long"},
    {"name": "ts", "type": "timestamp"},
    {"name": "d", "type": "decimal"},
    {"name": "b", "type": "boolean"},
]


@dataclass
class Result:
    """One run of the job."""

    mode: str
    rows: int
    seconds: float
    wall: float
    cpu: float
    """User + system CPU seconds of the run's process."""
    checkpoints: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.rows / self.cpu


def syncx_command() -> list[str]:
    script = Path(sys.executable).with_name("syncx")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from sync.cli import main; main()"]


def write_job(folder: Path, rows_per_channel: int) -> Path:
    job = {
        "name": "checkpoint-cost",
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "streamreader",
                        "parameter": {
                            "column": COLUMNS,
                            "sliceRecordCount": [rows_per_channel, rows_per_channel],
                        },
                    },
                    "writer": {
                        "name": "filewriter",
                        "parameter": {"path": str(folder / "out"), "fileType": "parquet"},
                    },
                }
            ],
            "setting": {"speed": {"channel": 2}},
        },
    }
    path = folder / "checkpoint-cost.json"
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def run_once(job: Path, folder: Path, mode: str, interval: float) -> Result:
    shutil.rmtree(folder / "out", ignore_errors=True)
    shutil.rmtree(folder / "state", ignore_errors=True)
    os.sync()  # the last run's dirty pages must not slow this one's fsyncs down
    metrics = folder / "metrics.json"
    args = [
        *syncx_command(),
        "run",
        str(job),
        "--state-dir",
        str(folder / "state"),
        "--metrics-file",
        str(metrics),
    ]
    if mode == "checkpointed":
        args += ["--checkpoint-interval", str(interval)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{mode} run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    report = json.loads(metrics.read_text(encoding="utf-8"))["metrics"]
    return Result(
        mode=mode,
        rows=int(report["numWrite"]),
        seconds=float(report["elapsedSeconds"]),
        wall=wall,
        cpu=cpu,
        checkpoints=int(report["numCheckpoints"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-channel", type=int, default=DEFAULT_ROWS_PER_CHANNEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="Checkpoint interval (s).")
    parser.add_argument("--workdir", type=Path, default=None, help="Default: a temp folder.")
    options = parser.parse_args()

    folder = options.workdir or Path(tempfile.mkdtemp(prefix="syncx-checkpoint-cost-"))
    folder.mkdir(parents=True, exist_ok=True)
    job = write_job(folder, options.rows_per_channel)
    total = 2 * options.rows_per_channel
    print(
        f"stream -> parquet, 2 channels, {total:,} rows, {len(COLUMNS)} columns; "
        f"{options.rounds} interleaved rounds; checkpoints every {options.interval:g}s vs none"
    )
    results: list[Result] = []
    try:
        for round_no in range(options.rounds):
            order = ["checkpointed", "plain"] if round_no % 2 == 0 else ["plain", "checkpointed"]
            for mode in order:
                result = run_once(job, folder, mode, options.interval)
                results.append(result)
                print(
                    f"  round {round_no + 1} {mode:<12} {result.rate:>12,.0f} rows/s  "
                    f"job {result.seconds:6.2f}s  wall {result.wall:6.2f}s  "
                    f"cpu {result.cpu:6.2f}s ({result.cpu_rate:>9,.0f} rows/cpu-s)  "
                    f"checkpoints {result.checkpoints}",
                    flush=True,
                )
    finally:
        if options.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)

    def median_rate(mode: str) -> float:
        return statistics.median(r.rate for r in results if r.mode == mode)

    def median_wall(mode: str) -> float:
        return statistics.median(total / r.wall for r in results if r.mode == mode)

    def median_cpu(mode: str) -> float:
        return statistics.median(r.cpu_rate for r in results if r.mode == mode)

    checkpointed, plain = median_rate("checkpointed"), median_rate("plain")
    ratio = checkpointed / plain
    print(f"median with checkpoints every {options.interval:g}s: {checkpointed:,.0f} rows/s")
    print(f"median without periodic checkpoints: {plain:,.0f} rows/s")
    print(
        f"ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%); by wall clock "
        f"{median_wall('checkpointed') / median_wall('plain'):.3f}; by CPU time "
        f"{median_cpu('checkpointed') / median_cpu('plain'):.3f}"
    )
    cost = 1 - median_cpu("checkpointed") / median_cpu("plain")
    print(
        f"checkpoint overhead in CPU time: {cost * 100:+.1f}% "
        f"(target under 3%: {'yes' if cost < 0.03 else 'NO'}); a run must outlast "
        f"--interval for checkpoints to happen (counted per run above)"
    )


if __name__ == "__main__":
    main()
