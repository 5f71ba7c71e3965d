"""sysbench (the Debian package ``sysbench``, 1.0.20) on the test servers: its ``oltp_write_only``
tables and load, for the CDC test and benchmark that replicate a load this project did not
write (:mod:`tests.test_sysbench_cdc`, ``bench/sysbench_cdc_bench.py``).

sysbench makes a database's tables with its own DDL for that database (``prepare``; with
``--table-size=0`` they stay empty, a replication target) and loads them (``run``): per
transaction an update of the indexed ``k``, an update of ``c``, a delete of a random id and the
insert of that same id again.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from tests.servers.mariadb import MariaDB

POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432"
"""The PostgreSQL server (root, no password) in which private databases are made."""
EVENTS_PER_TRANSACTION = 4
"""Row events of one ``oltp_write_only`` transaction: two updates, a delete, an insert."""
ROW = pa.schema([("id", pa.int64()), ("k", pa.int64()), ("c", pa.string()), ("pad", pa.string())])
"""A row of a sysbench table."""


class SysbenchError(RuntimeError):
    """sysbench is missing or failed."""


@dataclass(frozen=True)
class Database:
    """A database sysbench and syncx both reach: its kind, sysbench's connection options and
    syncx's SQLAlchemy url."""

    kind: str
    options: tuple[str, ...]
    url: str

    @property
    def name(self) -> str:
        """The database's name (the url's last part)."""
        return self.url.rpartition("/")[2]


def sysbench(database: Database, command: str, *options: str) -> str:
    """Run ``sysbench oltp_write_only COMMAND`` with ``options`` (``--tables``,
    ``--table-size``, ``--time``, ...) on ``database``; its output."""
    program = shutil.which("sysbench")
    if program is None:
        msg = "sysbench is not installed: scripts/setup.sh installs it (apt-get install sysbench)"
        raise SysbenchError(msg)
    argv = [program, "oltp_write_only", *database.options, *options, command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        raise SysbenchError(msg)
    return done.stdout


def prepare(database: Database, tables: int, rows: int) -> None:
    """sysbench's tables ``sbtest1`` … in ``database``, ``rows`` rows each (0: empty, a
    replication target)."""
    sysbench(database, "prepare", f"--tables={tables}", f"--table-size={rows}")


def transactions(output: str) -> int:
    """The transactions a ``sysbench run`` reports having committed."""
    found = re.search(r"^\s*transactions:\s+(\d+)", output, re.MULTILINE)
    if found is None:
        raise SysbenchError(f"no transaction count in sysbench's output:\n{output}")
    return int(found.group(1))


def mariadb_database(server: MariaDB, name: str) -> Database:
    """Database ``name`` of ``server`` (an empty password is no ``--mysql-password`` at all)."""
    options = [
        "--db-driver=mysql",
        f"--mysql-host={server.host}",
        f"--mysql-port={server.port}",
        f"--mysql-user={server.user}",
        f"--mysql-db={name}",
    ]
    if server.password:
        options.append(f"--mysql-password={server.password}")
    auth = f"{server.user}:{server.password}" if server.password else server.user
    url = f"mysql+pymysql://{auth}@{server.host}:{server.port}/{name}"
    return Database("mariadb", tuple(options), url)


@contextlib.contextmanager
def mariadb_scratch(server: MariaDB, prefix: str) -> Iterator[Database]:
    """A fresh database on ``server``, dropped afterwards."""
    name = server.create_database(prefix)
    try:
        yield mariadb_database(server, name)
    finally:
        server.drop_database(name)


@contextlib.contextmanager
def postgres_scratch(prefix: str) -> Iterator[Database]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    options = (
        "--db-driver=pgsql",
        "--pgsql-host=127.0.0.1",
        "--pgsql-port=5432",
        "--pgsql-user=root",
        f"--pgsql-db={name}",
    )
    try:
        yield Database("postgresql", options, f"{POSTGRES}/{name}")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def scratch(server: MariaDB, kind: str, prefix: str) -> contextlib.AbstractContextManager[Database]:
    """A fresh database of ``kind``: ``postgresql``, or ``mariadb`` on ``server``."""
    return postgres_scratch(prefix) if kind == "postgresql" else mariadb_scratch(server, prefix)


def table_rows(database: Database, table: str) -> pa.Table:
    """Every row of sysbench table ``table`` ordered by id, ``CHAR`` values without the padding
    PostgreSQL keeps (MariaDB strips it)."""
    engine = sa.create_engine(database.url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT id, k, RTRIM(c) AS c, RTRIM(pad) AS pad FROM {table} ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    return pa.Table.from_pylist([row._asdict() for row in rows], schema=ROW)
