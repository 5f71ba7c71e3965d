"""Helpers for the private MariaDB test server (``scripts/mariadb-test-server.sh``).

The server listens on ``127.0.0.1:$SYNCX_TEST_MYSQL_PORT`` (default 3307), root
has an empty password and the binlog is on in ROW/FULL/FULL mode with GTID
strict mode.  It is *not* the system MariaDB on port 3306.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pymysql.connections

SCRIPT: Path = Path(__file__).resolve().parent.parent.parent / "scripts" / "mariadb-test-server.sh"
DEFAULT_PORT = 3307

BINLOG_VARIABLES: tuple[str, ...] = (
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "gtid_strict_mode",
    "server_id",
)


LOCK_WAIT_TIMEOUT = 1205

_LOCK_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "InnoDB transactions",
        "SELECT trx_id, trx_state, trx_started, trx_mysql_thread_id, trx_rows_locked, "
        "trx_rows_modified, trx_query FROM information_schema.innodb_trx",
    ),
    ("lock waits", "SELECT * FROM information_schema.innodb_lock_waits"),
    (
        "sessions",
        "SELECT id, host, db, command, time, state, LEFT(info, 120) "
        "FROM information_schema.processlist",
    ),
    ("prepared XA", "XA RECOVER"),
)


def _quote_ident(name: str) -> str:
    """Quote an SQL identifier with backticks."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class MariaDB:
    """Connection facts of a running MariaDB server."""

    host: str
    port: int
    user: str
    password: str

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        """Open an autocommit utf8mb4 connection with LOAD DATA LOCAL enabled."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            autocommit=True,
            charset="utf8mb4",
            local_infile=True,
        )

    def create_database(self, prefix: str) -> str:
        """Create a fresh database named ``<prefix>_<uuid>`` and return its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        if len(name) > 64:
            msg = f"database name too long (max 64 chars): {name!r}"
            raise ValueError(msg)
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE {_quote_ident(name)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
                )
        finally:
            conn.close()
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists; a lock wait that fails it is raised with
        :meth:`lock_report` (who holds what), since it means a test left a transaction open."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != LOCK_WAIT_TIMEOUT:
                raise
            msg = f"DROP DATABASE {name}: {exc.args[1]}\n{self.lock_report()}"
            raise AssertionError(msg) from exc
        finally:
            conn.close()

    def lock_report(self) -> str:
        """The server's open transactions, lock waits, sessions and prepared XA transactions,
        with the local process owning each session's socket: what a test that failed on a
        lock (1205) needs to show."""
        try:
            owners = subprocess.run(
                ["ss", "-tnpH", "dst", f"{self.host}:{self.port}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        except OSError as exc:  # no ss (iproute2) here: the report goes without the owners
            owners = f"ss: {exc}"
        conn = self.connect()
        lines: list[str] = []
        try:
            with conn.cursor() as cur:
                for title, query in _LOCK_QUERIES:
                    cur.execute(query)
                    lines.append(f"-- {title}")
                    lines.extend(f"   {row!r}" for row in cur.fetchall())
                cur.execute("SHOW ENGINE INNODB STATUS")
                status = cur.fetchone()[2]
                start = status.find("\nTRANSACTIONS\n")
                end = status.find("\nFILE I/O\n", start)
                lines.append("-- InnoDB status, transactions (prepared ones included)")
                lines.append(status[start:end] if start >= 0 else status)
        finally:
            conn.close()
        lines.append("-- client sockets (ss)")
        lines.extend(f"   {line}" for line in owners.splitlines())
        return "\n".join(lines)


def server_port() -> int:
    """Port of the test server (``SYNCX_TEST_MYSQL_PORT``, default 3307)."""
    return int(os.environ.get("SYNCX_TEST_MYSQL_PORT", DEFAULT_PORT))


def ensure_server() -> MariaDB:
    """Start the test server if needed (idempotent) and return its connection facts."""
    port = server_port()
    env = {**os.environ, "SYNCX_TEST_MYSQL_PORT": str(port)}
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, env=env, stdin=subprocess.DEVNULL)
    return MariaDB(host="127.0.0.1", port=port, user="root", password="")


def binlog_settings(conn: pymysql.connections.Connection) -> dict[str, str]:
    """Return the server's binlog/GTID settings relevant to CDC, keyed by variable name."""
    placeholders = ", ".join(["%s"] * len(BINLOG_VARIABLES))
    with conn.cursor() as cur:
        cur.execute(
            f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})",
            BINLOG_VARIABLES,
        )
        rows = cur.fetchall()
    return {str(name).lower(): str(value) for name, value in rows}
