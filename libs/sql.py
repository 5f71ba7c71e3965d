"""Shared pieces of the relational plugins (``sqlreader`` / ``sqlwriter`` and their subclasses).

One place for what every SQL plugin needs, so that the generic plugins and the dialect plugins
built on them (MySQL) behave alike:

- **Where to connect**: a SQLAlchemy URL (``sqlite:///x.db``, ``postgresql+psycopg://...``) or
  ChunJun's ``connection: [{jdbcUrl, table, schema}]``. :func:`parse_url` turns either into a
  :class:`sqlalchemy.engine.URL`; JDBC sub-protocols map to SQLAlchemy drivers through
  :data:`JDBC_DRIVERS` (a dialect plugin adds its own entry). A password written into a URL is
  moved into the ``password`` secret when the job file is validated (:class:`SqlConnectionParams`),
  so it never reaches a checkpoint's fingerprint, a log line or an error.
- **Opening a connection** (:func:`open_engine`): one engine per plugin, tried over every
  candidate URL in order (ChunJun's list of ``jdbcUrl`` s is a failover list); errors name the URL
  *without* the password and never contain it. Per-dialect engine settings (SQLite's busy timeout
  and real ``BEGIN``/``SAVEPOINT`` handling, PostgreSQL's ``statement_timeout``) live in
  :data:`DIALECT_SETUP`, which a dialect plugin extends.
- **Identifiers**: :func:`ident` makes a name that SQLAlchemy always quotes with the dialect's
  quoting, whatever the name; values always travel as bound parameters.
- **Reflection** (:func:`reflect_table`): columns, primary key and unique keys of a table, with
  errors that name the parameter path, the table and the URL.
- **Types**: :func:`arrow_type_of` maps SQLAlchemy types to Arrow; :func:`rows_to_batch` builds a
  record batch column-wise from fetched rows, turning values Arrow cannot hold into dirty rows.
- **Positions**: :func:`encode_value` / :func:`decode_value` make a key value JSON-serializable
  so that it round-trips with its type (ints stay ints; dates, decimals, bytes are tagged).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.sql import quoted_name, sqltypes
from sqlalchemy.types import TypeEngine

from sync.errors import ConfigIssue, JobFileError, RetriableError
from sync.model import Params

__all__ = [
    "DIALECT_SETUP",
    "DRIVER_PACKAGES",
    "JDBC_DRIVERS",
    "ColumnInfo",
    "EngineHolder",
    "SqlConnectionEntry",
    "SqlConnectionError",
    "SqlConnectionParams",
    "TableInfo",
    "arrow_type_of",
    "decode_value",
    "encode_value",
    "ident",
    "is_orderable",
    "jdbc_to_url",
    "open_engine",
    "parse_url",
    "reflect_named",
    "reflect_table",
    "rows_to_batch",
    "run_statement",
    "safe_url",
    "scrub",
    "split_table_name",
    "sql_text",
    "strip_password",
    "value_converter",
]

log = logging.getLogger(__name__)

JDBC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}
"""JDBC sub-protocol (``jdbc:<this>:...``) → SQLAlchemy driver name. Dialect plugins add theirs."""

DRIVER_PACKAGES: dict[str, str] = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}
"""A DB-API module that may be missing → the pip package that provides it."""

DEFAULT_CONNECT_TIMEOUT = 10
"""Seconds to wait for a server to answer a connection attempt."""

SQLITE_BUSY_TIMEOUT = 60.0
"""Seconds a SQLite connection waits for another connection's write lock."""


# -- URLs ---------------------------------------------------------------------------------------


