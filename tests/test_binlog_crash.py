"""binlog → MySQL and binlog → changelog files, SIGKILLed at many points, restored, exact.

Each case runs one job on one state directory through :func:`tests.crash.run_until_done`:
SIGKILLs at seeded random moments (during start-up, while streaming, while the snapshot is
copied) and at exact crash points (barrier sent, writer prepared, checkpoint stored, commit
done), a restore after each, and at the end the target must equal the source table by table
(the changelog: hold every change exactly once), with no staged change left behind.
``SYNCX_CRASH_SEED=N`` replays a failing seed.
"""

from __future__ import annotations

import json
import os
import random
import threading
import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.crash import mixed_kill_plan, run_until_done
from tests.servers.mariadb import MariaDB, ensure_server
from tests.test_binlog import (
    TABLES,
    Pair,
    Workload,
    binlog_job,
    make_pair,
    ok,
    run,
    write_job,
)

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

CRASH_POINTS = [
    "barrier-sent@3",
    "writer-prepared@2",
    "checkpoint-stored@2",
    "writer-committed@2",
]


def _seed(name: str) -> int:
    override = os.environ.get("SYNCX_CRASH_SEED")
    return int(override) if override else zlib.crc32(name.encode())


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def pair(server: MariaDB) -> Any:
    made = make_pair(server)
    yield made
    server.drop_database(made.source)
    server.drop_database(made.target)


def _no_staged_changes(pair: Pair) -> None:
    conn = pair.server.connect(pair.target)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE '\\_syncx\\_cdc\\_%'")
            for (name,) in cur.fetchall():
                cur.execute(f"SELECT COUNT(*) FROM `{name}`")
                count = cur.fetchone()[0]
                assert count == 0, f"{count} staged change(s) left in {name}"
    finally:
        conn.close()


def test_stream_to_mysql_killed_and_restored(pair: Pair, tmp_path: Path) -> None:
    """Streamed changes (multi-table transactions, key changes, a 3,000-row transaction) into
    MySQL, exactly once, whatever the moment of the kill."""
    seed = _seed("stream_to_mysql")
    start = pair.gtid()
    work = Workload(pair.server, pair.source, seed=seed)
    for _ in range(4):
        work.step(2)
    work.large_transaction(3000)
    work.step()
    work.close()
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            start=start,
            setting={
                "speed": {"record": 1200},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    plan = mixed_kill_plan(
        random.Random(seed),
        random_kills=3,
        window=(0.6, 2.0),
        crash_points=CRASH_POINTS,
        progress_kills=3,
    )
    report = run_until_done(job, tmp_path / "state", plan, seed=seed, run_timeout=120)
    assert report.kills >= 7, report.summary()
    pair.same()
    _no_staged_changes(pair)


def test_snapshot_and_stream_killed_while_the_source_changes(pair: Pair, tmp_path: Path) -> None:
    """``snapshot: initial`` over two channels, killed while copying and while streaming, with
    changes going on all along; a last catch-up run after the load stops: equal tables."""
    seed = _seed("snapshot_stream")
    work = Workload(pair.server, pair.source, seed=seed)
    for table in TABLES:
        work.insert(table, 2500)
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set():
                work.step(bulk=False)
                stop.wait(0.1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            snapshot="initial",
            setting={
                "speed": {"readerChannel": 2, "writerChannel": 2, "record": 2500},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    plan = mixed_kill_plan(
        random.Random(seed),
        random_kills=3,
        window=(0.8, 2.5),
        crash_points=["writer-prepared@3", "checkpoint-stored@3", "writer-committed@4"],
        progress_kills=3,
    )
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        report = run_until_done(job, tmp_path / "state", plan, seed=seed, run_timeout=120)
    finally:
        stop.set()
        loader.join()
    assert not errors, errors
    assert report.kills >= 6, report.summary()
    ok(run(job, tmp_path / "state", "--restore", "latest-or-new"))
    pair.same()
    _no_staged_changes(pair)
    work.close()


def test_changelog_files_hold_every_change_once(server: MariaDB, tmp_path: Path) -> None:
    """binlog → Parquet (envelope): the killed-and-restored changelog equals the changelog of
    an uninterrupted run, change for change (no change repeated, none missing)."""
    seed = _seed("changelog")
    pair = make_pair(server)
    try:
        start = pair.gtid()
        work = Workload(server, pair.source, seed=seed)
        for _ in range(8):
            work.step(2)
        work.close()
        conn = server.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            file, position = cur.fetchone()[:2]
        conn.close()
        end = {"journalName": file, "position": position}

        def job(folder: Path, name: str) -> Path:
            spec = binlog_job(
                pair,
                start=start,
                stop_at=end,
                writer={
                    "name": "filewriter",
                    "parameter": {"path": str(folder), "fileType": "parquet"},
                },
                reader={"table": [f"{pair.source}.orders"]},
                setting={
                    "speed": {"record": 100},
                    "restore": {"isRestore": True, "checkpointInterval": 0.3},
                },
            )
            return write_job(tmp_path / f"{name}.json", spec)

        reference = tmp_path / "reference"
        ok(run(job(reference, "reference"), tmp_path / "state-ref"))
        killed = tmp_path / "killed"
        plan = mixed_kill_plan(
            random.Random(seed),
            random_kills=2,
            window=(0.6, 1.5),
            crash_points=CRASH_POINTS,
            progress_kills=3,
        )
        report = run_until_done(job(killed, "killed"), tmp_path / "state", plan, seed=seed)
        assert report.kills >= 6, report.summary()
        want = _changes(reference)
        got = _changes(killed)
        assert len(want) > 300
        assert got == want, (
            f"{len(got)} changes after kills, {len(want)} without: "
            f"{len(set(got) - set(want))} unexpected, {len(set(want) - set(got))} missing"
        )
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def _changes(folder: Path) -> list[str]:
    """Every change in a changelog folder, as sorted JSON texts (a multiset)."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".parquet")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)
