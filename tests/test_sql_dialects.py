"""SQL dialects are a static table: a plugin's behaviour does not depend on what else is imported.

``sqlreader`` / ``sqlwriter`` on MariaDB, by ``jdbcUrl`` and by SQLAlchemy ``url``, in jobs with
no MySQL plugin, each run in a fresh ``syncx`` process: they validate, run, use UTC sessions
(seen through ``@@session.time_zone`` in the rows they copy) and keep TIMESTAMP values exact.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.sql import (
    DIALECTS,
    Dialect,
    MysqlDialect,
    PostgresqlDialect,
    SqliteDialect,
    dialect_of,
    jdbc_to_url,
    parse_url,
)
from tests.conftest import REPO, RunCli
from tests.servers.mariadb import MariaDB, ensure_server

INSTANTS = [
    dt.datetime(1999, 12, 31, 23, 59, 59),
    dt.datetime(2024, 3, 31, 1, 30, 0, 123456),  # a DST change in Europe
    dt.datetime(2024, 10, 27, 0, 59, 59, 999999),
    dt.datetime(2038, 1, 19, 3, 14, 7),  # the largest TIMESTAMP
]
"""UTC instants written into TIMESTAMP(6) columns."""


def test_dialects_are_chosen_from_the_url_by_a_static_table() -> None:
    assert [type(d) for d in DIALECTS] == [SqliteDialect, PostgresqlDialect, MysqlDialect]
    cases = {
        "sqlite:///x.db": SqliteDialect,
        "postgresql+psycopg://u@h/db": PostgresqlDialect,
        "mysql+pymysql://u@h/db": MysqlDialect,
        "mariadb+pymysql://u@h/db": MysqlDialect,
        "jdbc:mysql://h:3306/db": MysqlDialect,
        "jdbc:mariadb://h/db": MysqlDialect,
        "jdbc:postgresql://h/db": PostgresqlDialect,
        "oracle+oracledb://u@h/db": Dialect,
    }
    for text, kind in cases.items():
        assert type(dialect_of(parse_url(text))) is kind, text
    assert jdbc_to_url("jdbc:mysql://h:3307/db?user=u").render_as_string() == (
        "mysql+pymysql://u@h:3307/db"
    )
    kwargs: dict[str, Any] = {}
    MysqlDialect().setup_engine(parse_url("mysql+pymysql://u@h/db"), kwargs, 30.0)
    assert kwargs["connect_args"]["charset"] == "utf8mb4"
    assert kwargs["connect_args"]["init_command"] == "SET time_zone = '+00:00'"
    assert MysqlDialect().quote("a`b") == "`a``b`"
    assert PostgresqlDialect().qualified("s", 'a"b') == '"s"."a""b"'


def test_nothing_registers_a_dialect_when_it_is_imported() -> None:
    """In a fresh interpreter, libs.sql alone knows MySQL: no MySQL module was imported."""
    code = (
        "import sys\n"
        "from libs.sql import dialect_of, jdbc_to_url\n"
        "url = jdbc_to_url('jdbc:mysql://h:3307/db')\n"
        "assert type(dialect_of(url)).__name__ == 'MysqlDialect', url\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('readers', 'writers'))\n"
        "loaded += sorted(m for m in sys.modules if m.startswith('libs.mysql'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def server() -> MariaDB:
    return ensure_server()


@pytest.fixture
def database(server: MariaDB) -> Iterator[str]:
    name = server.create_database("syncx_dialect")
    try:
        yield name
    finally:
        server.drop_database(name)


def _query(server: MariaDB, database: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in a UTC session."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _job(reader: dict[str, Any], writer: dict[str, Any]) -> dict[str, Any]:
    return {
        "job": {
            "content": [
                {
                    "reader": {"name": "sqlreader", "parameter": reader},
                    "writer": {"name": "sqlwriter", "parameter": writer},
                }
            ],
            "setting": {"speed": {"channel": 1}},
        }
    }


def test_sql_plugins_on_mariadb_use_utc_sessions_without_a_mysql_plugin(
    server: MariaDB, database: str, tmp_path: Path, run_cli: RunCli
) -> None:
    """Two jobs, each in a fresh process: jdbcUrl → url, then url → jdbcUrl. The reader's
    customSql selects its session's time zone into every row; the writer's preSql logs its own."""
    for table in ("src", "copy1", "copy2"):
        _query(
            server,
            database,
            f"CREATE TABLE {table} (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL, tz VARCHAR(16))",
        )
    _query(server, database, "CREATE TABLE tzlog (who VARCHAR(16), tz VARCHAR(16))")
    values = ", ".join(f"({i}, '{t.isoformat(sep=' ')}', NULL)" for i, t in enumerate(INSTANTS))
    _query(server, database, f"INSERT INTO src VALUES {values}")
    jdbc = f"jdbc:mysql://{server.host}:{server.port}/{database}?useSSL=false"
    url = f"mysql+pymysql://{server.user}@{server.host}:{server.port}/{database}"

    def log_tz(who: str) -> list[str]:
        return [f"INSERT INTO tzlog VALUES ('{who}', @@session.time_zone)"]

    def with_tz(table: str) -> str:  # the reading session's time zone in every row
        return f"SELECT id, ts, @@session.time_zone AS tz FROM {table}"

    jobs = {
        "jdbc-to-url": _job(
            {
                "connection": [{"jdbcUrl": [jdbc]}],
                "username": server.user,
                "customSql": with_tz("src"),
            },
            {"url": url, "table": "copy1", "preSql": log_tz("url")},
        ),
        "url-to-jdbc": _job(
            {"url": url, "customSql": with_tz("copy1"), "splitPk": "id"},
            {
                "connection": [{"jdbcUrl": jdbc, "table": ["copy2"]}],
                "username": server.user,
                "preSql": log_tz("jdbc"),
            },
        ),
    }
    for name, job in jobs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        checked = run_cli("validate", path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        done = run_cli("run", path, "--state-dir", tmp_path / f"state-{name}")
        assert done.returncode == 0, done.stderr
    expected = [(i, t, "+00:00") for i, t in enumerate(INSTANTS)]
    assert _query(server, database, "SELECT id, ts, tz FROM copy1 ORDER BY id") == expected
    assert _query(server, database, "SELECT id, ts, tz FROM copy2 ORDER BY id") == expected
    epochs = [int(t.replace(tzinfo=dt.UTC).timestamp()) for t in INSTANTS]
    stored = _query(server, database, "SELECT FLOOR(UNIX_TIMESTAMP(ts)) FROM copy2 ORDER BY id")
    assert [int(e) for (e,) in stored] == epochs
    assert sorted(_query(server, database, "SELECT who, tz FROM tzlog")) == [
        ("jdbc", "+00:00"),
        ("url", "+00:00"),
    ]
