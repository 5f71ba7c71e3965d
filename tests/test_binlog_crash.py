"""binlog → MySQL and binlog → changelog files, SIGKILLed at many points, restored, exact.

Each case runs one job on one state directory through :func:`tests.crash.run_until_done`:
SIGKILLs at seeded random moments (during start-up, while streaming, while the snapshot is
copied) and at exact crash points (barrier sent, writer prepared, checkpoint stored, commit
done, final commit done), a restore after each, and at the end the target must equal the source
table by table (the changelog: hold every change exactly once), with no staged change left
behind. Into MySQL both apply paths are killed: ``sqlwriter``'s staged changes and
``mysqlwriter``'s XA transactions (where no change is staged, none is left prepared, and a DDL
is deferred to the commit). ``SYNCX_CRASH_SEED=N`` replays a failing seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.crash import (
    CrashReport,
    Kill,
    crash_seed,
    latest_checkpoint,
    mixed_kill_plan,
    run_syncx,
    run_until_done,
)
from tests.servers.mariadb import MariaDB, ensure_server
from tests.test_binlog import (
    TABLES,
    Pair,
    Workload,
    assert_applied_in_xa,
    assert_no_table,
    binlog_job,
    changing,
    evolving_job,
    make_pair,
    mysql_sink,
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


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def pair(server: MariaDB) -> Any:
    made = make_pair(server)
    yield made
    server.drop_database(made.source)
    server.drop_database(made.target)


def kill_until_done(
    job: Path,
    state: Path,
    seed: int,
    window: tuple[float, float],
    *,
    load: Callable[[], object] | None = None,
    pause: float = 0.04,
) -> CrashReport:
    """Run ``job`` to its end through 3 random kills in ``window``, 3 kills after a stored
    checkpoint and one at each crash point (the last at the final commit), restoring after each.

    With ``load`` (one round of changes on the source), the source keeps changing, a round
    every ``pause`` seconds, until the run of the last planned kill starts: every run before it
    then has changes to read however long the runs before took (on a loaded machine a bounded
    job could otherwise finish before the plan is spent). A catch-up run (``--restore
    latest-or-new``: a new run from the saved end position) then reads the changes made while
    that last run was starting.
    """
    plan = mixed_kill_plan(
        random.Random(seed),
        random_kills=3,
        window=window,
        crash_points=CRASH_POINTS,
        progress_kills=3,
    )
    if load is None:
        report = run_until_done(job, state, plan, seed=seed, run_timeout=120)
        assert report.kills >= 7, report.summary()
        return report
    last_run_log = state.parent / f"{state.name}-logs" / f"run-{len(plan) - 1:03d}.log"
    with changing(load, pause=pause, until=last_run_log.exists):
        report = run_until_done(job, state, plan, seed=seed, run_timeout=120)
    assert report.kills == len(plan), report.summary()  # every planned kill landed
    ok(run(job, state, "--restore=latest-or-new"))
    return report


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


@pytest.mark.parametrize("plugin", ["sqlwriter", "mysqlwriter"], ids=["staged", "xa"])
def test_stream_to_mysql_killed_and_restored(pair: Pair, tmp_path: Path, plugin: str) -> None:
    """Streamed changes (multi-table transactions, key changes, NULLs, a 3,000-row transaction)
    into MySQL, exactly once, whatever the moment of the kill: staged by sqlwriter, or applied
    inside mysqlwriter's XA transactions."""
    seed = crash_seed(f"stream_to_mysql-{plugin}")
    start = pair.gtid()
    work = Workload(pair.server, pair.source, seed=seed)
    for _ in range(4):
        work.step(2)
    work.large_transaction(3000)
    work.step()
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            pair,
            start=start,
            writer=mysql_sink(pair) if plugin == "mysqlwriter" else None,
            setting={
                "speed": {"record": 1200},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    try:
        kill_until_done(
            job,
            tmp_path / "state",
            seed,
            window=(0.6, 2.0),
            load=lambda: work.step(bulk=False),
        )
    finally:
        work.close()
    pair.same()
    _no_staged_changes(pair)
    if plugin == "mysqlwriter":
        assert_applied_in_xa(pair, job, tmp_path / "state")


def test_ddl_applied_through_xa_killed_and_restored(server: MariaDB, tmp_path: Path) -> None:
    """``ddl: apply`` into mysqlwriter exactly-once, killed at random moments and at every
    crash point: DDLs (a table created, columns added, widened and dropped, a table truncated,
    another dropped) among changes of four tables, each DDL and what follows it deferred to the
    commit of its XA transaction; the target ends equal to the source, no record left over."""
    seed = crash_seed("ddl_through_xa")
    pair = make_pair(server)
    try:
        job = evolving_job(
            pair,
            tmp_path / "job.json",
            mysql_sink(pair),
            seed=seed,
            setting={
                "speed": {"record": 100},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        )
        kill_until_done(job, tmp_path / "state", seed, window=(0.6, 2.5))
        pair.same()
        assert_no_table(pair, "scratch")
        assert_applied_in_xa(pair, job, tmp_path / "state", deferred=True)
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def test_snapshot_and_stream_killed_while_the_source_changes(pair: Pair, tmp_path: Path) -> None:
    """``snapshot: initial`` over two channels, killed while copying and while streaming, with
    changes going on all along; a last catch-up run after the load stops: equal tables."""
    seed = crash_seed("snapshot_stream")
    work = Workload(pair.server, pair.source, seed=seed)
    for table in TABLES:
        work.insert(table, 2500)
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
    with changing(lambda: work.step(bulk=False), pause=0.1):
        report = run_until_done(job, tmp_path / "state", plan, seed=seed, run_timeout=120)
    assert report.kills >= 6, report.summary()
    ok(run(job, tmp_path / "state", "--restore", "latest-or-new"))
    pair.same()
    _no_staged_changes(pair)
    work.close()


HANDOVER_TABLES = {
    # no numeric key: one snapshot split, read by one channel while the other reaches the stream
    "big": "CREATE TABLE big (k VARCHAR(20) PRIMARY KEY, v INT NOT NULL)",
    "small": "CREATE TABLE small (id INT PRIMARY KEY, v INT NOT NULL)",
}


def test_killed_while_the_stream_waits_for_the_snapshot(server: MariaDB, tmp_path: Path) -> None:
    """Killed after a checkpoint taken while one channel still copies a table and the other's
    stream split waits for the snapshot; the source changes keys of the table not copied yet:
    the restored run's stream waits again (it streamed at once before, beside the copy, so a
    key's snapshot row and its changes met at two writer subtasks' commits) and the target ends
    equal to the source."""
    pair = make_pair(server, HANDOVER_TABLES)
    try:
        pair.execute(pair.source, "INSERT INTO small VALUES (1, 1), (2, 2), (3, 3)")
        values = ", ".join(f"('k{i:05d}', {i})" for i in range(5000))
        pair.execute(pair.source, f"INSERT INTO big VALUES {values}")
        job = write_job(
            tmp_path / "job.json",
            binlog_job(
                pair,
                snapshot="initial",
                setting={
                    "speed": {"readerChannel": 2, "writerChannel": 2, "record": 500},
                    "restore": {"isRestore": True, "checkpointInterval": 0.3},
                },
            ),
        )
        state = tmp_path / "state"

        def stream_checkpointed(_pid: int) -> bool:
            stored = latest_checkpoint(state)
            return stored is not None and "binlog" in stored["positions"]

        killed = run_syncx(
            ["run", job, f"--state-dir={state}"],
            log=tmp_path / "killed.log",
            kill=Kill(when=stream_checkpointed),
        )
        shown = killed.tail(60)
        assert killed.killed, f"{killed.describe()}\n{shown}"
        stored = latest_checkpoint(state)
        assert stored is not None and "binlog" in stored["positions"], shown
        big = [v for k, v in stored["positions"].items() if k.endswith(".big:all")]
        assert big and not big[0]["done"], f"the copy ended before the kill: {shown}"
        pair.execute(pair.source, "UPDATE big SET v = -v WHERE k >= 'k03000'")
        pair.execute(pair.source, "DELETE FROM big WHERE k >= 'k04900'")
        pair.execute(pair.source, "INSERT INTO big VALUES ('k09999', 9999)")
        restored = ok(run(job, state, "--restore", "latest"))
        assert "the stream waits for the snapshot" in restored, restored[-3000:]
        pair.same()
        _no_staged_changes(pair)
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def test_changelog_files_hold_every_change_once(server: MariaDB, tmp_path: Path) -> None:
    """binlog → Parquet (envelope): the killed-and-restored changelog equals the changelog of
    an uninterrupted run, change for change (no change repeated, none missing)."""
    seed = crash_seed("changelog")
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
