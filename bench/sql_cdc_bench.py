"""Exactly-once ``sqlwriter`` applying CDC changes: events per second into PostgreSQL and MariaDB.

A 20,000-row table's changes (by default: every row inserted, then every row updated once, so
40,000 events and two changes per key) are written in batches through ``sqlwriter``'s plugin
contract (staged), prepared at one checkpoint and committed; the commit applies them. Prints
the seconds of the staging and of the commit and the events per second over both. Uses only
the plugin contract, so the same script measures an older checkout (``PYTHONPATH=old``).

    PYTHONPATH=. python bench/sql_cdc_bench.py [--rows 20000] [--backend postgresql|mariadb]

Measured here (2 shared cores, one run each; 20,000 rows = 40,000 events unless said):

=================  ==========================================  ===============================
backend            before (``NOT EXISTS`` later change)        after (``ROW_NUMBER()``)
=================  ==========================================  ===============================
PostgreSQL 15      commit > 16.5 min (cancelled); 2,000 rows:   commit 0.62 s, 14,463 ev/s
                   19.4 s (203 ev/s), 4,000 rows: 75.1 s
                   (106 ev/s): quadratic
MariaDB            commit 4.98 s, 2,783 ev/s                   commit 3.18 s, 3,065 ev/s
=================  ==========================================  ===============================
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from libs.cdc import SourceInfo, TableLayout, build_changes
from sync.contract import JobContext
from sync.model import Setting
from writers.sql import SqlWriter, SqlWriterParams

SERVERS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3307/{database}",
}
BATCH = 2000
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())])
AT = SourceInfo("mysql-bin.000001", 4, None, 0)


def _batches(rows: int) -> list[pa.RecordBatch]:
    layout = TableLayout("shop", "orders", SCHEMA, ("id",))
    events = [("c", None, [i, f"name-{i}", i]) for i in range(rows)]
    events += [("u", [i, f"name-{i}", i], [i, f"renamed-{i}", i + 1]) for i in range(rows)]
    return [
        build_changes(layout, "envelope", [(*e, AT) for e in events[start : start + BATCH]])
        for start in range(0, len(events), BATCH)
    ]


def run(backend: str, rows: int) -> tuple[float, float, int]:
    """(seconds staging, seconds committing, events) of one run into a fresh table."""
    database = ""
    admin_url = SERVERS[backend].format(database="")
    if backend == "mariadb":
        database = f"bench_{uuid.uuid4().hex[:8]}"
        with sa.create_engine(admin_url).begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {database}")
    url = SERVERS[backend].format(database=database)
    table = f"cdc_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(40), qty BIGINT)"
        )
    batches = _batches(rows)
    events = sum(b.num_rows for b in batches)
    ctx = JobContext.of("cdc-bench", Path(), Setting(), run_id=uuid.uuid4().hex[:8])
    writer = SqlWriter(SqlWriterParams.model_validate({"url": url, "table": table}), ctx)
    try:
        writer.begin([], fresh=True)
        task = writer.open(0, 1, None)
        started = time.perf_counter()
        for batch in batches:
            assert not task.write(batch)
        handle = task.prepare(1)
        staged = time.perf_counter()
        task.commit(handle)
        committed = time.perf_counter()
        task.close()
        with engine.connect() as conn:
            count, total = conn.execute(sa.text(f"SELECT COUNT(*), SUM(qty) FROM {table}")).one()
        assert count == rows and total == rows * (rows + 1) // 2, (count, total)
    finally:
        writer.close()
        with engine.begin() as conn:
            if backend == "mariadb":
                conn.exec_driver_sql(f"DROP DATABASE {database}")
            else:
                mine = f"_syncx_cdc_{hashlib.sha256(table.encode()).hexdigest()[:10]}_"
                for name in sa.inspect(conn).get_table_names():
                    if name == table or name.startswith(mine):
                        conn.exec_driver_sql(f'DROP TABLE "{name}"')
        engine.dispose()
    return staged - started, committed - staged, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--backend", choices=sorted(SERVERS), action="append")
    args = parser.parse_args()
    for backend in args.backend or sorted(SERVERS):
        stage, commit, events = run(backend, args.rows)
        rate = events / (stage + commit)
        print(
            f"{backend}: {events} events, staging {stage:.2f}s, commit {commit:.2f}s, "
            f"{rate:,.0f} ev/s"
        )


if __name__ == "__main__":
    main()
