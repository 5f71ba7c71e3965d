"""sysbench's ``oltp_write_only`` load replicated by ``binlogreader`` → ``sqlwriter`` exactly-once
into PostgreSQL and into MariaDB, SIGKILLed at seeded moments, ending equal (issue 16).

The load comes from a tool this project did not write (sysbench, the Debian package that
``scripts/setup.sh`` installs; :mod:`tests.servers.sysbench`): per transaction an update of the
indexed ``k``, an update of ``c``, a delete of a random id and the insert of that same id again,
on two threads. sysbench also makes each target's tables, with its own DDL for that database
(``CHAR`` columns, a secondary index, a ``SERIAL`` key on PostgreSQL). The job (``snapshot:
initial`` of the prepared tables, then the stream, ``stopAt: now``) is killed and restored by
:func:`tests.test_binlog_crash.kill_until_done` while sysbench runs; after the load stops a
catch-up run reads the rest, and every row of every table must equal the source's.
``SYNCX_CRASH_SEED=N`` replays a seed's kill plan (sysbench's threads interleave as they will).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash import assert_exact, crash_seed
from tests.servers.mariadb import MariaDB, ensure_server
from tests.servers.sysbench import (
    Database,
    mariadb_scratch,
    prepare,
    scratch,
    sysbench,
    table_rows,
    transactions,
)
from tests.test_binlog import Pair, binlog_job, write_job
from tests.test_binlog_crash import kill_until_done

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

TABLES = 3
ROWS = 3000
SIZE = (f"--tables={TABLES}", f"--table-size={ROWS}")
RATE = 100
"""sysbench transactions per second while the job is killed and restored (4 row events each),
under the job's ``speed.record`` of 1,500/s (which makes each run long enough to reach its
crash point: unthrottled, the first run copied and streamed everything in a second)."""


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def source(server: MariaDB) -> Iterator[Database]:
    """A database of the binlogged server holding sysbench's prepared tables."""
    with mariadb_scratch(server, "sysbench_src") as database:
        prepare(database, TABLES, ROWS)
        yield database


@pytest.fixture(params=["postgresql", "mariadb"])
def target(request: pytest.FixtureRequest, server: MariaDB) -> Iterator[Database]:
    """Empty tables made by sysbench: in a private PostgreSQL database, or in a database of the
    private MariaDB."""
    with scratch(server, request.param, "sysbench_dst") as database:
        prepare(database, TABLES, 0)
        yield database


def test_sysbench_load_replicated_through_kills(
    server: MariaDB, source: Database, target: Database, tmp_path: Path
) -> None:
    """sysbench's deletes, re-inserts and updates of the same ids, replicated exactly once
    through SIGKILLs and restores while the load runs: every row of every table equal."""
    seed = crash_seed(f"sysbench-{target.kind}")
    job = write_job(
        tmp_path / "job.json",
        binlog_job(
            Pair(server, source.name, target.name),
            snapshot="initial",
            writer={
                "name": "sqlwriter",
                "parameter": {"url": target.url, "table": "*", "semantic": "exactly-once"},
            },
            setting={
                "speed": {"record": 1500},
                "errorLimit": {"record": 0},
                "restore": {"isRestore": True, "checkpointInterval": 0.3},
            },
        ),
    )
    committed: list[int] = []

    def load() -> None:
        out = sysbench(source, "run", *SIZE, "--threads=2", "--time=1", f"--rate={RATE}")
        committed.append(transactions(out))

    report = kill_until_done(job, tmp_path / "state", seed, window=(0.6, 2.0), load=load, pause=0)
    print(f"{report.summary()}\nsysbench: {sum(committed)} transactions in {len(committed)} runs")
    assert sum(committed) > 0
    for index in range(1, TABLES + 1):
        name = f"sbtest{index}"
        context = f"table {name}\n{report.summary()}"
        assert_exact(table_rows(source, name), table_rows(target, name), ["id"], context)
