"""The conformance kit (:mod:`sync.testing`) run by the SQL, MySQL and binlog plugins.

``sqlreader``/``sqlwriter`` on a SQLite file and on the local PostgreSQL (a fresh schema each
test, reached through ``search_path``), ``mysqlreader``/``mysqlwriter`` and ``binlogreader`` on
the private MariaDB (a fresh database each test). Only the plugins' public surface is used: they
are loaded by name and configured as a job file configures them, so these tests hold whatever
the plugins' modules become.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sync.testing import (
    CrashConformance,
    JobCase,
    ReaderCase,
    ReaderConformance,
    WriterCase,
    WriterConformance,
)
from tests import kit_cases
from tests.kit_cases import SCHEMA, rows
from tests.servers.mariadb import MariaDB, ensure_server

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DDL = "CREATE TABLE {name} (id BIGINT PRIMARY KEY, name VARCHAR(40), amount DOUBLE PRECISION)"
STAGING = ("_syncx_stage_", "_syncx_cdc_")
"""Prefixes of the SQL writers' staging tables: rows left in them are leftovers."""


@dataclass
class Database:
    """A fresh database (or schema) of one backend, with what the cases need from it: the
    :class:`tests.kit_cases.Target` of ``sqlreader``/``sqlwriter`` (SQLite, PostgreSQL) or of
    ``mysqlreader``/``mysqlwriter`` (MariaDB)."""

    kind: str
    url: str
    """SQLAlchemy URL (``sqlwriter``'s ``url``; ``sqlreader`` takes it too)."""
    engine: sa.Engine
    jdbc: str = ""
    """``jdbc:mysql://...`` of the MariaDB database (``mysqlreader``/``mysqlwriter``)."""
    database: str = ""

    def create(self, rows: pa.Table | None = None) -> str:
        """A new uuid-named table of :data:`SCHEMA`, holding ``rows``."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        with self.engine.begin() as conn:
            conn.execute(sa.text(DDL.format(name=name)))
            if rows is not None and rows.num_rows:
                conn.execute(
                    sa.text(f"INSERT INTO {name} (id, name, amount) VALUES (:id, :name, :amount)"),
                    rows.to_pylist(),
                )
        return name

    def read(self, table: str) -> pa.Table:
        """Every row of ``table``."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.text(f"SELECT id, name, amount FROM {table}")).all()
        return pa.table(
            {name: [row[i] for row in found] for i, name in enumerate(SCHEMA.names)},
            schema=SCHEMA,
        )

    def staged(self, job_id: str) -> list[str]:
        """Rows in staging tables, and (MariaDB) prepared XA transactions of job ``job_id``."""
        left: list[str] = []
        with self.engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names():
                if name.startswith(STAGING):
                    count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one()
                    if count:
                        left.append(f"{count} row(s) in {name}")
            if self.kind == "mariadb":
                for row in conn.exec_driver_sql("XA RECOVER").all():
                    xid = row[3] if isinstance(row[3], str) else bytes(row[3]).decode()
                    if xid.startswith(f"syncx-{job_id}-"):
                        left.append(f"prepared XA transaction {xid}")
        return left

    def reader(self, table: str) -> dict[str, Any]:
        """``mysqlreader`` on MariaDB, else ``sqlreader``: ``table`` split by ``id``."""
        if self.kind == "mariadb":
            return {
                "name": "mysqlreader",
                "parameter": {
                    "username": "root",
                    "password": "",
                    "connection": [{"jdbcUrl": [self.jdbc], "table": [table]}],
                    "column": ["id", "name", "amount"],
                    "splitPk": "id",
                    "fetchSize": 6,
                },
            }
        return {
            "name": "sqlreader",
            "parameter": {
                "url": self.url,
                "table": table,
                "column": ["id", "name", "amount"],
                "splitPk": "id",
                "fetchSize": 6,
            },
        }

    def writer(self, table: str) -> dict[str, Any]:
        """``mysqlwriter`` (XA) on MariaDB, else ``sqlwriter`` exactly-once: into ``table``."""
        if self.kind == "mariadb":
            return {
                "name": "mysqlwriter",
                "parameter": {
                    "username": "root",
                    "password": "",
                    "connection": [{"jdbcUrl": self.jdbc, "table": [table]}],
                    "writeMode": "insert",
                    "batchSize": 5,
                },
            }
        return {
            "name": "sqlwriter",
            "parameter": {
                "url": self.url,
                "table": table,
                "batchSize": 5,
                "semantic": "exactly-once",
            },
        }


@pytest.fixture(scope="module")
def mariadb() -> MariaDB:
    return ensure_server()


def _sqlite(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'test.db'}"
    engine = sa.create_engine(url)
    try:
        yield Database("sqlite", url, engine)
    finally:
        engine.dispose()


