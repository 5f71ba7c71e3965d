"""The state backend on shared storage: ``--state-dir webhdfs://...`` and ``file:///...``.

Against the WebHDFS test server: checkpoints, the ``.committing`` markers, retention and the run
lock live on the store, a crashed run restores from there, and a lock held by another host is
refused with what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sync.state import FORMAT
from tests.conftest import stream_job
from tests.servers.webhdfs import WebHdfsServer

pytestmark = pytest.mark.hdfs


def _job(out: Path, counts: list[int]) -> dict:
    return stream_job(
        counts=counts,
        writer={
            "name": "filewriter",
            "parameter": {"path": str(out), "fileType": "parquet", "writeMode": "overwrite"},
        },
        setting={
            "speed": {"channel": 2, "record": 60_000},
            "restore": {"isRestore": True, "checkpointInterval": 0.2},
        },
    )


def test_checkpoints_on_webhdfs_restore_after_a_crash(tmp_path, run_cli, write_job) -> None:
    with WebHdfsServer(tmp_path / "hdfs") as server:
        url = f"webhdfs://127.0.0.1:{server.namenode_port}/state/crash"
        job = write_job(_job(tmp_path / "out", [60_000, 60_000]))
        crashed = run_cli(
            "run", job, "--state-dir", url, env={"SYNCX_CRASH_AT": "checkpoint-stored@2"}
        )
        assert crashed.returncode == -9, crashed.stderr
        folder = server.root / "state" / "crash" / "checkpoints"
        stored = sorted(p.name for p in folder.iterdir())
        assert "chk-0000000002.json" in stored, stored
        assert not (tmp_path / ".syncx" / "state").exists()  # nothing of the state went local
        # the dead process's lock (this host, pid gone) is taken over
        assert (server.root / "state" / "crash" / "LOCK").exists()

        listed = run_cli("checkpoints", "list", job, "--state-dir", url)
        assert listed.returncode == 0, listed.stderr
        assert "periodic" in listed.stdout

        resumed = run_cli("run", job, "--state-dir", url, "--restore", "latest")
        assert resumed.returncode == 0, resumed.stderr
        assert "restored from checkpoint 2" in resumed.stderr
        assert pq.read_table(tmp_path / "out").num_rows == 120_000
        assert not (server.root / "state" / "crash" / "LOCK").exists()
        names = sorted(p.name for p in folder.iterdir())
        assert len([n for n in names if n.endswith(".json")]) <= 3, names  # retention
        latest = json.loads((folder / [n for n in names if n.endswith(".json")][-1]).read_text())
        assert latest["final"] is True
        assert latest["format"] == FORMAT
        assert latest["fingerprint"]["writer"]["name"] == "filewriter"


def test_lock_of_another_host_is_refused(tmp_path, run_cli, write_job) -> None:
    with WebHdfsServer(tmp_path / "hdfs") as server:
        url = f"webhdfs://127.0.0.1:{server.namenode_port}/state/locked"
        (server.root / "state" / "locked").mkdir(parents=True)
        lock = server.root / "state" / "locked" / "LOCK"
        lock.write_text("pid 1 on host elsewhere since 2026-01-01T00:00:00+00:00 token x\n")
        job = write_job(_job(tmp_path / "out", [10]))
        result = run_cli("run", job, "--state-dir", url)
        assert result.returncode == 1
        assert "in use by pid 1 on host elsewhere" in result.stderr
        assert "/state/locked/LOCK" in result.stderr
        assert "Traceback" not in result.stderr


def test_file_url_and_unknown_scheme(tmp_path, run_cli, write_job) -> None:
    job = write_job(_job(tmp_path / "out", [1000]))
    shared = tmp_path / "mount" / "state"
    result = run_cli("run", job, "--state-dir", f"file://{shared}")
    assert result.returncode == 0, result.stderr
    assert (shared / "checkpoints" / "chk-0000000001.json").exists()

    bad = run_cli("run", job, "--state-dir", "s3://bucket/state")
    assert bad.returncode == 2
    assert "--state-dir s3://bucket/state: no filesystem for 's3://'" in bad.stderr
    assert "webhdfs" in bad.stderr
    assert "Traceback" not in bad.stderr
