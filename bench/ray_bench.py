"""Ray benchmark: the same MySQL → Parquet job with ``--runner ray`` against the local runner.

Not a test: it prints wall times, peak memory and the ratio the Ray issue sets as a target,
measured in one run: the 2M-row ``orders`` table (``bench/orders.py``, in ``syncx_bench`` on the
project's private MariaDB), 2 channels, checkpoints every 2 s, into Parquet;

- ``--runner local`` (threads) and ``--runner ray --address`` a one-node Ray started once by this
  script (``ray start --head``: the job pays for its actors and the object store, not for
  starting Ray), rounds interleaved, medians compared: at most 1.3x;
- peak RSS of the driver (the ``syncx`` process) and of each actor's worker process (sampled
  from ``/proc`` every 0.2 s; Linux), for both runners.

Usage::

    python bench/ray_bench.py                      # 2M rows, 3 rounds
    python bench/ray_bench.py --rows 200000 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mysql_bench import SYNCX, Run, ensure_table, job_file, measured, reader, server

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
RAY = Path(sys.executable).with_name("ray")


class ActorMemory:
    """Peak RSS of every Ray actor worker process (``ray::_ChannelActor``)."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                    if "_ChannelActor" not in cmdline:
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
                pid = int(proc.name)
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), int(rss[0]) / 1024 if rss else 0.0)


def run_job(job: Path, folder: Path, *runner: str) -> tuple[Run, list[float]]:
    state = folder / "state" / job.stem
    out = folder / "out"
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    with ActorMemory() as actors:
        run = measured(
            [str(SYNCX), "run", str(job), "--state-dir", str(state), "-p", f"out={out}", *runner],
            env=RAY_ENV,
        )
    shutil.rmtree(out, ignore_errors=True)
    return run, sorted(actors.peaks.values(), reverse=True)


def start_ray(folder: Path) -> str:
    port = 6390
    subprocess.run(
        [str(RAY), "stop", "--force"],
        check=False,
        capture_output=True,
        env={**os.environ, **RAY_ENV},
    )
    subprocess.run(
        [
            str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--include-dashboard=false", f"--object-store-memory={200 * 2**20}",
            f"--temp-dir={folder / 'ray'}",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    return f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SYNCX_TEST_MYSQL_PORT", "3307"))
    )
    args = parser.parse_args(argv)
    server(args.port)
    table = "orders" if args.rows == 2_000_000 else f"orders_{args.rows // 1000}k"
    ensure_table(args.port, table, args.rows)
    writer = {
        "name": "filewriter",
        "parameter": {"path": "${out}", "fileType": "parquet", "writeMode": "overwrite"},
    }
    with tempfile.TemporaryDirectory(prefix="syncx-ray-bench-") as tmp:
        folder = Path(tmp)
        job = job_file(folder, "ray-bench", reader(args.port, table), writer)
        address = start_ray(folder)
        local: list[Run] = []
        remote: list[Run] = []
        actor_peaks: list[list[float]] = []
        try:
            for number in range(1, args.rounds + 1):
                local.append(run_job(job, folder, "--runner", "local")[0])
                run, peaks = run_job(job, folder, "--runner", "ray", "--address", address)
                remote.append(run)
                actor_peaks.append(peaks)
                print(
                    f"round {number}: local {local[-1].seconds:.2f}s ({local[-1].peak_mb:.0f} MB), "
                    f"ray {remote[-1].seconds:.2f}s (driver {remote[-1].peak_mb:.0f} MB, actors "
                    f"{', '.join(f'{p:.0f}' for p in peaks)} MB)",
                    flush=True,
                )
        finally:
            subprocess.run(
                [str(RAY), "stop", "--force"],
                check=False,
                capture_output=True,
                env={**os.environ, **RAY_ENV},
            )
    local_s = statistics.median(r.seconds for r in local)
    ray_s = statistics.median(r.seconds for r in remote)
    print()
    print(f"{table}: {args.rows:,} rows → Parquet, 2 channels; medians of {args.rounds} round(s)")
    print(f"  --runner local                 {local_s:7.2f} s")
    print(
        f"  --runner ray (one-node Ray)    {ray_s:7.2f} s   ratio {ray_s / local_s:.2f}x (≤ 1.3x)"
    )
    print(f"  peak RSS local process         {max(r.peak_mb for r in local):7.0f} MB")
    print(f"  peak RSS ray driver            {max(r.peak_mb for r in remote):7.0f} MB")
    worst = max((max(p) for p in actor_peaks if p), default=0.0)
    total = max((sum(p) for p in actor_peaks if p), default=0.0)
    print(f"  peak RSS of one actor worker   {worst:7.0f} MB (all actors together {total:.0f} MB)")


if __name__ == "__main__":
    main()
