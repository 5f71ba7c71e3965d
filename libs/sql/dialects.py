"""SQL dialects: one object per database, with the public hooks the SQL plugins call.

:data:`DIALECTS` is a static, declared table: which databases syncx knows, their ``jdbc:``
sub-protocols, the DB-API packages they need, how their engines and sessions are set up and the
SQL that differs between them (upserts, bulk inserts, deletes by key). Nothing registers itself
when a module is imported, so a plugin behaves the same whatever else the job loaded: a
``sqlreader`` on ``jdbc:mysql://`` works without a MySQL plugin, and every MySQL session is
``utf8mb4`` in UTC. A plugin picks its dialect once, from its URL (:func:`dialect_of`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, default
from sqlalchemy.engine.interfaces import Dialect as SaDialect
from sqlalchemy.sql.expression import Executable

from sync.contract import DirtyKind

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DIALECTS",
    "IN_CHUNK",
    "KEEPALIVE",
    "SESSION_TIME_ZONE",
    "SQLITE_BUSY_TIMEOUT",
    "Dialect",
    "MysqlDialect",
    "PostgresqlDialect",
    "SqliteDialect",
    "dialect_of",
    "driver_package",
    "jdbc_driver",
    "jdbc_schemes",
    "key_in",
]

DEFAULT_CONNECT_TIMEOUT = 10
"""Seconds to wait for a server to answer a connection attempt."""

KEEPALIVE = (60, 10, 6)
"""TCP keepalive of MySQL (pymysql) and PostgreSQL connections: the first probe after 60 s idle,
then one every 10 s; 6 unanswered close the connection. A peer that vanished (a host gone, a
NAT or firewall that dropped the flow) is then found in about two minutes rather than the
kernel's default two hours and more; any live peer answers the probes, so no slow statement
is ever cut by them."""

SQLITE_BUSY_TIMEOUT = 60.0
"""Seconds a SQLite connection waits for another connection's write lock."""

SESSION_TIME_ZONE = "+00:00"
"""Every MySQL/MariaDB session's time zone: TIMESTAMP values are read and written as UTC."""

IN_CHUNK = 500
"""Key values per ``IN (...)`` (below every driver's parameter limit)."""

Rows = list[dict[str, Any]]


