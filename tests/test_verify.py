"""``syncx verify``: a copy proven equal, and a copy with a row deleted, changed and added named
key by key — MySQL → MySQL and MySQL → Parquet, against the private MariaDB (port 3307).

The copies are made by ``syncx run`` and then changed behind syncx's back with plain SQL or
pyarrow, so what verify must find is known from the test, not from the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from bench.orders import create_orders
from sync.state import Checkpoint, StateDir
from tests.conftest import REPO, RunCli
from tests.servers.mariadb import ensure_server
from tests.test_binlog import TABLES, binlog_job, make_pair, mysql_sink, write_job
from tests.test_mysql_hdfs import Source

pytestmark = pytest.mark.mysql

ROWS = 5_000


def _jdbc(db: Source) -> str:
    return f"jdbc:mysql://{db.server.host}:{db.server.port}/{db.name}"


@pytest.fixture(scope="module")
def db() -> Iterator[Source]:
    server = ensure_server()
    name = server.create_database("syncx_verify")
    conn = server.connect(name)
    try:
        create_orders(conn, name, ROWS)
    finally:
        conn.close()
    try:
        yield Source(server, name)
    finally:
        server.drop_database(name)


def _mysql_job(db: Source, source: str, target: str) -> dict[str, Any]:
    def side(name: str, table: str) -> dict[str, Any]:
        connection = {"jdbcUrl": _jdbc(db), "table": [table]}
        if name == "mysqlreader":
            connection["jdbcUrl"] = [_jdbc(db)]
        parameter: dict[str, Any] = {
            "connection": [connection],
            "username": "root",
            "column": ["*"],
        }
        return {"name": name, "parameter": parameter}

    writer = side("mysqlwriter", target)
    writer["parameter"]["writeMode"] = "insert"
    return {
        "job": {
            "content": [{"reader": side("mysqlreader", source), "writer": writer}],
            "setting": {"speed": {"channel": 2}},
        }
    }


def _report(
    run_cli: RunCli, job: Path, tmp_path: Path, *args: str
) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "report.json"
    done = run_cli("verify", job, "--json", out, *args)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, report, done.stdout + done.stderr


def _keys(report: dict[str, Any], kind: str) -> set[str]:
    return {d["key"] for d in report["examples"] if d["kind"] == kind}


def test_mysql_copy_verified_then_its_differences_named(
    db: Source, tmp_path: Path, run_cli: RunCli
) -> None:
    db.execute("DROP TABLE IF EXISTS orders_copy", "CREATE TABLE orders_copy LIKE orders")
    job = tmp_path / "copy.yaml"
    job.write_text(yaml.safe_dump(_mysql_job(db, "orders", "orders_copy")))
    done = run_cli("run", job)
    assert done.returncode == 0, done.stderr

    code, report, text = _report(run_cli, job, tmp_path)
    assert code == 0, text
    assert report["equal"] and report["sourceRows"] == report["targetRows"] == ROWS
    assert "EQUAL" in text

    db.execute(
        "DELETE FROM orders_copy WHERE id = 17",
        "UPDATE orders_copy SET qty = qty + 1 WHERE id = 42",
        "INSERT INTO orders_copy SELECT id + 1000000, user_id, sku, qty, price, status, note, "
        "created_at, updated_at FROM orders WHERE id = 1",
    )
    code, report, text = _report(run_cli, job, tmp_path)
    assert code == 1, text
    assert (report["missing"], report["different"], report["extra"]) == (1, 1, 1)
    assert _keys(report, "missing") == {"17"}
    assert _keys(report, "different") == {"42"}
    assert _keys(report, "extra") == {"1000001"}
    different = next(d for d in report["examples"] if d["kind"] == "different")
    assert int(different["target"]["qty"]) == int(different["source"]["qty"]) + 1
    assert "DIFFERENT" in text and "missing" in text

    # part of the table: the differences outside it are not looked at
    code, report, text = _report(run_cli, job, tmp_path, "--where", "id BETWEEN 100 AND 200")
    assert code == 0, text
    assert report["sourceRows"] == 101


def test_parquet_copy_verified_then_a_missing_and_a_changed_row_named(
    db: Source, tmp_path: Path, run_cli: RunCli
) -> None:
    db.execute("DROP TABLE IF EXISTS orders_pq", "CREATE TABLE orders_pq AS SELECT * FROM orders")
    db.execute("ALTER TABLE orders_pq ADD PRIMARY KEY (id)")
    job = REPO / "jobs" / "mysql_to_hdfs_parquet.yaml"
    params = [
        "-p",
        f"mysql_db={db.name}",
        "-p",
        "table=orders_pq",
        "-p",
        f"path={tmp_path / 'hive'}",
    ]
    done = run_cli("run", job, *params, "--state-dir", tmp_path / "state")
    assert done.returncode == 0, done.stderr

    code, report, text = _report(run_cli, job, tmp_path, *params)
    assert code == 0, text
    assert report["targetRows"] == ROWS

    # one Parquet file loses a row, and the source changes one
    files = sorted((tmp_path / "hive").rglob("*.parquet"))
    assert files
    table = pq.read_table(files[0])
    dropped = table["id"][0].as_py()
    pq.write_table(table.slice(1), files[0])
    db.execute("UPDATE orders_pq SET note = 'changed at the source' WHERE id = 3000")
    code, report, text = _report(run_cli, job, tmp_path, *params)
    assert code == 1, text
    assert _keys(report, "missing") == {str(dropped)}
    assert _keys(report, "different") == {"3000"}


def test_since_compares_only_the_rows_at_or_after_it(
    db: Source, tmp_path: Path, run_cli: RunCli
) -> None:
    """``--since`` on the job's ``increColumn``: a difference below the value is not looked at,
    one at it and one above are named; the bound reaches both MySQL queries, so only the rows
    compared are read."""
    db.execute("DROP TABLE IF EXISTS orders_inc", "CREATE TABLE orders_inc LIKE orders")
    spec = _mysql_job(db, "orders", "orders_inc")
    spec["job"]["content"][0]["reader"]["parameter"]["increColumn"] = "id"
    job = tmp_path / "inc.yaml"
    job.write_text(yaml.safe_dump(spec))
    done = run_cli("run", job)
    assert done.returncode == 0, done.stderr

    db.execute(
        "UPDATE orders_inc SET qty = qty + 1 WHERE id IN (100, 4500)",
        "DELETE FROM orders_inc WHERE id = 4001",
    )
    code, report, text = _report(run_cli, job, tmp_path, "--since", "4001")
    assert code == 1, text
    assert (report["missing"], report["different"], report["extra"]) == (1, 1, 0), text
    assert _keys(report, "missing") == {"4001"}
    assert _keys(report, "different") == {"4500"}
    assert report["sourceRows"] == report["sourceRowsRead"] == ROWS - 4000
    assert report["targetRows"] == report["targetRowsRead"] == ROWS - 4000 - 1


def test_since_on_a_parquet_copy_names_only_the_later_difference(
    db: Source, tmp_path: Path, run_cli: RunCli
) -> None:
    """``--since-column created_at`` (the job has no increColumn): the DATETIME bound goes into
    the MySQL query; the Parquet folder, which cannot filter, is read whole and filtered like
    the source. Of two rows changed in the files, only the one at or after the bound is named."""
    db.execute("DROP TABLE IF EXISTS orders_ps", "CREATE TABLE orders_ps AS SELECT * FROM orders")
    db.execute("ALTER TABLE orders_ps ADD PRIMARY KEY (id)")
    job = REPO / "jobs" / "mysql_to_hdfs_parquet.yaml"
    folder = tmp_path / "hive"
    params = ["-p", f"mysql_db={db.name}", "-p", "table=orders_ps", "-p", f"path={folder}"]
    done = run_cli("run", job, *params, "--state-dir", tmp_path / "state")
    assert done.returncode == 0, done.stderr

    bound = db.rows("SELECT created_at FROM orders_ps ORDER BY created_at LIMIT 1 OFFSET 3000")
    since = str(bound[0]["created_at"])
    later = db.rows(f"SELECT COUNT(*) AS n FROM orders_ps WHERE created_at >= '{since}'")[0]["n"]
    before = db.rows(f"SELECT MIN(id) AS id FROM orders_ps WHERE created_at < '{since}'")[0]["id"]
    after = db.rows(f"SELECT MIN(id) AS id FROM orders_ps WHERE created_at >= '{since}'")[0]["id"]
    for path in sorted(folder.rglob("*.parquet")):
        table = pq.read_table(path)
        changed = pc.is_in(table["id"], pa.array([before, after], table["id"].type))
        note = pc.if_else(changed, pa.scalar("changed in the copy"), table["note"])
        pq.write_table(table.set_column(table.column_names.index("note"), "note", note), path)

    args = ["--since-column", "created_at", "--since", since]
    code, report, text = _report(run_cli, job, tmp_path, *params, *args)
    assert code == 1, text
    assert _keys(report, "different") == {str(after)}, text
    assert (report["missing"], report["different"], report["extra"]) == (0, 1, 0)
    assert report["sourceRows"] == report["sourceRowsRead"] == later
    assert (report["targetRows"], report["targetRowsRead"]) == (later, ROWS)


def test_verify_bad_input_is_named(
    db: Source, tmp_path: Path, run_cli: RunCli, write_job: Any
) -> None:
    db.execute("DROP TABLE IF EXISTS orders_k", "CREATE TABLE orders_k LIKE orders")
    job = write_job(_mysql_job(db, "orders", "orders_k"))
    done = run_cli("verify", job, "--key", "nope")
    assert done.returncode == 2, done.stderr
    assert "--key nope" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("verify", job, "--since", "100")
    assert done.returncode == 2, done.stderr
    assert "increColumn" in done.stderr and "--since-column" in done.stderr
    done = run_cli("verify", job, "--since-column", "id", "--since", "many")
    assert done.returncode == 2, done.stderr
    assert "'many' is not a value of column 'id'" in done.stderr, done.stderr

    printed = write_job(
        {
            "job": {
                "content": [
                    {
                        "reader": {
                            "name": "streamreader",
                            "parameter": {
                                "column": [{"name": "id", "type": "id"}],
                                "sliceRecordCount": [3],
                            },
                        },
                        "writer": {"name": "streamwriter", "parameter": {}},
                    }
                ]
            }
        },
        "printed.json",
    )
    done = run_cli("verify", printed)
    assert done.returncode == 2
    assert "streamwriter cannot read back" in done.stderr


def test_cdc_job_verified_at_the_position_its_target_reached(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """A binlog → mysqlwriter job run to a checkpoint; the source then changes further, not
    replicated: verify reads the binlog from the checkpoint's position on and reports the
    tables equal, the keys changed since counted and not compared. A row then deleted,
    changed and added in the target is named, table and key; a change in the target to a key
    the source changed since is not. Without a checkpoint verify says so (exit 2)."""
    server = ensure_server()
    pair = make_pair(server, {name: TABLES[name] for name in ("orders", "items")})
    try:
        start = pair.gtid()
        pair.execute(
            pair.source,
            "INSERT INTO orders (id, customer, qty, price, updated, stamp, tags, state, flag, "
            "raw) SELECT seq, CONCAT('c', seq), seq, seq / 4, '2024-05-01 10:00:00.5', "
            "'2024-05-02 11:00:00.25', 'a,c', 'paid', 5, UNHEX('00ff') FROM seq_1_to_40",
        )
        pair.execute(
            pair.source,
            "INSERT INTO items SELECT seq DIV 2 + 1, CONCAT('l', seq MOD 2), seq * 1.5, "
            "'2024-01-31' FROM seq_0_to_19",
        )
        job = write_job(
            tmp_path / "cdc.json", binlog_job(pair, start=start, writer=mysql_sink(pair))
        )
        state = ["--state-dir", str(tmp_path / "state")]
        done = run_cli("run", job, *state)
        assert done.returncode == 0, done.stderr

        # the source moves on; the target, at its checkpoint, is behind
        for statement in (
            "UPDATE orders SET qty = qty + 1 WHERE id IN (1, 2)",
            "DELETE FROM orders WHERE id = 3",
            "INSERT INTO orders (id, customer) VALUES (100, 'new')",
            "UPDATE items SET amount = -1 WHERE order_id = 4 AND line = 'l1'",
        ):
            pair.execute(pair.source, statement)
        code, report, text = _report(run_cli, job, tmp_path, *state)
        assert code == 0, text
        assert report["equal"] and report["changedSinceTarget"] == 5, text
        assert [t["table"] for t in report["tables"]] == [
            f"{pair.source}.items",
            f"{pair.source}.orders",
        ]
        assert (report["sourceRows"], report["targetRows"]) == (60, 60)  # one gone, one new
        changed = {t["table"].split(".")[1]: t["changedSinceTarget"] for t in report["tables"]}
        assert changed == {"orders": 4, "items": 1}
        assert "5 key(s) changed since the target's position (not compared)" in text

        # the target loses a row, one changes and one appears; key 1 changed at the source
        tampered = {
            ("missing", "orders", "5"): "DELETE FROM orders WHERE id = 5",
            ("different", "orders", "6"): "UPDATE orders SET note = 'x' WHERE id IN (1, 6)",
            ("extra", "orders", "200"): "INSERT INTO orders (id, customer) VALUES (200, 'x')",
            ("different", "items", "7\x1fl1"): "UPDATE items SET born = NULL WHERE line = 'l1' "
            "AND order_id = 7",
        }
        for statement in tampered.values():
            pair.execute(pair.target, statement)
        code, report, text = _report(run_cli, job, tmp_path, *state)
        assert code == 1, text
        found = {(d["kind"], d["table"].split(".")[1], d["key"]) for d in report["examples"]}
        assert found == set(tampered), text
        assert (report["missing"], report["different"], report["extra"]) == (1, 2, 1)
        assert f"{pair.source}.orders: DIFFERENT" in text and "missing 5" in text

        done = run_cli("verify", job, "--state-dir", tmp_path / "none")
        assert done.returncode == 2, done.stderr
        assert "no checkpoint of job cdc" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.drop_database(pair.source)
        server.drop_database(pair.target)


def test_the_checkpoint_a_cdc_job_is_verified_at_is_surely_committed(tmp_path: Path) -> None:
    """While a job runs, its newest checkpoint may be stored but not yet committed by every
    writer; the one before it of the same run is (checkpoint n + 1 is stored only after every
    writer committed n). A final checkpoint is committed before the run ends."""
    state = StateDir(tmp_path)

    def store(number: int, run: str, *, final: bool = False) -> None:
        chk = Checkpoint(number, run, "now", final, {}, [], {}, {})
        state.write_checkpoint(chk, retain=3)

    def committed() -> int | None:
        found = state.committed()
        return None if found is None else found.id

    assert committed() is None
    store(1, "a")
    assert committed() == 1  # the only one: nothing older to fall back on
    store(2, "a")
    store(3, "a")
    assert committed() == 2
    store(4, "b")  # a new run: the one before is another run's
    assert committed() == 4
    store(5, "b", final=True)
    assert committed() == 5