def _postgresql() -> Iterator[Database]:
    schema = f"syncx_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    try:
        yield Database("postgresql", url, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _mariadb(server: MariaDB) -> Iterator[Database]:
    name = server.create_database("syncx_kit")
    host = f"{server.host}:{server.port}"
    url = f"mysql+pymysql://{server.user}@{host}/{name}?charset=utf8mb4"
    engine = sa.create_engine(url)
    try:
        yield Database("mariadb", url, engine, jdbc=f"jdbc:mysql://{host}/{name}", database=name)
    finally:
        engine.dispose()
        server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from _sqlite(tmp_path) if request.param == "sqlite" else _postgresql()


@pytest.fixture
def maria_db(mariadb: MariaDB) -> Iterator[Database]:
    yield from _mariadb(mariadb)


# -- sqlreader / sqlwriter (SQLite, PostgreSQL) ------------------------------------------------


class TestSqlReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, sql_db: Database) -> ReaderCase:
        return kit_cases.reader_case(sql_db, channels=2)


class TestSqlWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, sql_db: Database) -> WriterCase:
        return kit_cases.writer_case(sql_db)


@pytest.mark.slow
class TestSqlCrash(CrashConformance):
    @pytest.fixture
    def job_case(self, sql_db: Database) -> JobCase:
        return kit_cases.job_case(sql_db)


# -- mysqlreader / mysqlwriter / binlogreader (MariaDB) ----------------------------------------


@pytest.mark.mysql
class TestMysqlReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, maria_db: Database) -> ReaderCase:
        return kit_cases.reader_case(maria_db, channels=2)


@pytest.mark.mysql
class TestMysqlWriter(WriterConformance):
    @pytest.fixture
    def writer_case(self, maria_db: Database) -> WriterCase:
        return kit_cases.writer_case(maria_db)


@pytest.mark.slow
@pytest.mark.mysql
class TestMysqlCrash(CrashConformance):
    @pytest.fixture
    def job_case(self, maria_db: Database) -> JobCase:
        return kit_cases.job_case(maria_db)


BINLOG_SCHEMA = pa.schema(
    [("after_id", pa.int64()), ("after_name", pa.string()), ("after_amount", pa.float64())]
)


def _binlog_source(db: Database, count: int, per_transaction: int) -> tuple[str, str, pa.Table]:
    """A table, the GTID position before its rows, and the rows inserted after it (in
    transactions of ``per_transaction`` rows), as ``binlogreader`` delivers them (paved)."""
    table = db.create()
    with db.engine.connect() as conn:
        start = str(conn.exec_driver_sql("SELECT @@gtid_binlog_pos").scalar_one())
    inserted = rows(count)
    for first in range(0, count, per_transaction):
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {table} (id, name, amount) VALUES (:id, :name, :amount)"),
                inserted.slice(first, per_transaction).to_pylist(),
            )
    paved = pa.table(
        {f"after_{name}": inserted.column(name) for name in SCHEMA.names}, schema=BINLOG_SCHEMA
    )
    return table, start, paved


def _binlog_reader(db: Database, table: str, start: str) -> dict[str, Any]:
    return {
        "name": "binlogreader",
        "parameter": {
            "jdbcUrl": db.jdbc,
            "username": "root",
            "password": "",
            "table": [f"{db.database}.{table}"],
            "cat": "insert,update,delete",
            "pavingData": True,
            "snapshot": "never",
            "start": {"gtid": start},
            "stopAt": "now",
        },
    }


@pytest.mark.mysql
class TestBinlogReader(ReaderConformance):
    @pytest.fixture
    def reader_case(self, maria_db: Database) -> ReaderCase:
        table, start, expected = _binlog_source(maria_db, 24, per_transaction=4)
        spec = _binlog_reader(maria_db, table, start)
        return ReaderCase(spec["name"], spec["parameter"], expected, ["after_id"], batch_rows=3)


@pytest.mark.slow
@pytest.mark.mysql
class TestBinlogCrash(CrashConformance):
    """binlogreader (bounded by ``stopAt: now``) → filewriter: the changes, exactly once."""

    @pytest.fixture
    def job_case(self, maria_db: Database, tmp_path: Path) -> JobCase:
        table, start, expected = _binlog_source(maria_db, 300, per_transaction=10)
        out = tmp_path / "out"
        job = kit_cases.job(
            _binlog_reader(maria_db, table, start),
            {"name": "filewriter", "parameter": {"path": str(out), "fileType": "parquet"}},
        )
        job["job"]["setting"]["speed"] = {"channel": 1}
        return JobCase(job, expected, ["after_id"], lambda: _read_parquet(out))


def _read_parquet(folder: Path) -> pa.Table:
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return BINLOG_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(p).select(BINLOG_SCHEMA.names) for p in files)