class Dialect:
    """A database as the SQL plugins see it; the base is what works on any SQLAlchemy database.

    Subclasses override the hooks where their database differs. Instances hold no state: one
    per database, in :data:`DIALECTS`.
    """

    name: ClassVar[str] = "generic"
    backends: ClassVar[tuple[str, ...]] = ()
    """SQLAlchemy backend names (``url.get_backend_name()``) of this database."""
    jdbc: ClassVar[Mapping[str, str]] = {}
    """JDBC sub-protocol (``jdbc:<this>:``) → the SQLAlchemy driver name it maps to."""
    packages: ClassVar[Mapping[str, str]] = {
        "asyncpg": "asyncpg",
        "pg8000": "pg8000",
        "oracledb": "oracledb",
        "pyodbc": "pyodbc",
    }
    """DB-API module that may be missing → the pip package that provides it."""
    deletes_by_join: ClassVar[bool] = False
    """Whether ``DELETE`` can join another table (:meth:`delete_staged_keys`)."""

    def sa_dialect(self) -> SaDialect:
        """SQLAlchemy's dialect (no driver needed): for quoting and compiling."""
        if self.name == Dialect.name:
            return default.DefaultDialect()
        return self.sa.dialect()  # type: ignore[no-any-return]

    @property
    def sa(self) -> ModuleType:
        """SQLAlchemy's package for this database (``sqlalchemy.dialects.<name>``), imported
        when first used: importing all three took ~25 ms of every job's start."""
        return importlib.import_module(f"sqlalchemy.dialects.{self.name}")

    # -- connecting ------------------------------------------------------------------------

    def setup_engine(self, url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
        """Fill the engine's keyword arguments (connect timeout, statement timeout); the URL to
        connect to."""
        del kwargs, query_timeout
        return url

    def prepare_engine(self, engine: Engine, *, write: bool) -> None:
        """Settings made on a new engine (event listeners); ``write``: a writer's engine."""
        del engine, write

    def change_session(self, conn: Connection) -> None:
        """Session settings of a connection that applies CDC changes (the transaction ends)."""
        del conn

    # -- SQL -------------------------------------------------------------------------------

    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier of this database."""
        return str(self.sa_dialect().identifier_preparer.quote_identifier(name))

    def qualified(self, schema: str | None, name: str) -> str:
        """``schema.name`` (or ``name``), each part quoted."""
        return f"{self.quote(schema)}.{self.quote(name)}" if schema else self.quote(name)

    def upsert(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable | None:
        """An insert of bound rows (or of ``select``'s rows) that updates ``columns`` of a row
        whose ``key`` exists; ``None`` when the database has no such statement."""
        del table, key, columns, select
        return None

    def insert_rows(self, conn: Connection, table: sa.Table, rows: Rows) -> None:
        """Insert ``rows`` (all with the same keys) in ``conn``'s transaction; database errors
        surface as SQLAlchemy's exceptions."""
        conn.execute(sa.insert(table), rows)

    def existing_keys(
        self, conn: Connection, table: sa.Table, key: Sequence[str], values: list[tuple[Any, ...]]
    ) -> set[tuple[Any, ...]]:
        """Which of the key ``values`` exist in ``table`` (``key IN (...)`` in chunks)."""
        columns = [table.c[c] for c in key]
        found: set[tuple[Any, ...]] = set()
        for condition in key_in(columns, values):
            found.update(tuple(r) for r in conn.execute(sa.select(*columns).where(condition)))
        return found

    def delete_staged_keys(
        self,
        conn: Connection,
        target: sa.Table,
        staging: sa.Table,
        key: Sequence[str],
        mine: sa.ColumnElement[bool],
    ) -> None:
        """Delete from ``target`` every row whose key has a staged change (``mine``): a join
        where the database has one (``DELETE ... USING``, multi-table ``DELETE``), which the
        staging table's index makes fast; else ``key IN (SELECT ...)``."""
        if self.deletes_by_join:
            join = [target.c[k] == staging.c[k] for k in key]
            conn.execute(sa.delete(target).where(*join, mine))
            return
        keys = sa.select(*[staging.c[k] for k in key]).where(mine)
        if len(key) == 1:
            condition = target.c[key[0]].in_(keys)
        else:
            condition = sa.tuple_(*[target.c[k] for k in key]).in_(keys)
        conn.execute(sa.delete(target).where(condition))

    def truncate(self, qualified: str) -> str:
        """The statement that empties a table."""
        return f"TRUNCATE TABLE {qualified}"

    # -- errors ----------------------------------------------------------------------------

    def classify_error(self, exc: sa_exc.StatementError) -> DirtyKind:
        """What kind of dirty record a rejected row is (SQLSTATE, else the message)."""
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if code == "23505":
            return "duplicate"
        if code == "23502":
            return "null"
        text = str(orig if orig is not None else exc).lower()
        if "unique" in text or "duplicate" in text:
            return "duplicate"
        if "not null" in text or "null value" in text:
            return "null"
        return "other"

    def is_transient(self, exc: sa_exc.DBAPIError) -> bool:
        """A deadlock or lock wait timeout: the transaction may succeed when run again."""
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return state in ("40P01", "40001")


class _OnConflict(Dialect):
    """A database with ``INSERT ... ON CONFLICT`` (SQLite, PostgreSQL)."""

    def upsert(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable | None:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET col = excluded.col``."""
        statement: Any = self.sa.insert(table)
        if select is not None:
            statement = statement.from_select(list(columns), select)
        index = [table.c[k] for k in key]
        updates = {c: statement.excluded[c] for c in columns if c not in key}
        if updates:
            return statement.on_conflict_do_update(index_elements=index, set_=updates)  # type: ignore[no-any-return]
        return statement.on_conflict_do_nothing(index_elements=index)  # type: ignore[no-any-return]


class SqliteDialect(_OnConflict):
    """SQLite (Python's ``sqlite3``): a file, real ``BEGIN``/``SAVEPOINT``, no server."""

    name = "sqlite"
    backends = ("sqlite",)
    jdbc: ClassVar[Mapping[str, str]] = {"sqlite": "sqlite"}
    packages: ClassVar[Mapping[str, str]] = {}

    def setup_engine(self, url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
        """A missing database file is an error (SQLite would create it); the busy timeout."""
        del query_timeout  # SQLite has no statement timeout
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            if not path.is_file():
                msg = f"SQLite database file not found: {path.resolve()}"
                raise FileNotFoundError(msg)
        kwargs.setdefault("connect_args", {}).update(
            {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        )
        return url

    def prepare_engine(self, engine: Engine, *, write: bool) -> None:
        """Let SQLAlchemy, not pysqlite, emit BEGIN, so SAVEPOINTs work (SQLAlchemy's recipe).

        A writer's transactions take the write lock at once (``BEGIN IMMEDIATE``): a
        transaction that reads first and writes later would fail at once with "database is
        locked" when another writer holds the lock, instead of waiting for it.
        """
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @event.listens_for(engine, "connect")
        def _no_pysqlite_transactions(dbapi_connection: Any, record: Any) -> None:
            del record
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

    def truncate(self, qualified: str) -> str:
        return f"DELETE FROM {qualified}"

    def is_transient(self, exc: sa_exc.DBAPIError) -> bool:
        return "database is locked" in str(exc.orig).lower()


class PostgresqlDialect(_OnConflict):
    """PostgreSQL (``psycopg``): ``statement_timeout``, ``COPY FROM STDIN``, ``ON CONFLICT``."""

    name = "postgresql"
    backends = ("postgresql",)
    jdbc: ClassVar[Mapping[str, str]] = {
        "postgresql": "postgresql+psycopg",
        "postgres": "postgresql+psycopg",
    }
    packages: ClassVar[Mapping[str, str]] = {
        "psycopg": "psycopg[binary]",
        "psycopg2": "psycopg2-binary",
    }
    deletes_by_join = True

    def setup_engine(self, url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
        """Connect timeout, TCP :data:`KEEPALIVE`; ``queryTimeOut`` as the session's
        ``statement_timeout``."""
        if url.get_driver_name() in ("psycopg", "psycopg2"):
            args = kwargs.setdefault("connect_args", {})
            args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
            args.setdefault("keepalives", 1)
            for name, value in zip(
                ("keepalives_idle", "keepalives_interval", "keepalives_count"),
                KEEPALIVE,
                strict=True,
            ):
                args.setdefault(name, value)
            if query_timeout:
                options = str(url.query.get("options", ""))
                timeout = f"-c statement_timeout={int(query_timeout * 1000)}"
                url = url.update_query_dict({"options": f"{options} {timeout}".strip()})
        return url

    def insert_rows(self, conn: Connection, table: sa.Table, rows: Rows) -> None:
        """``COPY FROM STDIN`` with psycopg (3-4x faster than executemany)."""
        if conn.dialect.driver != "psycopg":
            super().insert_rows(conn, table, rows)
            return
        columns, values = bound_rows(conn, table, rows)
        statement = (
            f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({columns}) FROM STDIN"
        )

        def copy_all(cursor: Any) -> None:
            with cursor.copy(statement) as copy:
                for row in values:
                    copy.write_row(row)

        with_cursor(conn, statement, copy_all)

    def existing_keys(
        self, conn: Connection, table: sa.Table, key: Sequence[str], values: list[tuple[Any, ...]]
    ) -> set[tuple[Any, ...]]:
        """A single-column key is one ``= ANY(array)``."""
        if len(key) != 1:
            return super().existing_keys(conn, table, key, values)
        column = table.c[key[0]]
        array = sa.bindparam("keys", [v[0] for v in values], type_=self.sa.ARRAY(column.type))
        query = sa.select(column).where(column == sa.any_(array))
        return {tuple(r) for r in conn.execute(query)}


class MysqlDialect(Dialect):
    """MySQL and MariaDB: ``utf8mb4`` sessions in UTC, ``ON DUPLICATE KEY UPDATE``."""

    name = "mysql"
    backends = ("mysql", "mariadb")
    jdbc: ClassVar[Mapping[str, str]] = {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
    packages: ClassVar[Mapping[str, str]] = {
        "pymysql": "PyMySQL",
        "MySQLdb": "mysqlclient",
        "connectorx": "connectorx",
    }
    deletes_by_join = True

    def setup_engine(self, url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
        """utf8mb4, the UTC session time zone (TIMESTAMP values travel as UTC), the connect
        timeout, ``queryTimeOut`` as the read timeout."""
        args = kwargs.setdefault("connect_args", {})
        args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        args.setdefault("charset", "utf8mb4")
        args.setdefault("init_command", f"SET time_zone = '{SESSION_TIME_ZONE}'")
        if query_timeout:
            args.setdefault("read_timeout", max(1, math.ceil(query_timeout)))
        return url

    def change_session(self, conn: Connection) -> None:
        """No gap locks: subtasks applying changes to one table deadlock less often."""
        conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        conn.commit()

    def upsert(
        self,
        table: sa.Table,
        key: Sequence[str],
        columns: Sequence[str],
        select: sa.Select[Any] | None = None,
    ) -> Executable | None:
        """``INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)`` for the non-key columns."""
        statement = self.sa.insert(table)
        if select is not None:
            statement = statement.from_select(list(columns), select)
        updates = {c: statement.inserted[c] for c in columns if c not in key}
        if not updates:
            first = key[0]
            updates = {first: table.c[first]}
        return statement.on_duplicate_key_update(updates)

    def insert_rows(self, conn: Connection, table: sa.Table, rows: Rows) -> None:
        """With pymysql one raw ``executemany`` of tuples (batched into multi-row INSERTs;
        about 1.5x faster than going through SQLAlchemy)."""
        if conn.dialect.driver != "pymysql":
            super().insert_rows(conn, table, rows)
            return
        columns, values = bound_rows(conn, table, rows)
        marks = ", ".join(["%s"] * len(rows[0]))
        statement = (
            f"INSERT INTO {conn.dialect.identifier_preparer.format_table(table)} ({columns}) "
            f"VALUES ({marks})"
        )
        with_cursor(conn, statement, lambda cursor: cursor.executemany(statement, values))

    def is_transient(self, exc: sa_exc.DBAPIError) -> bool:
        orig = exc.orig
        code = orig.args[0] if orig is not None and orig.args else None
        return code in (1213, 1205)


DIALECTS: tuple[Dialect, ...] = (SqliteDialect(), PostgresqlDialect(), MysqlDialect())
"""Every database syncx knows by name; any other SQLAlchemy URL gets the generic :class:`Dialect`."""

_GENERIC = Dialect()


def dialect_of(url: URL | str) -> Dialect:
    """The dialect of a URL (or of a SQLAlchemy backend name)."""
    backend = url if isinstance(url, str) else url.get_backend_name()
    return next((d for d in DIALECTS if backend in d.backends), _GENERIC)


def jdbc_driver(sub: str) -> str | None:
    """The SQLAlchemy driver name of a ``jdbc:<sub>:`` URL, or None."""
    return next((d.jdbc[sub] for d in DIALECTS if sub in d.jdbc), None)


def jdbc_schemes() -> list[str]:
    """Every known JDBC sub-protocol (for messages)."""
    return sorted(sub for d in DIALECTS for sub in d.jdbc)


def driver_package(module: str) -> str | None:
    """The pip package that provides DB-API module ``module``, when known."""
    for dialect in (*DIALECTS, _GENERIC):
        if module in dialect.packages:
            return dialect.packages[module]
    return None


# -- shared pieces of the hooks -----------------------------------------------------------------


def key_in(
    columns: Sequence[sa.ColumnElement[Any]], values: Sequence[tuple[Any, ...]]
) -> Iterator[sa.ColumnElement[bool]]:
    """``key IN (...)`` conditions for ``values`` of the key ``columns``, in chunks that stay
    below every driver's parameter limit."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        if len(columns) == 1:
            yield columns[0].in_([v[0] for v in chunk])
        else:
            yield sa.tuple_(*columns).in_(chunk)


def bound_rows(conn: Connection, table: sa.Table, rows: Rows) -> tuple[str, list[tuple[Any, ...]]]:
    """The quoted column list of ``rows`` and their values as tuples, bound as SQLAlchemy would
    bind them (for a driver's own bulk path)."""
    dialect = conn.dialect
    names = list(rows[0])
    columns = ", ".join(dialect.identifier_preparer.quote_identifier(name) for name in names)
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    ]
    if not any(p is not None for p in processors):
        return columns, [tuple(row[n] for n in names) for row in rows]
    values = [
        tuple(
            v if p is None or v is None else p(v)
            for v, p in zip((row[n] for n in names), processors, strict=True)
        )
        for row in rows
    ]
    return columns, values


def with_cursor(conn: Connection, statement: str, work: Callable[[Any], Any]) -> None:
    """``work`` on a DB-API cursor of ``conn``; the driver's errors become SQLAlchemy's."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        work(cursor)
    except dbapi_error as exc:
        raise sa_exc.DBAPIError.instance(statement, None, exc, dbapi_error) from exc
    finally:
        cursor.close()
