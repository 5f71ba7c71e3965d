"""The README's first command: ``scripts/quickstart.sh`` end to end, twice, then ``--stop``.

It runs the script itself (about 20 s a run here), against its own MariaDB on a free port with
its data in a temporary folder, with ``SYNCX_PYTHON`` so that it uses this interpreter instead
of setting up ``.venv``. Runs ``jobs/quickstart.yaml`` and ``jobs/quickstart_cdc.yaml``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "quickstart.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.mysql
@pytest.mark.slow
def test_quickstart_twice_then_stop(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SYNCX_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "QUICKSTART_DIR": str(tmp_path / "qs"),
        "QUICKSTART_PORT": str(_free_port()),
    }

    def quickstart(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    try:
        for _ in range(2):  # the second run starts over from a fresh seed
            done = quickstart()
            out = done.stdout + done.stderr
            assert done.returncode == 0, out
            assert "job quickstart succeeded: read 10,000 rows, wrote 10,000" in out
            assert "job quickstart succeeded: read 250 rows, wrote 250" in out
            assert "job quickstart_cdc succeeded: read 10,750 rows" in out  # the copy: 10,250 + 500
            assert "quickstart_replica.orders = quickstart_shop.orders: 10,230 rows" in out
            assert "quickstart_replica.customers = quickstart_shop.customers: 499 rows" in out
            assert "syncx template mysqlreader hdfswriter" in out  # what to try next
            assert "no progress estimate" not in out
            assert "Traceback" not in out
            orders = tmp_path / "qs" / "warehouse" / "shop.db" / "orders"
            data = ds.dataset(orders, format="parquet", partitioning="hive")
            assert data.count_rows() == 10250
            assert 3 <= len(data.files) <= 4  # a file per channel that read rows, per run
            assert {Path(f).parent.name.split("=")[0] for f in data.files} == {"dt"}
    finally:
        stopped = quickstart("--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stderr