def jdbc_to_url(jdbc: str) -> URL:
    """A ChunJun ``jdbcUrl`` as a SQLAlchemy URL.

    ``jdbc:sqlite:/abs/path.db``, ``jdbc:sqlite:relative.db`` and ``jdbc:sqlite::memory:`` name a
    SQLite file; ``jdbc:<sub>://host:port/db?user=..&password=..`` any server in
    :data:`JDBC_DRIVERS`. JDBC driver properties (``useSSL``, ``characterEncoding``, ...) mean
    nothing to a Python driver and are dropped, except ``user`` and ``password``.
    """
    text = jdbc.strip()
    if not text.lower().startswith("jdbc:"):
        msg = "a jdbcUrl starts with 'jdbc:'"
        raise ValueError(msg)
    rest = text[5:]
    sub, _, tail = rest.partition(":")
    sub = sub.lower()
    if sub == "sqlite":
        path = tail.split("?", 1)[0]
        path = path.removeprefix("file:")
        if path.startswith("///"):
            path = path[2:]
        return URL.create("sqlite", database=path or None)
    if sub not in JDBC_DRIVERS:
        known = ", ".join(sorted(JDBC_DRIVERS))
        msg = f"unsupported jdbc url type 'jdbc:{sub}' (known: {known}); or give a SQLAlchemy `url`"
        raise ValueError(msg)
    parts = urlsplit(f"{sub}:{tail}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    try:
        port = parts.port
    except ValueError as exc:
        msg = "the jdbcUrl's port is not a number"
        raise ValueError(msg) from exc
    username = unquote(parts.username) if parts.username else query.get("user")
    password = unquote(parts.password) if parts.password else query.get("password")
    database = parts.path.lstrip("/") or None
    return URL.create(
        JDBC_DRIVERS[sub],
        username=username or None,
        password=password or None,
        host=parts.hostname,
        port=port,
        database=database,
    )


def parse_url(text: str) -> URL:
    """A SQLAlchemy URL or a ChunJun ``jdbc:`` URL as a :class:`URL`; ``ValueError`` if neither."""
    stripped = text.strip()
    if stripped.lower().startswith("jdbc:"):
        return jdbc_to_url(stripped)
    try:
        return make_url(stripped)
    except sa_exc.ArgumentError as exc:
        msg = "not a SQLAlchemy URL (dialect+driver://user@host:port/database) or a jdbc: URL"
        raise ValueError(msg) from exc


def safe_url(url: URL) -> str:
    """The URL as text with the password masked: the only way a URL appears in messages."""
    return url.render_as_string(hide_password=True)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***`` (for driver messages we do not control)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def strip_password(text: str) -> tuple[str, str | None]:
    """``text`` (a URL) without its password, and the password; unparsable text stays as is."""
    try:
        url = parse_url(text)
    except ValueError:
        return text, None
    if url.password is None:
        return text, None
    password = str(url.password)
    if text.strip().lower().startswith("jdbc:"):
        cleaned = re.sub(r"([?&;])password=[^&;]*&?", r"\1", text)
        cleaned = re.sub(r"(//[^/@:]*):[^/@]*@", r"\1@", cleaned).rstrip("?&;")
        return cleaned, password
    bare = URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return bare.render_as_string(hide_password=False), password


def _url_without_password(text: str, found: list[str]) -> str:
    cleaned, secret = strip_password(text)
    if secret:
        found.append(secret)
    return cleaned


def _entry_without_password(entry: Any, found: list[str]) -> Any:
    """A raw ``connection[]`` entry whose ``jdbcUrl`` (text or list) carries no password."""
    if not isinstance(entry, dict):
        return entry
    cleaned = dict(entry)
    for key in ("jdbcUrl", "jdbc_url"):
        raw = cleaned.get(key)
        if isinstance(raw, str):
            cleaned[key] = _url_without_password(raw, found)
        elif isinstance(raw, list):
            cleaned[key] = [
                _url_without_password(item, found) if isinstance(item, str) else item
                for item in raw
            ]
    return cleaned


# -- parameters shared by reader and writer -----------------------------------------------------


class SqlConnectionEntry(Params):
    """One entry of ChunJun's ``connection`` list."""

    jdbc_url: list[str] | str = Field(
        description="JDBC URL, or a list tried in order (failover); a SQLAlchemy URL works too."
    )
    table: list[str] = Field(default_factory=list, description="The table (exactly one).")
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="Schema (PostgreSQL) or database the table is in.",
    )

    @field_validator("table", mode="before")
    @classmethod
    def _one_table_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def urls(self) -> list[str]:
        """Candidate URLs, in order."""
        return [self.jdbc_url] if isinstance(self.jdbc_url, str) else list(self.jdbc_url)


