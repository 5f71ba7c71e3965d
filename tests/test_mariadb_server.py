"""The private MariaDB test server starts, is idempotent and is configured for CDC."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pymysql.connections
import pytest

from tests.servers.mariadb import SCRIPT, MariaDB, binlog_settings, ensure_server

pytestmark = pytest.mark.mysql


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def database(server: MariaDB) -> Iterator[str]:
    name = server.create_database("t_server")
    yield name
    server.drop_database(name)


@pytest.fixture
def conn(server: MariaDB, database: str) -> Iterator[pymysql.connections.Connection]:
    connection = server.connect(database)
    yield connection
    connection.close()


def _server_pid(conn: pymysql.connections.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT @@pid_file")
        (pid_file,) = cur.fetchone()
    return int(Path(pid_file).read_text().strip())


def test_binlog_is_row_full_full(conn: pymysql.connections.Connection) -> None:
    settings = binlog_settings(conn)
    assert settings == {
        "log_bin": "ON",
        "binlog_format": "ROW",
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
        "gtid_strict_mode": "ON",
        "server_id": "1",
    }


def test_server_settings(conn: pymysql.connections.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT @@local_infile, @@character_set_server, @@max_allowed_packet, "
            "@@innodb_flush_log_at_trx_commit, @@bind_address, @@port"
        )
        local_infile, charset, max_packet, flush, bind, port = cur.fetchone()
    assert local_infile == 1
    assert charset == "utf8mb4"
    assert max_packet == 256 * 1024 * 1024
    assert flush == 2
    assert bind == "127.0.0.1"
    assert port != 3306


def test_consistent_snapshot_reports_binlog_position(
    conn: pymysql.connections.Connection,
) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'a')")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
        status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (1,)
        cur.execute("COMMIT")
    assert status["binlog_snapshot_file"].startswith("mysql-bin.")
    assert int(status["binlog_snapshot_position"]) > 0


def test_start_is_idempotent(server: MariaDB, conn: pymysql.connections.Connection) -> None:
    pid_before = _server_pid(conn)
    again = ensure_server()
    assert again == server
    with server.connect() as other:
        assert _server_pid(other) == pid_before
    subprocess.run(["bash", str(SCRIPT), "status"], check=True, capture_output=True)


def test_load_data_local_infile(conn: pymysql.connections.Connection, tmp_path: Path) -> None:
    rows = [(i, f"name {i}", f"{i * 1.5:.2f}") for i in range(1, 1001)]
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{i}\t{name}\t{price}\n" for i, name, price in rows))
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE l (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2))")
        loaded = cur.execute(
            "LOAD DATA LOCAL INFILE %s INTO TABLE l "
            "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'",
            (str(data),),
        )
        assert loaded == 1000
        cur.execute("SHOW WARNINGS")
        assert cur.fetchall() == ()
        cur.execute("SELECT COUNT(*), SUM(id), MAX(name), SUM(price) FROM l")
        count, id_sum, _max_name, price_sum = cur.fetchone()
    assert count == 1000
    assert id_sum == 500500
    assert float(price_sum) == pytest.approx(1.5 * 500500)
