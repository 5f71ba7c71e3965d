"""A full disk: the target folder, then the state folder, each on a small tmpfs of its own.

Each test mounts a tmpfs of a few MiB under ``tmp_path`` (root, or CAP_SYS_ADMIN, is needed:
without it the tests skip and say so) and runs the real ``syncx run`` on a rate-limited
``streamreader`` → ``filewriter`` CSV job with checkpoints until that filesystem is full. The run
must fail with exit 1 and one message (no traceback) naming the path and the space left; every
checkpoint file left must parse, none half written; once space is freed, ``--restore latest``
must end with the target holding exactly the source rows and nothing staged left over.

- **Target full**: a 3 MiB tmpfs holds the target folder; the job writes about 5 MiB of CSV, so a
  write into a staged file fails part way. Space is freed by remounting the tmpfs at 64 MiB.
- **State full**: the state folder is on a 1 MiB tmpfs that a filler file leaves four pages
  free: one for the ``LOCK`` file, one each for checkpoints 1-3 (a checkpoint is about 2 KiB, one
  page). Every checkpoint is kept (``--retain-checkpoints``), so writing checkpoint 4 is the
  write that fails, every run: with the default retention each new checkpoint replaces the
  oldest and the folder's use stays flat. Space is freed by deleting the filler.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from readers.stream import StreamReader, StreamReaderParams
from sync.contract import JobContext
from sync.model import Setting
from sync.ratelimit import RateLimiter
from tests.conftest import Mount, RunCli, stream_job, system_command
from tests.crash import assert_exact, latest_checkpoint, read_folder, staging_leftovers

RATE = 40_000
"""``speed.record``: rows a second, so a run lasts long enough for several checkpoints."""
INTERVAL = "0.3"
KEY = ["id", "s"]
SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string()), ("v", pa.float64())])
COLUMNS = [
    {"name": "id", "type": "id"},
    {"name": "s", "type": "string"},
    {"name": "v", "type": "double"},
]
PAGE = 4096
"""tmpfs allocates whole pages: a file of 1 to 4096 bytes takes one."""


def _remount(point: Path, size: str) -> None:
    done = system_command(["mount", "-o", f"remount,size={size}", str(point)])
    assert done.returncode == 0, done.stderr


def _expected(rows: int) -> pa.Table:
    """What ``streamreader`` generates for one channel of ``rows`` rows, read in-process."""
    params = StreamReaderParams.model_validate({"column": COLUMNS, "sliceRecordCount": [rows]})
    batch_rows = RateLimiter(0, RATE).batch_rows(4096)
    ctx = JobContext.of("expected", Path(), Setting(), run_id="r", batch_rows=batch_rows)
    reader = StreamReader(params, ctx)
    batches = [
        batch
        for split in reader.plan(1)
        for batch in reader.open(split, None).batches()
        if batch is not None
    ]
    return pa.Table.from_batches(batches, schema=reader.schema()).cast(SCHEMA)


def _job(tmp_path: Path, target: Path, rows: int) -> Path:
    writer = {"name": "filewriter", "parameter": {"path": str(target), "fileType": "csv"}}
    setting: dict[str, Any] = {
        "speed": {"readerChannel": 1, "writerChannel": 1, "record": RATE},
        "restore": {"isRestore": True},
    }
    job = stream_job(COLUMNS, [rows], writer, setting)
    path = tmp_path / "full.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def _checkpoint_files(state: Path) -> dict[str, Any]:
    """Every file of the checkpoints folder; each ``chk-*.json`` parsed (fails if one does not)."""
    found: dict[str, Any] = {}
    for path in sorted((state / "checkpoints").iterdir()):
        if path.name.endswith(".json"):
            try:
                found[path.name] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                pytest.fail(f"checkpoint {path} is half written: {exc}")
        else:
            found[path.name] = None
    return found


def _assert_failed_cleanly(done: subprocess.CompletedProcess[str], path: str, mount: Path) -> str:
    """Exit 1 (a fatal job error), no traceback, one message naming ``path`` and the space left
    on ``mount``; returns the message."""
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    message = next((ln for ln in done.stderr.splitlines() if ln.startswith("syncx: ")), "")
    assert message.startswith("syncx: no space left on device writing "), done.stderr
    assert path in message, message
    assert re.search(
        rf"\(\d+(\.\d)? (bytes|KiB) free of \d+ MiB on {re.escape(str(mount))}\)", message
    ), message
    assert "--restore latest" in message, message
    return message


def _restore_exact(
    run_cli: RunCli, job: Path, state: Path, target: Path, rows: int, restored: int
) -> None:
    """``--restore latest`` resumes from checkpoint ``restored`` and ends exact and clean."""
    args = ["run", job, f"--state-dir={state}", "--restore", "latest"]
    done = run_cli(*args, "--checkpoint-interval", INTERVAL, "--retain-checkpoints", "100")
    assert done.returncode == 0, done.stderr
    assert f"restored from checkpoint {restored}" in done.stderr, done.stderr
    assert_exact(_expected(rows), read_folder(target, "csv", SCHEMA), KEY)
    assert staging_leftovers(target, job.stem) == []


def test_target_full_fails_clearly_and_resumes_exactly(
    tmp_path: Path, run_cli: RunCli, small_fs: Mount
) -> None:
    mount = small_fs("target-fs", "3m")
    target, state, rows = mount / "out", tmp_path / "state", 120_000  # ~5 MiB of CSV
    job = _job(tmp_path, target, rows)

    done = run_cli(
        "run", job, f"--state-dir={state}", "--checkpoint-interval", INTERVAL,
        "--retain-checkpoints", "100",
    )  # fmt: skip
    message = _assert_failed_cleanly(done, str(target / ".syncx-staging"), mount)
    assert ".inprogress" in message, message  # the staged file being written, not a checkpoint
    files = _checkpoint_files(state)
    assert not [name for name in files if ".tmp" in name], files
    latest = latest_checkpoint(state)
    assert latest is not None, f"the disk filled before any checkpoint was stored\n{done.stderr}"
    assert not latest["final"]
    # the failed run deleted what it had staged and not committed (space back at once)
    assert staging_leftovers(target, job.stem) == []

    _remount(mount, "64m")
    _restore_exact(run_cli, job, state, target, rows, restored=latest["id"])


def test_state_full_fails_clearly_and_resumes_exactly(
    tmp_path: Path, run_cli: RunCli, small_fs: Mount
) -> None:
    mount = small_fs("state-fs", "1m")
    state, target, rows = mount / "state", tmp_path / "out", 120_000
    free = os.statvfs(mount).f_bavail * PAGE
    filler = mount / "filler"
    filler.write_bytes(b"\0" * (free - 4 * PAGE))  # LOCK + checkpoints 1-3 fit, 4 does not
    job = _job(tmp_path, target, rows)

    done = run_cli(
        "run", job, f"--state-dir={state}", "--checkpoint-interval", INTERVAL,
        "--retain-checkpoints", "100",
    )  # fmt: skip
    checkpoint = state / "checkpoints" / "chk-0000000004.json"
    _assert_failed_cleanly(done, str(checkpoint), mount)
    files = _checkpoint_files(state)
    assert [n for n in files if n.endswith(".json")] == [f"chk-{n:010d}.json" for n in (1, 2, 3)], (
        files
    )
    assert not [name for name in files if ".tmp" in name], files  # the failed write's temp file
    latest = latest_checkpoint(state)
    assert latest is not None and latest["id"] == 3, latest

    filler.unlink()
    _restore_exact(run_cli, job, state, target, rows, restored=3)