def _empty_to_none(value: Any) -> Any:
    """ChunJun job files write ``""`` for an unset string (``"splitPk": ""``)."""
    return None if isinstance(value, str) and not value.strip() else value


class SqlConnectionParams(Params):
    """Where a relational plugin connects and which table it uses (reader and writer alike)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (sqlite:///path.db, postgresql+psycopg://user@host/db) "
        "or a jdbc: URL. Alternative to `connection`.",
    )
    connection: list[SqlConnectionEntry] = Field(
        default_factory=list, description="ChunJun's connection list: [{jdbcUrl, table, schema}]."
    )
    username: str | None = Field(default=None, description="Overrides the URL's user.")
    password: SecretStr | None = Field(
        default=None, description="Secret; a password written into a URL is moved here."
    )
    table: str | None = Field(
        default=None, description="Table name; `schema.table` when `schema` is not given."
    )
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="Schema the table is in (default: the connection's default schema).",
    )

    @model_validator(mode="before")
    @classmethod
    def _move_password_out_of_urls(cls, data: Any) -> Any:
        """A password inside ``url`` / ``jdbcUrl`` becomes the ``password`` secret."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        found: list[str] = []
        if isinstance(data.get("url"), str):
            data["url"] = _url_without_password(data["url"], found)
        entries = data.get("connection")
        if isinstance(entries, list):
            data["connection"] = [_entry_without_password(entry, found) for entry in entries]
        if found:
            given = data.get("password")
            given_text = given.get_secret_value() if isinstance(given, SecretStr) else given
            if given_text in (None, ""):
                data["password"] = found[0]
            elif any(secret != given_text for secret in found):
                msg = "a URL carries a password different from `password`; give it once"
                raise ValueError(msg)
        return data

    @field_validator("url", "table", "db_schema", "username", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _empty_to_none(value)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value

    @field_validator("connection")
    @classmethod
    def _connection_parses(cls, value: list[SqlConnectionEntry]) -> list[SqlConnectionEntry]:
        if len(value) > 1:
            msg = "one connection entry per job (sharded reads over several are not supported)"
            raise ValueError(msg)
        for entry in value:
            if not entry.urls:
                msg = "jdbcUrl needs at least one URL"
                raise ValueError(msg)
            for text in entry.urls:
                parse_url(text)
            if len(entry.table) > 1:
                msg = "one table per job (several tables in one job are not supported)"
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _where_is_given(self) -> SqlConnectionParams:
        if self.url is None and not self.connection:
            msg = "give `url` or `connection: [{jdbcUrl, table}]`"
            raise ValueError(msg)
        if self.url is not None and self.connection:
            msg = "give either `url` or `connection`, not both"
            raise ValueError(msg)
        return self

    # -- resolved values ---------------------------------------------------------------------

    def candidate_urls(self) -> list[URL]:
        """Every URL to try, in order, with ``username`` / ``password`` applied."""
        texts = [self.url] if self.url is not None else self.connection[0].urls
        urls = []
        for text in texts:
            assert text is not None
            url = parse_url(text)
            if url.get_backend_name() == "sqlite":  # a file: no credentials
                urls.append(url)
                continue
            if self.username is not None:
                url = url.set(username=self.username)
            if self.password is not None and self.password.get_secret_value():
                url = url.set(password=self.password.get_secret_value())
            urls.append(url)
        return urls

    def secret(self) -> str | None:
        """The password, to scrub from driver messages."""
        return self.password.get_secret_value() if self.password is not None else None

    def table_name(self) -> str | None:
        """The table, from ``table`` or ``connection[0].table[0]``."""
        if self.table is not None:
            return self.table
        if self.connection and self.connection[0].table:
            return _empty_to_none(self.connection[0].table[0])
        return None

    def table_param(self) -> str:
        """Where the table was given, as a path under ``parameter``."""
        if self.table is None and self.connection and self.connection[0].table:
            return "connection[0].table[0]"
        return "table"

    def schema_name(self) -> str | None:
        """The schema, from ``schema`` or ``connection[0].schema``."""
        if self.db_schema is not None:
            return self.db_schema
        if self.connection:
            return _empty_to_none(self.connection[0].db_schema)
        return None


def split_table_name(table: str, schema: str | None) -> tuple[str | None, str]:
    """``(schema, table)``: a dotted ``schema.table`` splits when no schema is given apart."""
    if schema is None and "." in table and not (table.startswith('"') and table.endswith('"')):
        head, _, tail = table.partition(".")
        return head.strip('"`'), tail.strip('"`')
    return schema, table.strip('"`') if schema is None else table


# -- engines ------------------------------------------------------------------------------------


class SqlConnectionError(RetriableError):
    """A database could not be reached (a restart may help); the message has no password."""


DialectSetup = Callable[[URL, dict[str, Any], "float | None"], URL]
"""``(url, engine kwargs to fill, query timeout seconds) -> url``: per-dialect engine settings."""


def _setup_sqlite(url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
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


def _setup_postgresql(url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
    if url.get_driver_name() in ("psycopg", "psycopg2"):
        args = kwargs.setdefault("connect_args", {})
        args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if query_timeout:
            options = str(url.query.get("options", ""))
            timeout = f"-c statement_timeout={int(query_timeout * 1000)}"
            url = url.update_query_dict({"options": f"{options} {timeout}".strip()})
    return url


DIALECT_SETUP: dict[str, DialectSetup] = {
    "sqlite": _setup_sqlite,
    "postgresql": _setup_postgresql,
}
"""Dialect name → engine settings. A dialect plugin (MySQL) registers its own here."""


def _sqlite_real_transactions(engine: Engine, *, write: bool) -> None:
    """Let SQLAlchemy, not pysqlite, emit BEGIN, so SAVEPOINTs work (SQLAlchemy's recipe).

    A writer's transactions take the write lock at once (``BEGIN IMMEDIATE``): a transaction
    that reads first and writes later would fail at once with "database is locked" when another
    writer holds the lock, instead of waiting for it.
    """
    begin = "BEGIN IMMEDIATE" if write else "BEGIN"

    @event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection: Any, record: Any) -> None:
        del record
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def _missing_driver_message(exc: ModuleNotFoundError, url: URL, plugin: str) -> str:
    module = (exc.name or "").split(".")[0]
    package = DRIVER_PACKAGES.get(module, module or "the database driver")
    return (
        f"{plugin}: the URL {safe_url(url)} needs the Python package '{package}', which is not "
        f"installed: pip install '{package}'"
    )


def create_engine(
    url: URL, *, query_timeout: float | None = None, plugin: str = "sql", write: bool = False
) -> Engine:
    """An engine for ``url`` with the dialect's settings; no connection is made yet.

    ``write``: the engine of a writer (on SQLite its transactions take the write lock at once).
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    setup = DIALECT_SETUP.get(url.get_backend_name())
    if setup is not None:
        url = setup(url, kwargs, query_timeout)
    try:
        engine = sa.create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise JobFileError(_missing_driver_message(exc, url, plugin)) from exc
    except sa_exc.NoSuchModuleError as exc:
        msg = f"{plugin}: no SQLAlchemy dialect for the URL {safe_url(url)}"
        raise JobFileError(msg) from exc
    except sa_exc.ArgumentError as exc:
        msg = f"{plugin}: the URL {safe_url(url)} is not usable: {scrub(str(exc), [url.password])}"
        raise JobFileError(msg) from exc
    if engine.dialect.name == "sqlite":
        _sqlite_real_transactions(engine, write=write)
    return engine


def open_engine(
    urls: Sequence[URL],
    *,
    path: str,
    plugin: str,
    query_timeout: float | None = None,
    secret: str | None = None,
    write: bool = False,
) -> Engine:
    """An engine on the first of ``urls`` that accepts a connection.

    Errors name every URL tried (password masked) and the driver's message with the password
    scrubbed out; ``path`` is the parameter the URLs came from.
    """
    failures: list[str] = []
    for url in urls:
        secrets = [secret, None if url.password is None else str(url.password)]
        try:
            engine = create_engine(url, query_timeout=query_timeout, plugin=plugin, write=write)
        except FileNotFoundError as exc:
            failures.append(f"{safe_url(url)}: {exc}")
            continue
        try:
            with engine.connect():
                pass
        except sa_exc.DBAPIError as exc:
            engine.dispose()
            detail = scrub(str(exc.orig).strip() or type(exc.orig).__name__, secrets)
            failures.append(f"{safe_url(url)}: {detail}")
            continue
        return engine
    if len(failures) == 1:
        msg = f"{path}: cannot connect to {failures[0]}"
    else:
        listed = "\n".join(f"  - {failure}" for failure in failures)
        msg = f"{path}: cannot connect to any of {len(failures)} URLs:\n{listed}"
    raise SqlConnectionError(msg)


# -- identifiers and reflection -----------------------------------------------------------------


def ident(name: str) -> quoted_name:
    """A table or column name that SQLAlchemy always quotes with the dialect's quoting."""
    return quoted_name(name, quote=True)


def sql_text(fragment: str) -> sa.TextClause:
    """User SQL (``where``, ``customSql``) as a clause, taken literally: a ``:name`` in it is
    not a bind parameter and ``%`` needs no escaping, whatever the driver's paramstyle."""
    return sa.text(fragment.replace(":", "\\:"))


def run_statement(conn: Connection, statement: str) -> None:
    """Run one user statement (``preSql``/``postSql``) exactly as written, without parameters."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


@dataclass(frozen=True)
class ColumnInfo:
    """One reflected column."""

    name: str
    type: TypeEngine[Any]
    nullable: bool = True


@dataclass(frozen=True)
class TableInfo:
    """A reflected table: what the plugins need to know about it."""

    schema: str | None
    name: str
    columns: list[ColumnInfo]
    primary_key: list[str] = field(default_factory=list)
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    """Primary key first, then unique constraints and unique indexes (column tuples)."""
    is_view: bool = False

    @property
    def qualified(self) -> str:
        """``schema.table`` (or ``table``) for messages."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def column(self, name: str) -> ColumnInfo | None:
        """The column called ``name``: exactly, else the one whose name differs only in case."""
        exact = [c for c in self.columns if c.name == name]
        if exact:
            return exact[0]
        folded = [c for c in self.columns if c.name.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None

    def missing(self, name: str, what: str = "column") -> str:
        """The message for a ``what`` called ``name`` that this table lacks (its columns listed)."""
        listed = ", ".join(c.name for c in self.columns)
        return f"{what} '{name}' not found in table '{self.qualified}' (its columns: {listed})"

    def is_unique(self, columns: Sequence[str]) -> bool:
        """Whether ``columns`` are (a superset of) a unique key."""
        wanted = set(columns)
        return any(set(key) <= wanted for key in self.unique_keys)

    def sa_table(self, names: Sequence[str] | None = None) -> sa.Table:
        """A Core table of these columns (or of ``names``) whose identifiers are always quoted."""
        chosen = self.columns if names is None else [self.column(n) for n in names]
        columns = [sa.Column(ident(c.name), c.type) for c in chosen if c is not None]
        return sa.Table(
            ident(self.name),
            sa.MetaData(),
            *columns,
            schema=ident(self.schema) if self.schema else None,
        )


def _resolve_name(candidates: Sequence[str], name: str) -> str | None:
    if name in candidates:
        return name
    folded = [c for c in candidates if c.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def reflect_table(
    conn: Connection, schema: str | None, table: str, *, path: str, where: str
) -> TableInfo:
    """Reflect ``schema.table`` (names matched exactly, else case-insensitively).

    ``path`` is the parameter that named the table and ``where`` the URL without password, both
    for the error when the table does not exist.
    """
    inspector = sa.inspect(conn)
    if schema is not None:
        schemas = inspector.get_schema_names()
        resolved_schema = _resolve_name(schemas, schema)
        if resolved_schema is None:
            msg = f"schema '{schema}' not found in {where}"
            raise JobFileError([ConfigIssue(path, msg)])
        schema = resolved_schema
    tables = list(inspector.get_table_names(schema=schema))
    views = list(inspector.get_view_names(schema=schema))
    resolved = _resolve_name(tables + views, table)
    if resolved is None:
        shown = f"{schema}.{table}" if schema else table
        msg = f"table '{shown}' not found in {where}"
        raise JobFileError([ConfigIssue(path, msg)])
    # SQLAlchemy's MySQL reflection leaves a backtick in a column name doubled (``a``b``)
    backticks = conn.dialect.name in ("mysql", "mariadb")

    def column_name(raw: Any) -> str:
        return str(raw).replace("``", "`") if backticks else str(raw)

    columns = [
        ColumnInfo(column_name(c["name"]), c["type"], bool(c.get("nullable", True)))
        for c in inspector.get_columns(resolved, schema=schema)
    ]
    primary: list[str] = []
    unique: list[tuple[str, ...]] = []
    try:
        pk = inspector.get_pk_constraint(resolved, schema=schema)
        primary = [column_name(c) for c in pk.get("constrained_columns") or []]
        for constraint in inspector.get_unique_constraints(resolved, schema=schema):
            unique.append(tuple(column_name(c) for c in constraint["column_names"]))
        extra = {"include_auto_indexes": True} if conn.dialect.name == "sqlite" else {}
        for index in inspector.get_indexes(resolved, schema=schema, **extra):
            names_in = [c for c in index.get("column_names") or [] if c is not None]
            if index.get("unique") and names_in and len(names_in) == len(index["column_names"]):
                unique.append(tuple(column_name(c) for c in names_in))
    except NotImplementedError:  # views on some dialects
        pass
    keys = ([tuple(primary)] if primary else []) + [u for u in unique if u != tuple(primary)]
    deduped = list(dict.fromkeys(keys))
    return TableInfo(schema, resolved, columns, primary, deduped, resolved not in tables)


def reflect_named(
    conn: Connection, params: SqlConnectionParams, table: str, *, param_path: str, where: str
) -> TableInfo:
    """Reflect ``table`` as a job names it (``schema.table``, or a name in ``params``' schema);
    a missing one is reported at the parameter that named the job's table."""
    schema, name = split_table_name(table, params.schema_name())
    return reflect_table(
        conn, schema, name, path=f"{param_path}.{params.table_param()}", where=where
    )


# -- types --------------------------------------------------------------------------------------

DEFAULT_DECIMAL_SCALE = 10
"""Scale given to a NUMERIC without declared precision (SQLAlchemy's own default scale)."""


def arrow_type_of(sql_type: TypeEngine[Any]) -> pa.DataType:
    """The Arrow type that holds values of a SQLAlchemy column type.

    Integer → int64, Float → float64, Numeric(p,s) → decimal128(p,s) (decimal256 above 38 digits,
    decimal128(38,10) when undeclared), DateTime → timestamp('us') (UTC-zoned when the column has
    a time zone), Date → date32, Time → time64('us'), Interval → duration('us'), Boolean → bool,
    binary types → binary, ARRAY → list, and text, enums, UUID, JSON and anything else → string.
    """
    t = sql_type
    if isinstance(t, sqltypes.Boolean):
        return pa.bool_()
    if isinstance(t, sqltypes.Integer):
        return pa.int64()
    if isinstance(t, sqltypes.Float):
        return pa.float64()
    if isinstance(t, sqltypes.Numeric):
        if not t.asdecimal:
            return pa.float64()
        precision, scale = t.precision, t.scale
        if precision is None:
            return pa.decimal128(38, DEFAULT_DECIMAL_SCALE if scale is None else scale)
        if precision <= 38:
            return pa.decimal128(precision, scale or 0)
        if precision <= 76:
            return pa.decimal256(precision, scale or 0)
        return pa.string()
    if isinstance(t, sqltypes.DateTime):
        return pa.timestamp("us", tz="UTC" if t.timezone else None)
    if isinstance(t, sqltypes.Date):
        return pa.date32()
    if isinstance(t, sqltypes.Time):
        return pa.time64("us")
    if isinstance(t, sqltypes._AbstractInterval):
        return pa.duration("us")
    if isinstance(t, sqltypes._Binary):
        return pa.binary()
    if isinstance(t, sqltypes.ARRAY):
        return pa.list_(arrow_type_of(t.item_type))
    return pa.string()


def value_converter(sql_type: TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How to turn a fetched value into what :func:`arrow_type_of` expects (None: as is)."""
    target = arrow_type_of(sql_type)
    if not pa.types.is_string(target):
        return None
    if isinstance(sql_type, sqltypes.JSON):
        return _json_text
    if isinstance(sql_type, sqltypes.String | sqltypes.Enum):
        return None
    return _text


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def is_orderable(sql_type: TypeEngine[Any]) -> bool:
    """Whether ORDER BY works on the type everywhere (PostgreSQL cannot sort ``json``)."""
    return not (
        isinstance(sql_type, sqltypes.NullType)
        or (isinstance(sql_type, sqltypes.JSON) and type(sql_type).__name__ != "JSONB")
    )


_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    TypeError,
    ValueError,
    OverflowError,
    decimal.InvalidOperation,
)


@dataclass(frozen=True)
class BadValue:
    """A fetched value that Arrow could not hold: which row, which column, why."""

    row: int
    field: str
    error: str


def rows_to_batch(
    rows: Sequence[Sequence[Any]],
    schema: pa.Schema,
    converters: Sequence[Callable[[Any], Any] | None] | None = None,
) -> tuple[pa.RecordBatch, list[BadValue]]:
    """A record batch of the first ``len(schema)`` values of each row, built column-wise.

    Each column is one ``pa.array`` call over the transposed rows. A column that fails is
    retried value by value: the rows whose value does not fit are dropped from the batch and
    returned as :class:`BadValue` s (their row numbers index ``rows``).
    """
    width = len(schema)
    columns: list[tuple[Any, ...]] = []
    if rows:
        columns = [tuple(c) for c in zip(*rows, strict=False)][:width]
    if not columns:
        columns = [() for _ in range(width)]
    arrays: list[pa.Array] = []
    bad: dict[int, BadValue] = {}
    for position, target in enumerate(schema):
        values: Sequence[Any] = columns[position]
        convert = converters[position] if converters else None
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        try:
            arrays.append(pa.array(values, type=target.type, from_pandas=False))
        except _ARROW_ERRORS:
            kept: list[Any] = []
            for index, value in enumerate(values):
                try:
                    pa.array([value], type=target.type)
                except _ARROW_ERRORS as exc:
                    error = f"{target.name}: cannot hold {value!r} as {target.type}: {exc}"
                    bad.setdefault(index, BadValue(index, target.name, error))
                    kept.append(None)
                else:
                    kept.append(value)
            arrays.append(pa.array(kept, type=target.type))
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if bad:
        batch = batch.filter(pa.array([i not in bad for i in range(len(rows))]))
    return batch, sorted(bad.values(), key=lambda b: b.row)


# -- positions ----------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """A key value as JSON that :func:`decode_value` turns back into the same type.

    ``None``, bools, ints, floats and strings are themselves; other types are a one-key mapping
    naming the type: ``{"$date": "2024-01-31"}``, ``{"$decimal": "1.50"}``, ``{"$bytes": b64}``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    msg = f"cannot store a {type(value).__name__} key value in a checkpoint"
    raise TypeError(msg)


def decode_value(raw: Any) -> Any:
    """The value :func:`encode_value` encoded."""
    if not isinstance(raw, dict):
        return raw
    ((tag, value),) = raw.items()
    decoders: dict[str, Callable[[Any], Any]] = {
        "$datetime": dt.datetime.fromisoformat,
        "$date": dt.date.fromisoformat,
        "$time": dt.time.fromisoformat,
        "$timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
        "$decimal": decimal.Decimal,
        "$bytes": base64.b64decode,
        "$uuid": uuid.UUID,
    }
    if tag not in decoders:
        msg = f"unknown key value tag {tag!r} in a checkpoint position"
        raise ValueError(msg)
    return decoders[tag](value)


class EngineHolder:
    """A plugin's connection pool, opened on first use and disposed by ``close``.

    Shared by the SQL reader and writer (and their dialect subclasses), which give
    ``create_engine``; ``_lock`` guards their shared state too. Put first among the bases: its
    constructor passes its arguments on to the plugin base.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()
        self._engine: Engine | None = None

    def create_engine(self) -> Engine:
        """Connect; each plugin knows its URL parameters."""
        raise NotImplementedError

    def engine(self) -> Engine:
        """The connection pool (opened on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = self.create_engine()
            return self._engine

    def close(self) -> None:
        """Close the connection pool (the core calls this at the end of every attempt)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
