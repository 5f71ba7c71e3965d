"""Shared pieces of the relational plugins (``sqlreader`` / ``sqlwriter``, ``mysqlreader`` / ``mysqlwriter``).

One place for what every SQL plugin needs, so that the generic plugins and the MySQL plugins
built on them behave alike, one module each:

- **Dialects** (``dialects``): one :class:`Dialect` object per database (SQLite, PostgreSQL,
  MySQL/MariaDB) in the static table :data:`DIALECTS`, chosen once from a URL with
  :func:`dialect_of`. Its public hooks set up engines and sessions (MySQL: ``utf8mb4`` and the
  UTC session time zone, whatever plugin connects), map ``jdbc:`` sub-protocols to SQLAlchemy
  drivers, name the pip package of a missing driver, quote identifiers and build the SQL that
  differs per database (upserts, bulk inserts, deletes by key). Nothing registers at import.
- **Where to connect** (``urls``, ``params``): a SQLAlchemy URL or ChunJun's ``connection:
  [{jdbcUrl, table, schema}]``; :func:`parse_url` turns either into a
  :class:`sqlalchemy.engine.URL`. A password written into a URL is moved into the ``password``
  secret when the job file is validated (:class:`SqlConnectionParams`), so it never reaches a
  checkpoint's fingerprint, a log line or an error.
- **Opening a connection** (``engine``: :func:`open_engine`, :class:`EngineHolder`): one engine
  per plugin, tried over every candidate URL in order (ChunJun's list of ``jdbcUrl`` s is a
  failover list); errors name the URL *without* the password and never contain it.
- **Identifiers and reflection** (``reflect``): :func:`ident` makes a name SQLAlchemy always
  quotes; :func:`reflect_table` gives columns, primary key and unique keys of a table, with
  errors that name the parameter path, the table and the URL.
- **Types and values** (``values``): :func:`arrow_type_of` maps SQLAlchemy types to Arrow;
  :func:`rows_to_batch` builds a record batch column-wise, turning values Arrow cannot hold
  into dirty rows; :func:`encode_value` / :func:`decode_value` make a key value JSON that
  round-trips with its type.
"""

from __future__ import annotations

from libs.sql.dialects import (
    DEFAULT_CONNECT_TIMEOUT,
    DIALECTS,
    KEEPALIVE,
    SESSION_TIME_ZONE,
    Dialect,
    MysqlDialect,
    PostgresqlDialect,
    SqliteDialect,
    dialect_of,
    key_in,
)
from libs.sql.engine import EngineHolder, SqlConnectionError, create_engine, open_engine
from libs.sql.params import SqlConnectionEntry, SqlConnectionParams, split_table_name
from libs.sql.reflect import (
    ColumnInfo,
    TableInfo,
    ident,
    reflect_named,
    reflect_table,
    run_statement,
    sql_text,
)
from libs.sql.urls import jdbc_property, jdbc_to_url, parse_url, safe_url, scrub, strip_password
from libs.sql.values import (
    BadValue,
    arrow_type_of,
    decode_value,
    encode_value,
    is_orderable,
    rows_to_batch,
    value_converter,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DIALECTS",
    "KEEPALIVE",
    "SESSION_TIME_ZONE",
    "BadValue",
    "ColumnInfo",
    "Dialect",
    "EngineHolder",
    "MysqlDialect",
    "PostgresqlDialect",
    "SqlConnectionEntry",
    "SqlConnectionError",
    "SqlConnectionParams",
    "SqliteDialect",
    "TableInfo",
    "arrow_type_of",
    "create_engine",
    "decode_value",
    "dialect_of",
    "encode_value",
    "ident",
    "is_orderable",
    "jdbc_property",
    "jdbc_to_url",
    "key_in",
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
