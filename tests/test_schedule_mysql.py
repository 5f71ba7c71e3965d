"""``syncx schedule serve`` with MySQL jobs against the private MariaDB (port 3307).

A minute of an incremental job (jobs/mysql_schedule.yaml) on ``every: 3s`` while rows are
inserted: the target ends equal to the source, each row copied by exactly one run. And a
scheduler killed with SIGKILL in the middle of a run: started again, it marks the run abandoned
and retries it from its checkpoint, the target exact.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import yaml

from tests.conftest import REPO, RunCli
from tests.servers.mariadb import MariaDB, ensure_server
from tests.test_schedule import Served, _history, wait_for

pytestmark = pytest.mark.mysql

JOB = REPO / "jobs" / "mysql_schedule.yaml"


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def database(server: MariaDB) -> Iterator[str]:
    name = server.create_database("syncx_sched")
    try:
        yield name
    finally:
        server.drop_database(name)


def _sql(server: MariaDB, database: str, *statements: str) -> list[tuple[object, ...]]:
    conn: pymysql.connections.Connection = server.connect(database)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def _same(server: MariaDB, database: str, source: str, target: str) -> tuple[int, int]:
    """(rows in target, distinct ids), after asserting the tables' checksums agree."""
    sums = _sql(server, database, f"CHECKSUM TABLE `{source}`, `{target}` EXTENDED")
    assert sums[0][1] == sums[1][1], sums
    count = _sql(server, database, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM `{target}`")[0]
    return int(count[0]), int(count[1])  # type: ignore[call-overload]


def test_job_mysql_schedule_served_for_a_minute_while_rows_arrive(
    server: MariaDB, database: str, tmp_path: Path, run_cli: RunCli
) -> None:
    _sql(
        server,
        database,
        "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, sku VARCHAR(20) NOT NULL, "
        "qty INT NOT NULL, price DECIMAL(10,2), updated_at DATETIME(6) NOT NULL)",
        "CREATE TABLE orders_copy LIKE orders",
        "INSERT INTO orders (sku, qty, price, updated_at) SELECT CONCAT('sku-', seq), seq % 9, "
        "seq / 4, NOW(6) FROM seq_1_to_2000",
    )
    db = f"sqlite:///{tmp_path / 'history.db'}"
    served = Served(tmp_path, JOB, "--db", db, "-p", f"mysql_db={database}", "-p", "every=3s")
    try:
        started = time.monotonic()
        page_seen = False
        while time.monotonic() - started < 55:
            _sql(
                server,
                database,
                "INSERT INTO orders (sku, qty, price, updated_at) SELECT CONCAT('new-', seq), "
                "seq, seq / 3, NOW(6) FROM seq_1_to_25",
            )
            if not page_seen and time.monotonic() - started > 25:
                page = served.get("/") or ""
                page_seen = "mysql_schedule" in page and "s-succeeded" in page
            time.sleep(0.5)
        assert page_seen, served.output()
        total = int(_sql(server, database, "SELECT COUNT(*) FROM orders")[0][0])  # type: ignore[call-overload]
        wait_for(
            lambda: _sql(server, database, "SELECT COUNT(*) FROM orders_copy")[0][0] == total,
            60,
            served.output,
        )
        assert _same(server, database, "orders", "orders_copy") == (total, total)
        # paused: no new fire starts; the run in flight ends, then the scheduler stops
        assert run_cli("schedule", "pause", "mysql_schedule", "--db", db).returncode == 0
        wait_for(
            lambda: all(r.state != "running" for r in _history(db, "mysql_schedule")),
            60,
            served.output,
        )
        metrics = served.get("/metrics") or ""
        assert 'syncx_schedule_paused{job="mysql_schedule"} 1' in metrics
        assert served.stop() == 0, served.output()
    finally:
        if served.process.poll() is None:
            served.stop(signal.SIGKILL)
    runs = _history(db, "mysql_schedule")
    succeeded = [r for r in runs if r.state == "succeeded"]
    # ~15 on a quiet machine (a run takes 2-3 s); a loaded one runs fewer, skipping fires
    assert len(succeeded) >= 3, [(r.state, r.error) for r in runs]
    # a fire is missed when the scheduler's loop ran more than a period (3 s) late: its log
    # says which fire and when
    late = [line for line in Path(served.log.name).read_text().splitlines() if "missed" in line]
    assert {r.state for r in runs} <= {"succeeded", "skipped"}, (
        [(r.state, r.error) for r in runs],
        late,
    )
    # every row was copied by exactly one run
    assert sum(r.rows_written for r in succeeded) == total
    assert sum(r.rows_read for r in succeeded) == total
    assert sum(1 for r in succeeded if r.rows_written) >= 3  # rows arrived between fires
    history = run_cli("schedule", "history", "mysql_schedule", "--db", db, "-n", "500")
    assert history.returncode == 0
    listed = [
        int(n.replace(",", ""))
        for n in re.findall(r"succeeded  read [\d,]+ wrote ([\d,]+)", history.stdout)
    ]
    assert sum(listed) == total and len(listed) == len(succeeded)
    outcome = 'syncx_schedule_runs_total{job="mysql_schedule",outcome="succeeded"}'
    counted = re.search(re.escape(outcome) + r" (\d+)", metrics)
    assert counted is not None and int(counted.group(1)) >= len(succeeded) - 1, metrics
    assert 'syncx_numWrite{job="mysql_schedule"}' in metrics
    assert 'syncx_schedule_last_success_timestamp_seconds{job="mysql_schedule"}' in metrics


def test_scheduler_killed_mid_run_then_restarted_resumes_from_the_checkpoint(
    server: MariaDB, database: str, tmp_path: Path, run_cli: RunCli
) -> None:
    rows = 60_000
    _sql(
        server,
        database,
        "CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n DECIMAL(12,3))",
        f"INSERT INTO src SELECT seq, CONCAT('v-', seq), seq / 7 FROM seq_1_to_{rows}",
        "CREATE TABLE dst LIKE src",
    )
    job = yaml.safe_load(JOB.read_text(encoding="utf-8"))
    job["name"] = "killed"
    job["schedule"] = {"every": "1h", "retries": {"attempts": 1}}
    content = job["job"]["content"][0]
    for side, table in (("reader", "src"), ("writer", "dst")):
        content[side]["parameter"]["connection"][0]["table"] = [table]
    for key in ("increColumn", "useMaxFunc"):
        content["reader"]["parameter"].pop(key)
    content["reader"]["parameter"]["fetchSize"] = 1000
    job["job"]["setting"] = {
        "speed": {"channel": 1, "record": 10_000},
        "restore": {"isRestore": True, "checkpointInterval": 0.5},
    }
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'history.db'}"
    args = (path, "--db", db, "-p", f"mysql_db={database}")
    first = Served(tmp_path, *args)
    try:
        done = run_cli("schedule", "trigger", "killed", "--db", db)
        assert done.returncode == 0, done.stderr
        running = wait_for(
            lambda: [
                r
                for r in _history(db, "killed")
                if r.state == "running" and r.checkpoint_id and (r.rows_read or 0) >= 10_000
            ],
            60,
            first.output,
        )
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        if first.process.poll() is None:
            first.stop(signal.SIGKILL)
    copied = int(_sql(server, database, "SELECT COUNT(*) FROM dst")[0][0])  # type: ignore[call-overload]
    assert 0 < copied < rows  # killed in the middle
    second = Served(tmp_path, *args)
    try:
        wait_for(
            lambda: [r.state for r in _history(db, "killed")] == ["abandoned", "succeeded"],
            90,
            second.output,
        )
        assert second.stop() == 0
    finally:
        if second.process.poll() is None:
            second.stop(signal.SIGKILL)
    abandoned, retry = _history(db, "killed")
    assert abandoned.id == running[0].id and abandoned.attempt == 1
    assert "stopped during the run" in abandoned.error
    assert retry.attempt == 2 and retry.scheduled == abandoned.scheduled
    log = Path(retry.log_path).read_text(encoding="utf-8")
    restored = re.search(r"restored from checkpoint (\d+)", log)
    assert restored is not None and int(restored.group(1)) >= running[0].checkpoint_id, log
    assert _same(server, database, "src", "dst") == (rows, rows)
    metrics = json.loads(Path(retry.log_path).with_suffix(".json").read_text(encoding="utf-8"))
    assert metrics["restored_from"] is not None
