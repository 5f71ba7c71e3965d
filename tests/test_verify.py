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

import pyarrow.parquet as pq
import pytest
import yaml

from bench.orders import create_orders
from tests.conftest import REPO, RunCli
from tests.servers.mariadb import ensure_server
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


def test_verify_bad_input_is_named(
    db: Source, tmp_path: Path, run_cli: RunCli, write_job: Any
) -> None:
    db.execute("DROP TABLE IF EXISTS orders_k", "CREATE TABLE orders_k LIKE orders")
    job = write_job(_mysql_job(db, "orders", "orders_k"))
    done = run_cli("verify", job, "--key", "nope")
    assert done.returncode == 2, done.stderr
    assert "--key nope" in done.stderr and "Traceback" not in done.stderr

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
