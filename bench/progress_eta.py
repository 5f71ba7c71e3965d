"""Is the progress line's ETA right? A 2M-row MySQL → Parquet job in a real terminal (tmux).

Not a test: it runs ``syncx run`` on the ``orders`` table of the project's private MariaDB
(``syncx_bench.orders``, generated once by ``bench/orders.py`` and kept) into Parquet files,
inside a detached tmux session on its own socket, captures the pane every half second, reads
the share done and the ETA off the progress line, and compares what each reading predicts
(time elapsed + ETA) with the run's real duration (from launching the command to its exit).
The target: every ETA shown in the first ten seconds is within 50% of the real duration.

Usage::

    python bench/progress_eta.py                  # 2M rows, 2 channels
    python bench/progress_eta.py --rows 200000 --table orders_200k --channels 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orders import create_orders

REPO = Path(__file__).resolve().parent.parent
DATABASE = "syncx_bench"
SOCKET = "syncx-progress-eta"
LINE = re.compile(r"(\d+)% ETA (\S+) \| read ([\d,]+) rows")
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def seconds_of(text: str) -> float | None:
    """``1m15s`` → 75; ``1h02m`` → 3720; ``?`` → None."""
    match = DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def ensure_table(port: int, table: str, rows: int) -> None:
    """``syncx_bench.<table>`` with ``rows`` orders (generated when missing or of another size)."""
    subprocess.run(
        ["bash", str(REPO / "scripts" / "mariadb-test-server.sh"), "start"],
        check=True,
        env={**os.environ, "SYNCX_TEST_MYSQL_PORT": str(port)},
        stdin=subprocess.DEVNULL,
    )
    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="root", autocommit=True, local_infile=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s",
                (DATABASE, table),
            )
            count = -1
            if cur.fetchone()[0] == 1:
                cur.execute(f"SELECT COUNT(*) FROM `{DATABASE}`.`{table}`")
                count = cur.fetchone()[0]
        if count != rows:
            print(f"generating {DATABASE}.{table} with {rows:,} rows ...", flush=True)
            create_orders(conn, DATABASE, rows, table)
    finally:
        conn.close()


def job_file(folder: Path, port: int, table: str, channels: int) -> Path:
    job = {
        "name": "progress_eta",
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "mysqlreader",
                        "parameter": {
                            "connection": [
                                {
                                    "jdbcUrl": f"jdbc:mysql://127.0.0.1:{port}/{DATABASE}",
                                    "table": [table],
                                }
                            ],
                            "username": "root",
                            "splitPk": "id",
                        },
                    },
                    "writer": {
                        "name": "filewriter",
                        "parameter": {"path": str(folder / "out"), "fileType": "parquet"},
                    },
                }
            ],
            "setting": {
                "speed": {"channel": channels},
                "restore": {"isRestore": True, "checkpointInterval": 10},
            },
        },
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def tmux(*args: str) -> str:
    done = subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=False
    )
    return done.stdout


def run_in_terminal(folder: Path, job: Path) -> tuple[float, int, list[dict[str, Any]]]:
    """Run the job in a tmux pane; return its duration, exit code and the progress readings."""
    rc_file = folder / "rc"
    command = (
        f"cd {shlex.quote(str(folder))} && "
        f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} "
        f"-c 'from sync.cli import main; main()' run {shlex.quote(str(job))}; "
        f"echo $? > {shlex.quote(str(rc_file))}; sleep 2"
    )
    started = time.monotonic()
    tmux("new-session", "-d", "-s", "eta", "-x", "200", "-y", "10", command)
    readings: list[dict[str, Any]] = []
    try:
        while not rc_file.exists():
            time.sleep(0.5)
            now = time.monotonic() - started
            found = LINE.findall(tmux("capture-pane", "-p", "-t", "eta"))
            if found:
                share, eta, rows = found[-1]
                readings.append(
                    {
                        "t": round(now, 2),
                        "share": int(share) / 100,
                        "eta": seconds_of(eta),
                        "rows": int(rows.replace(",", "")),
                    }
                )
        duration = time.monotonic() - started
        while not rc_file.read_text().strip():
            time.sleep(0.1)
        code = int(rc_file.read_text())
    finally:
        tmux("kill-server")
    return duration, code, readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SYNCX_TEST_MYSQL_PORT", "3307"))
    )
    parser.add_argument("--table", default="orders")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--channels", type=int, default=2)
    args = parser.parse_args()
    ensure_table(args.port, args.table, args.rows)
    with tempfile.TemporaryDirectory(prefix="syncx-eta-") as tmp:
        folder = Path(tmp)
        job = job_file(folder, args.port, args.table, args.channels)
        duration, code, readings = run_in_terminal(folder, job)
    early = [r for r in readings if r["t"] <= 10 and r["eta"] is not None]
    for reading in readings:
        if reading["eta"] is not None:
            predicted = reading["t"] + reading["eta"]
            reading["predicted"] = round(predicted, 1)
            reading["error"] = round(abs(predicted - duration) / duration, 3)
    worst = max((r["error"] for r in early), default=None)
    summary = {
        "rows": args.rows,
        "channels": args.channels,
        "exit_code": code,
        "duration_s": round(duration, 1),
        "readings_with_eta_in_first_10s": len(early),
        "worst_error_in_first_10s": worst,
        "within_50_percent": worst is not None and worst <= 0.5,
        "readings": readings,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
