"""Every example job in jobs/ runs (those needing a server run in that server's test module)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, RunCli

JOBS = REPO / "jobs"


def _chunjun_stream(tmp_path: Path, run_cli: RunCli) -> None:
    done = run_cli("run", JOBS / "chunjun_stream.json")
    assert done.returncode == 0, done.stderr
    ids = [int(line.split(",")[0]) for line in done.stdout.splitlines()]
    assert ids == list(range(1, 30, 2))  # the transformer kept odd ids
    assert all(len(line.split(",")) == 3 for line in done.stdout.splitlines())


RUNS: dict[str, Callable[[Path, RunCli], None]] = {
    "chunjun_stream.json": _chunjun_stream,
}
NEEDS_SERVER = {
    # job file → the test module that runs it
    "quickstart.yaml": "tests/test_quickstart.py",
    "quickstart_cdc.yaml": "tests/test_quickstart.py",
    "sqlite_to_sqlite.yaml": "tests/test_sql_plugins.py",
    "stream_to_hdfs_orc.yaml": "tests/test_hdfs.py",
    "mysql_to_mysql.json": "tests/test_mysql.py",
    "mysql_incremental.yaml": "tests/test_mysql.py",
    "mysql_to_parquet.yaml": "tests/test_mysql.py",
    "binlog_to_mysql.yaml": "tests/test_binlog.py",
    "binlog_to_parquet.yaml": "tests/test_binlog.py",
    "binlog_chunjun.json": "tests/test_binlog.py",
    "mysql_to_hdfs_parquet.yaml": "tests/test_mysql_hdfs.py",
    "mysql_to_hdfs_chunjun.json": "tests/test_mysql_hdfs.py",
    "applog_example.yaml": "tests/test_conformance_example.py",  # needs the example package
    "mysql_schedule.yaml": "tests/test_schedule_mysql.py",
    "kafka_to_parquet.yaml": "tests/test_kafka_cdc.py",
    "mysql_to_kafka.yaml": "tests/test_kafka_cdc.py",
    "binlog_to_kafka.yaml": "tests/test_kafka_cdc.py",
    "kafka_to_mysql.yaml": "tests/test_kafka_cdc.py",
}


def test_every_job_is_run_somewhere() -> None:
    files = {p.name for p in JOBS.iterdir()}
    assert files == set(RUNS) | set(NEEDS_SERVER), "add the new job to RUNS or NEEDS_SERVER"
    for name, module in NEEDS_SERVER.items():
        assert name in (REPO / module).read_text(encoding="utf-8"), f"{module} does not run {name}"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_job_runs(name: str, tmp_path: Path, run_cli: RunCli) -> None:
    RUNS[name](tmp_path, run_cli)
