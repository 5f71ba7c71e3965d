"""Shared pieces of ``mysqlreader`` / ``mysqlwriter`` (MySQL 5.7+/8, MariaDB 10.5+).

What the two plugins share, on top of :mod:`libs.sql`:

- **Where to connect.** ``jdbc:mysql://host:port/db?k=v`` (and ``jdbc:mariadb:``) map to
  SQLAlchemy's ``mysql+pymysql``; :class:`MysqlEndpoint` adds the plain ``host`` / ``port`` /
  ``database`` form. Every connection uses ``utf8mb4`` and the session time zone ``+00:00``, so
  ``TIMESTAMP`` values travel as UTC. JDBC driver properties (``useSSL``, ...) are ignored.
- **Types** (:class:`MysqlType`, :func:`mysql_type`, :func:`mysql_type_of_field`): one Arrow
  type per MySQL column type, the same for every driver; the table is in the README ("MySQL
  type mapping").
- **Drivers** (:class:`Fetcher`): rows are read with ``connectorx`` (Arrow straight from Rust,
  no per-value Python work), ``mysqlclient`` (C, values as raw bytes) or ``pymysql`` (pure
  Python, always there). The text drivers' values are parsed column-wise with Arrow casts
  (:func:`decode_text`); connectorx's Arrow columns are cast to the same types
  (:func:`from_connectorx`). Where connectorx cannot hold a type exactly (``TIME`` beyond a day,
  ``DECIMAL`` wider than 28 digits or 10 decimals) the column is selected as text; where it
  fails on a value (zero dates) the query is read again with a text driver. connectorx reads a
  whole page (``pageSize`` rows) with the GIL released (its ``arrow_stream`` mode holds the GIL
  while it waits for the next batch, which stalled the job's other threads for a third of the
  run); the page is cut into ``fetchSize`` batches without copying. Memory: what connectorx
  allocated for a page is given back to the system after it (glibc ``malloc_trim``), and glibc's
  arenas are capped at two (:func:`limit_malloc_arenas`): together about 70 MB less peak RSS on
  the benchmark, at no measurable cost in time.
- **Errors**: MySQL error codes sorted into lost connections (retried, then
  :class:`~sync.errors.RetriableError`), rejected rows (dirty records) and the rest.
- **Writing** (:func:`tsv_text`, :func:`sql_values`): an Arrow batch as ``LOAD DATA`` text or as
  SQL ``VALUES`` rows, built with Arrow compute (no per-value Python).
- **XA** (:class:`Xid`, :func:`xa_recover`): transaction ids of the exactly-once writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import decimal
import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import Field, model_validator
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import URL
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

from libs.sql import (
    DEFAULT_CONNECT_TIMEOUT,
    DIALECT_SETUP,
    DRIVER_PACKAGES,
    JDBC_DRIVERS,
    BadValue,
    parse_url,
    safe_url,
    scrub,
)
from libs.types import time_text
from sync.errors import FatalError, JobFileError, RetriableError, SyncxError
from sync.model import Params
from sync.registry import require

__all__ = [
    "DRIVERS",
    "XA_FORMAT_ID",
    "Driver",
    "Fetcher",
    "MysqlConfigError",
    "MysqlEndpoint",
    "MysqlType",
    "Xid",
    "connect",
    "connection_settings",
    "decode_text",
    "dirty_kind",
    "errno",
    "from_connectorx",
    "is_connection_lost",
    "is_row_error",
    "job_identity",
    "mysql_type",
    "mysql_type_of_field",
    "mysql_url",
    "parse_text",
    "pick_driver",
    "query_failure",
    "sql_values",
    "tsv_text",
    "with_retries",
    "xa_recover",
]

log = logging.getLogger(__name__)

JDBC_DRIVERS.setdefault("mysql", "mysql+pymysql")
JDBC_DRIVERS.setdefault("mariadb", "mysql+pymysql")
DRIVER_PACKAGES.setdefault("connectorx", "connectorx")

SESSION_TIME_ZONE = "+00:00"
"""Every connection's time zone: TIMESTAMP values are read and written as UTC."""


def _setup_mysql(url: URL, kwargs: dict[str, Any], query_timeout: float | None) -> URL:
    """Engine settings: utf8mb4, UTC session, connect timeout, ``queryTimeOut`` as read timeout."""
    args = kwargs.setdefault("connect_args", {})
    args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    args.setdefault("charset", "utf8mb4")
    args.setdefault("init_command", f"SET time_zone = '{SESSION_TIME_ZONE}'")
    if query_timeout:
        args.setdefault("read_timeout", int(query_timeout))
    return url


DIALECT_SETUP.setdefault("mysql", _setup_mysql)
DIALECT_SETUP.setdefault("mariadb", _setup_mysql)


class MysqlConfigError(JobFileError, FatalError):
    """A parameter the server shows to be wrong (unknown table or column, a ``splitPk`` that is
    not indexed, a failing ``customSql``): named by its path like a job-file error, but found
    only by connecting, so the exit code is 1 (``syncx validate`` cannot know it); a restart
    cannot cure it, so it is never retried."""

    exit_code = 1


TRANSIENT = frozenset({1205, 1213})
"""Lock wait timeout, deadlock: the statement (or transaction) may succeed when run again."""


def query_failure(exc: BaseException, message: str) -> SyncxError:
    """The error a failed statement becomes: retriable when the server says it may succeed
    again (a lost connection, a deadlock, a lock wait timeout), else fatal."""
    code = errno(exc)
    if code in TRANSIENT or is_connection_lost(exc):
        return RetriableError(message)
    return FatalError(message)


# -- where to connect ---------------------------------------------------------------------------


_PORT_TEXT = r"^(\d{1,5}|\$\{[^}]+\})$"
"""A port as text: digits, or a ``${placeholder}`` (what an editor sees before it is filled)."""


class MysqlEndpoint(Params):
    """The plain form of a MySQL address, beside ChunJun's ``connection[].jdbcUrl``."""

    host: str | None = Field(
        default=None, description="Server host (instead of `connection` / `url`)."
    )
    port: (
        Annotated[int, Field(gt=0, lt=65536)] | Annotated[str, Field(pattern=_PORT_TEXT)] | None
    ) = Field(default=None, description="Server port (default 3306); a number or a ${...}.")
    database: str | None = Field(default=None, description="Database (with `host`).")

    @model_validator(mode="before")
    @classmethod
    def _host_port_database_as_url(cls, data: Any) -> Any:
        """``host``/``port``/``database`` become a ``url`` (the password stays a secret)."""
        if not isinstance(data, dict) or not data.get("host"):
            return data
        if data.get("url") or data.get("connection"):
            msg = "give either `host`/`port`/`database` or `connection` (jdbcUrl) / `url`"
            raise ValueError(msg)
        host = str(data["host"])
        port = data.get("port")
        if isinstance(port, str) and not port.strip().isdigit():
            msg = f"`port` must be a number, not '{port}'"
            raise ValueError(msg)
        database = data.get("database")
        netloc = f"[{host}]" if ":" in host else host
        if port not in (None, ""):
            netloc += f":{port}"
        path = f"/{quote(str(database), safe='')}" if database else ""
        return {**data, "url": f"mysql+pymysql://{netloc}{path}"}


def mysql_url(text: str) -> URL:
    """A MySQL/MariaDB address as a URL: ChunJun's ``jdbc:mysql://`` (or ``jdbc:mariadb://``)
    or a SQLAlchemy ``mysql[+driver]://`` URL; ``ValueError`` for any other database."""
    raw = text.strip()
    scheme = (raw[5:] if raw.lower().startswith("jdbc:") else raw).partition("://")[0]
    if scheme.lower().split("+")[0] not in ("mysql", "mariadb"):
        msg = "expected jdbc:mysql://host:port/database"
        raise ValueError(msg)
    return parse_url(raw)


# -- types --------------------------------------------------------------------------------------

Wire = Literal["text", "bit"]


@dataclass(frozen=True)
class MysqlType:
    """How one MySQL column is read and written: its Arrow type and its wire form.

    ``wire`` is ``text`` (the value's text, parsed with an Arrow cast) or ``bit`` (a BIT value:
    big-endian bytes). ``select`` says how the column is selected per driver family: text
    drivers select ``FLOAT`` as ``DOUBLE`` (MariaDB prints FLOAT with 6 digits); connectorx
    selects as text what it cannot hold exactly (``char``).
    """

    arrow: pa.DataType
    wire: Wire = "text"
    text_select: Literal["as-is", "double"] = "as-is"
    arrow_select: Literal["as-is", "char"] = "as-is"
    sql: str = ""
    """The MySQL type as written in DDL, for messages and docs."""


_INT_BITS = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 32, "INTEGER": 32, "INT": 32, "BIGINT": 64}


def _int_type(bits: int, unsigned: bool) -> pa.DataType:
    kinds = {
        8: (pa.int8(), pa.uint8()),
        16: (pa.int16(), pa.uint16()),
        32: (pa.int32(), pa.uint32()),
        64: (pa.int64(), pa.uint64()),
    }
    return kinds[bits][1 if unsigned else 0]


def _decimal_type(precision: int | None, scale: int | None, sql: str) -> MysqlType:
    precision = 10 if precision is None else precision
    scale = 0 if scale is None else scale
    arrow = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    exact_in_connectorx = precision <= 28 and scale <= 10
    return MysqlType(arrow, arrow_select="as-is" if exact_in_connectorx else "char", sql=sql)


def mysql_type(sql_type: TypeEngine[Any]) -> MysqlType:
    """The :class:`MysqlType` of a reflected column (SQLAlchemy's MySQL types)."""
    t = sql_type
    name = type(t).__name__.upper()
    if isinstance(t, mysql_types.BIT):
        length = t.length or 1
        return MysqlType(pa.bool_() if length == 1 else pa.uint64(), "bit", sql=f"BIT({length})")
    if isinstance(t, mysql_types.YEAR):
        return MysqlType(pa.int16(), sql="YEAR")
    if isinstance(t, sqltypes.Boolean):
        return MysqlType(pa.int8(), sql="BOOLEAN")
    if isinstance(t, sqltypes.Integer):
        bits = _INT_BITS.get(name, 64)
        unsigned = bool(getattr(t, "unsigned", False))
        return MysqlType(_int_type(bits, unsigned), sql=name + (" UNSIGNED" if unsigned else ""))
    if isinstance(t, sqltypes.Float):
        if name == "FLOAT":  # 4 bytes; FLOAT(p > 24) is reflected as DOUBLE
            return MysqlType(pa.float32(), text_select="double", sql="FLOAT")
        return MysqlType(pa.float64(), sql="DOUBLE")
    if isinstance(t, sqltypes.Numeric):
        return _decimal_type(t.precision, t.scale, f"DECIMAL({t.precision},{t.scale})")
    if isinstance(t, mysql_types.TIMESTAMP):
        return MysqlType(pa.timestamp("us", tz="UTC"), sql="TIMESTAMP")
    if isinstance(t, sqltypes.DateTime):
        return MysqlType(pa.timestamp("us"), sql="DATETIME")
    if isinstance(t, sqltypes.Date):
        return MysqlType(pa.date32(), sql="DATE")
    if isinstance(t, sqltypes.Time):
        return MysqlType(pa.duration("us"), arrow_select="char", sql="TIME")
    if isinstance(t, sqltypes._Binary | sqltypes.LargeBinary):
        return MysqlType(pa.binary(), sql=name)
    if isinstance(t, sqltypes.String | sqltypes.Enum | sqltypes.JSON):
        return MysqlType(pa.string(), sql=name)
    if isinstance(t, sqltypes.NullType):  # GEOMETRY and other types SQLAlchemy does not know
        return MysqlType(pa.binary(), sql="(unknown)")
    return MysqlType(pa.string(), sql=name)


# MySQL protocol field types (``include/mysql_com.h``); flags likewise.
_T_DECIMAL, _T_TINY, _T_SHORT, _T_LONG, _T_FLOAT, _T_DOUBLE = 0, 1, 2, 3, 4, 5
_T_NULL, _T_TIMESTAMP, _T_LONGLONG, _T_INT24, _T_DATE, _T_TIME = 6, 7, 8, 9, 10, 11
_T_DATETIME, _T_YEAR, _T_NEWDATE, _T_VARCHAR, _T_BIT = 12, 13, 14, 15, 16
_T_JSON, _T_NEWDECIMAL, _T_ENUM, _T_SET = 245, 246, 247, 248
_T_TINY_BLOB, _T_MEDIUM_BLOB, _T_LONG_BLOB, _T_BLOB = 249, 250, 251, 252
_T_VAR_STRING, _T_STRING, _T_GEOMETRY = 253, 254, 255
_FLAG_UNSIGNED = 32
_BINARY_CHARSET = 63


def mysql_type_of_field(
    type_code: int, length: int, scale: int, flags: int, charsetnr: int
) -> MysqlType:
    """The :class:`MysqlType` of a result column from its protocol metadata (``customSql``)."""
    unsigned = bool(flags & _FLAG_UNSIGNED)
    ints = {_T_TINY: 8, _T_SHORT: 16, _T_INT24: 32, _T_LONG: 32, _T_LONGLONG: 64}
    if type_code in ints:
        return MysqlType(_int_type(ints[type_code], unsigned), sql="integer")
    if type_code in (_T_DECIMAL, _T_NEWDECIMAL):
        precision = max(1, length - (1 if scale else 0) - (0 if unsigned else 1))
        return _decimal_type(min(precision, 65), scale, f"DECIMAL({precision},{scale})")
    if type_code == _T_FLOAT:
        return MysqlType(pa.float32(), text_select="double", sql="FLOAT")
    if type_code == _T_DOUBLE:
        return MysqlType(pa.float64(), sql="DOUBLE")
    if type_code == _T_TIMESTAMP:
        return MysqlType(pa.timestamp("us", tz="UTC"), sql="TIMESTAMP")
    if type_code == _T_DATETIME:
        return MysqlType(pa.timestamp("us"), sql="DATETIME")
    if type_code in (_T_DATE, _T_NEWDATE):
        return MysqlType(pa.date32(), sql="DATE")
    if type_code == _T_TIME:
        return MysqlType(pa.duration("us"), arrow_select="char", sql="TIME")
    if type_code == _T_YEAR:
        return MysqlType(pa.int16(), sql="YEAR")
    if type_code == _T_BIT:
        return MysqlType(pa.bool_() if length == 1 else pa.uint64(), "bit", sql=f"BIT({length})")
    if type_code == _T_GEOMETRY:
        return MysqlType(pa.binary(), sql="GEOMETRY")
    blobs = (_T_TINY_BLOB, _T_MEDIUM_BLOB, _T_LONG_BLOB, _T_BLOB, _T_VAR_STRING, _T_STRING)
    if type_code in (*blobs, _T_VARCHAR) and charsetnr == _BINARY_CHARSET:
        return MysqlType(pa.binary(), sql="BINARY")
    return MysqlType(pa.string(), sql="text")


def is_exact_family(declared: pa.DataType, actual: pa.DataType) -> bool:
    """Whether a ChunJun ``column[].type`` names the family of the column's own type (then the
    column's exact type is kept: ``decimal`` for DECIMAL(12,2), ``int`` for INT UNSIGNED)."""

    def family(t: pa.DataType) -> str:
        if pa.types.is_integer(t):
            return "int"
        if pa.types.is_decimal(t):
            return "decimal"
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "string"
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "binary"
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return "datetime"
        if pa.types.is_time(t) or pa.types.is_duration(t):
            return "time"
        return str(t)

    if pa.types.is_date(declared) != pa.types.is_date(actual):
        return False
    return family(declared) == family(actual)


# -- decoding -----------------------------------------------------------------------------------

_ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    ValueError,
    TypeError,
    OverflowError,
)


def _text_array(values: Sequence[Any]) -> pa.Array:
    """Wire values (``str``, ``bytes`` or ``None``) as one Arrow string array."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bytes | bytearray | memoryview):
        return pa.array(values, pa.binary()).cast(pa.string())
    return pa.array(values, pa.string())


def parse_text(text: pa.Array, target: pa.DataType) -> pa.Array:
    """A string array parsed into ``target`` (raises on the first value that does not parse)."""
    if pa.types.is_string(target):
        return text
    if pa.types.is_binary(target):
        return text.cast(pa.binary())
    if pa.types.is_timestamp(target):
        naive = pc.cast(text, pa.timestamp(target.unit))
        return naive if target.tz is None else naive.cast(target)
    if pa.types.is_time(target):
        stamped = pc.binary_join_element_wise("1970-01-01 ", text, "")
        return pc.cast(stamped, pa.timestamp("us")).cast(target)
    if pa.types.is_duration(target):
        return _parse_duration(text).cast(target)
    if pa.types.is_float32(target):
        return pc.cast(pc.cast(text, pa.float64()), target, safe=False)
    return pc.cast(text, target)


_TIME_TEXT = r"^(?P<sign>-?)(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?$"


def _parse_duration(text: pa.Array) -> pa.Array:
    """MySQL ``TIME`` text (``-838:59:59.000000`` … ``838:59:59``) as ``duration('us')``."""
    parts = pc.extract_regex(text, _TIME_TEXT)
    if parts.null_count != text.null_count:
        bad = pc.and_(pc.is_null(parts), pc.is_valid(text))
        first = text.filter(bad)[0].as_py()
        msg = f"'{first}' is not a TIME value"
        raise pa.ArrowInvalid(msg)
    hours, minutes, seconds = (
        pc.cast(pc.struct_field(parts, name), pa.int64()) for name in ("h", "m", "s")
    )
    fraction = pc.cast(pc.utf8_rpad(pc.struct_field(parts, "f"), 6, "0"), pa.int64())
    micros = pc.add(
        pc.multiply(
            pc.add(pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)), seconds), 1_000_000
        ),
        fraction,
    )
    negative = pc.equal(pc.struct_field(parts, "sign"), "-")
    signed = pc.if_else(negative, pc.negate(micros), micros)
    return pc.if_else(pc.is_valid(text), signed, pa.scalar(None, pa.int64())).cast(
        pa.duration("us")
    )


def _bit_array(values: Sequence[Any], target: pa.DataType) -> pa.Array:
    numbers = [None if v is None else int.from_bytes(bytes(v), "big") for v in values]
    if pa.types.is_boolean(target):
        return pa.array([None if n is None else n != 0 for n in numbers], pa.bool_())
    return pa.array(numbers, target)


def _decode_values(values: Sequence[Any], mt: MysqlType) -> pa.Array:
    if mt.wire == "bit":
        return _bit_array(values, mt.arrow)
    if pa.types.is_binary(mt.arrow):
        return pa.array(
            [v.encode("utf-8") if isinstance(v, str) else v for v in values], pa.binary()
        )
    return parse_text(_text_array(values), mt.arrow)


def decode_text(values: Sequence[Any], mt: MysqlType, name: str) -> tuple[pa.Array, dict[int, str]]:
    """A column of wire values as ``mt.arrow``; values that do not convert are nulls in the
    result and come back as errors by row number (the rows become dirty records)."""
    try:
        return _decode_values(values, mt), {}
    except _ARROW_ERRORS:
        pass
    errors: dict[int, str] = {}
    cleaned: list[Any] = []
    for index, value in enumerate(values):
        if value is None:
            cleaned.append(None)
            continue
        try:
            _decode_values([value], mt)
        except _ARROW_ERRORS as exc:
            shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            errors[index] = f"{name}: cannot read {shown!r} as {mt.arrow}: {exc}"
            cleaned.append(None)
        else:
            cleaned.append(value)
    return _decode_values(cleaned, mt), errors


def from_connectorx(
    array: pa.Array | pa.ChunkedArray, mt: MysqlType, name: str
) -> tuple[pa.Array, dict[int, str]]:
    """A connectorx column as ``mt.arrow`` (the same values the text drivers give)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if mt.wire == "bit":
        return _bit_array(array.to_pylist(), mt.arrow), {}
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    elif pa.types.is_large_binary(array.type):
        array = array.cast(pa.binary())
    if array.type == mt.arrow:
        return array, {}
    if pa.types.is_string(array.type) and not pa.types.is_string(mt.arrow):
        try:
            return parse_text(array, mt.arrow), {}
        except _ARROW_ERRORS:
            return decode_text(array.to_pylist(), mt, name)
    if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(mt.arrow):
        return array.cast(pa.timestamp(mt.arrow.unit)).cast(mt.arrow), {}
    return pc.cast(array, mt.arrow), {}


# -- drivers ------------------------------------------------------------------------------------

Driver = Literal["connectorx", "mysqlclient", "pymysql"]
DRIVERS: tuple[Driver, ...] = ("connectorx", "mysqlclient", "pymysql")
_MODULES: dict[Driver, str] = {
    "connectorx": "connectorx",
    "mysqlclient": "MySQLdb",
    "pymysql": "pymysql",
}


def _installed(driver: Driver) -> bool:
    try:
        __import__(_MODULES[driver])
    except ImportError:
        return False
    return True


def pick_driver(wanted: str, plugin: str) -> Driver:
    """``auto``: the fastest installed driver (connectorx, mysqlclient, pymysql); else the one
    named, or an error saying how to install it."""
    if wanted == "auto":
        for driver in DRIVERS:
            if _installed(driver):
                return driver
        require("pymysql", "mysql", plugin)
    chosen: Driver = wanted  # type: ignore[assignment]
    if not _installed(chosen):
        package = {"connectorx": "connectorx", "mysqlclient": "mysqlclient"}.get(chosen, "PyMySQL")
        msg = (
            f"{plugin}: driver '{chosen}' needs the Python package '{package}', which is not "
            f"installed: pip install '{package}'"
            + (" (it builds against libmariadb-dev)" if chosen == "mysqlclient" else "")
        )
        raise JobFileError(msg)
    return chosen


def _raw_conversions() -> dict[Any, Any]:
    """pymysql's encoders without its decoders: values arrive as the server's text."""
    import pymysql.converters  # noqa: PLC0415 - optional driver

    return {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


def connection_settings(url: URL, *, read_timeout: float | None = None) -> dict[str, Any]:
    """The DB-API ``connect`` arguments for ``url``: utf8mb4, syncx's connect timeout and
    ``read_timeout`` (pymysql's names, which mysqlclient takes too). Also what
    pymysqlreplication's ``BinLogStreamReader`` takes as ``connection_settings``; the session
    time zone is set by :func:`connect`."""
    settings: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 3306,
        "user": url.username or "",
        "password": str(url.password) if url.password is not None else "",
        "charset": "utf8mb4",
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
    }
    if url.database:
        settings["database"] = url.database
    if read_timeout:
        settings["read_timeout"] = int(read_timeout)
    return settings


def connect(
    url: URL,
    *,
    driver: Driver = "pymysql",
    raw: bool = False,
    autocommit: bool = True,
    local_infile: bool = False,
    read_timeout: float | None = None,
    init: Sequence[str] = (),
) -> Any:
    """A DB-API connection to ``url`` with syncx's session settings (utf8mb4, UTC).

    ``raw``: values come back as the server's text (``str``/``bytes``), not as Python objects.
    Errors are the driver's (callers classify them with :func:`errno`).
    """
    commands = [f"SET time_zone = '{SESSION_TIME_ZONE}'", *init]
    kwargs = connection_settings(url, read_timeout=read_timeout)
    kwargs["autocommit"] = autocommit
    if driver == "mysqlclient":
        import MySQLdb  # noqa: PLC0415 - optional driver

        if raw:
            kwargs["conv"] = {}
        if local_infile:
            kwargs["local_infile"] = 1
        conn = MySQLdb.connect(**kwargs)
    else:
        import pymysql  # noqa: PLC0415 - optional driver

        if raw:
            kwargs["conv"] = _raw_conversions()
        kwargs["local_infile"] = local_infile
        conn = pymysql.connect(**kwargs)
    cursor = conn.cursor()
    try:
        for command in commands:
            cursor.execute(command)
    finally:
        cursor.close()
    return conn


def connectorx_url(url: URL) -> str:
    """The ``mysql://user:password@host:port/db`` connectorx wants."""
    user = quote(url.username or "", safe="")
    password = quote(str(url.password), safe="") if url.password else ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{url.port}" if url.port else ":3306"
    database = f"/{quote(url.database, safe='')}" if url.database else ""
    return f"mysql://{auth}{url.host or 'localhost'}{port}{database}"


_ARENAS_LIMITED = False
_M_ARENA_MAX = -8
_LIBC: Any = None


def _libc() -> Any:
    """glibc, or None elsewhere (musl, macOS)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform == "linux" else False
        except OSError:
            _LIBC = False
    return _LIBC or None


def trim_malloc() -> None:
    """Give memory that C/Rust code freed back to the system (glibc ``malloc_trim``): what
    connectorx allocated for a page is freed to glibc, which would otherwise keep it mapped."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process (once; unless ``MALLOC_ARENA_MAX`` is set).

    connectorx starts fresh worker threads for every query, and glibc gives each new thread its
    own arena (up to 8 per core) whose freed pages stay mapped: on the 2M-row benchmark that is
    ~40 MB of peak RSS for nothing. Two arenas cost no measurable time.
    """
    global _ARENAS_LIMITED
    if _ARENAS_LIMITED or os.environ.get("MALLOC_ARENA_MAX") or sys.platform != "linux":
        return
    _ARENAS_LIMITED = True
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):  # not glibc: nothing to do
            libc.mallopt(_M_ARENA_MAX, arenas)


CONNECTORX_BATCH_ROWS = 16384
"""Rows converted at a time from a connectorx page (then cut into ``fetchSize`` batches without
copying)."""


class DriverCannotRead(Exception):
    """connectorx stopped on a value it cannot hold (a zero date): read with a text driver."""


def literal_sql(sql: str, params: dict[str, Any]) -> str:
    """A pyformat statement with its parameters inlined as MySQL literals (pymysql's escaping)."""
    import pymysql.converters  # noqa: PLC0415 - optional driver

    def literal(value: Any) -> str:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        if isinstance(value, bytes | bytearray):
            return "X'" + bytes(value).hex() + "'"
        if isinstance(value, decimal.Decimal):
            return f"'{value}'"
        return str(pymysql.converters.escape_item(value, "utf8mb4"))

    return sql % {key: literal(value) for key, value in params.items()}


@dataclass
class Fetcher:
    """Runs one query with one driver and yields its rows as Arrow record batches.

    ``columns`` are the selected columns' :class:`MysqlType` s and names, in select order. Each
    yielded item is ``(batch, errors)``: the batch holds every row (a value that did not convert
    is null) and ``errors`` maps a row number to why it is dirty.
    """

    url: URL
    driver: Driver
    read_timeout: float | None = None
    _conn: Any = None
    connectorx_rows: ClassVar[int] = 0
    """Rows read through connectorx in this process (tests check that the fast path ran)."""

    def stream(
        self,
        sql: str,
        params: dict[str, Any],
        columns: Sequence[tuple[str, MysqlType]],
        batch_rows: int,
    ) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
        """Run ``sql`` and yield ``(batch, errors)`` of at most ``batch_rows`` rows."""
        text = literal_sql(sql, params)
        if self.driver == "connectorx":
            yield from self._connectorx(text, columns, batch_rows)
        else:
            yield from self._text(text, columns, batch_rows)

    def close(self) -> None:
        """Close the text driver's connection."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _text(
        self, sql: str, columns: Sequence[tuple[str, MysqlType]], batch_rows: int
    ) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
        if self._conn is None:
            self._conn = connect(
                self.url, driver=self.driver, raw=True, read_timeout=self.read_timeout
            )
        conn = self._conn
        if self.driver == "mysqlclient":
            import MySQLdb.cursors  # noqa: PLC0415 - optional driver

            cursor = conn.cursor(MySQLdb.cursors.SSCursor)
        else:
            import pymysql.cursors  # noqa: PLC0415 - optional driver

            cursor = conn.cursor(pymysql.cursors.SSCursor)
        names = [name for name, _ in columns]
        try:
            cursor.execute(sql)
            while True:
                rows = cursor.fetchmany(batch_rows)
                if not rows:
                    break
                arrays = []
                errors: dict[int, str] = {}
                for position, values in enumerate(zip(*rows, strict=True)):
                    name, mt = columns[position]
                    array, bad = decode_text(values, mt, name)
                    arrays.append(array)
                    for row, error in bad.items():
                        errors.setdefault(row, error)
                yield pa.RecordBatch.from_arrays(arrays, names=names), errors
        except BaseException:
            self.close()  # an unbuffered result left half read makes the connection unusable
            raise
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def _connectorx(
        self, sql: str, columns: Sequence[tuple[str, MysqlType]], batch_rows: int
    ) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
        import connectorx  # noqa: PLC0415 - optional driver

        limit_malloc_arenas()
        names = [name for name, _ in columns]
        try:
            # "arrow" rather than "arrow_stream": connectorx releases the GIL while it reads a
            # whole page, but holds it while a stream waits for its next batch (measured: a
            # third of the run's GIL time), which stalls every other thread of the job
            page = connectorx.read_sql(
                connectorx_url(self.url),
                sql,
                return_type="arrow",
                pre_execution_query=[f"SET time_zone = '{SESSION_TIME_ZONE}'"],
            )
            parts = page.to_batches(max_chunksize=max(batch_rows, CONNECTORX_BATCH_ROWS))
            for raw in parts:
                if not raw.num_rows:
                    continue
                arrays = []
                errors: dict[int, str] = {}
                for position in range(raw.num_columns):
                    name, mt = columns[position]
                    array, bad = from_connectorx(raw.column(position), mt, name)
                    arrays.append(array)
                    for row, error in bad.items():
                        errors.setdefault(row, error)
                Fetcher.connectorx_rows += raw.num_rows
                whole = pa.RecordBatch.from_arrays(arrays, names=names)
                for start in range(0, whole.num_rows, batch_rows):
                    part = {
                        r - start: e for r, e in errors.items() if start <= r < start + batch_rows
                    }
                    yield whole.slice(start, batch_rows), part
            del page
            trim_malloc()
        except BaseException as exc:
            if type(exc).__name__ == "PanicException":
                raise DriverCannotRead(str(exc).splitlines()[0][:300]) from exc
            raise


# -- errors -------------------------------------------------------------------------------------

CONNECTION_LOST = frozenset(
    {1040, 1053, 1152, 1158, 1159, 1160, 1161, 1317, 1927, 2002, 2003, 2006, 2013, 2055}
)
"""Server gone, connection killed or refused, too many connections, server shutting down."""

ROW_ERRORS = frozenset(
    {
        1048,  # column cannot be null
        1062,  # duplicate entry
        1263,  # NULL supplied to NOT NULL column
        1264,  # out of range
        1265,  # data truncated
        1292,  # incorrect datetime/number value
        1364,  # field has no default value
        1366,  # incorrect string/integer value
        1367,  # illegal value
        1406,  # data too long
        1411,  # incorrect value for function
        1416,  # cannot get geometry object
        1451,  # foreign key: parent row in use
        1452,  # foreign key: no parent row
        1586,  # duplicate entry for key
        1690,  # value out of range
        3819,  # check constraint violated (MySQL)
        4025,  # CONSTRAINT failed (MariaDB)
    }
)
"""Errors that reject one row: the row becomes dirty data, the rest of its batch is written."""


def errno(exc: BaseException) -> int | None:
    """The MySQL error number of a driver (or SQLAlchemy) exception, if it has one."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    args = getattr(source, "args", ())
    if args and isinstance(args[0], int):
        return int(args[0])
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """A lost or refused connection (worth a retry), as opposed to an error of the statement."""
    if isinstance(exc, ConnectionError | TimeoutError | BrokenPipeError):
        return True
    code = errno(exc)
    if code in CONNECTION_LOST:
        return True
    text = str(exc).lower()
    if type(exc).__name__ == "InterfaceError":  # pymysql: the connection is already closed
        return True
    return type(exc).__name__ == "RuntimeError" and (
        "timed out waiting for connection" in text or ("connection" in text and "lost" in text)
    )


def is_row_error(exc: BaseException) -> bool:
    """An error caused by the row's data (dirty data), not by the connection or the SQL."""
    return errno(exc) in ROW_ERRORS


def dirty_kind(exc: BaseException) -> Literal["duplicate", "null", "other"]:
    """The dirty-record kind of a rejected row."""
    code = errno(exc)
    if code in (1062, 1586):
        return "duplicate"
    if code in (1048, 1263, 1364):
        return "null"
    return "other"


def error_text(exc: BaseException, secrets: Sequence[str | None] = ()) -> str:
    """The server's message of ``exc`` on one line, without secrets."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    args: tuple[Any, ...] = tuple(getattr(source, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        text = f"({args[0]}) {args[1]}"
    else:
        text = str(source) or type(source).__name__
    return scrub(" ".join(text.split()), secrets)


RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between attempts at a statement whose connection was lost."""


def with_retries(
    action: Callable[[], Any],
    *,
    what: str,
    where: URL,
    secrets: Sequence[str | None],
    stopping: threading.Event | None = None,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """Run ``action``; while the connection is lost, retry with backoff (``on_retry`` resets
    the connection first); then give up with :class:`RetriableError` so that
    ``setting.restart`` restarts the job from its last checkpoint."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            return action()
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            detail = error_text(exc, secrets)
            if delay is None or (stopping is not None and stopping.is_set()):
                msg = (
                    f"lost the connection to {safe_url(where)} while {what} "
                    f"({attempt + 1} attempts): {detail}"
                )
                raise RetriableError(msg) from exc
            log.warning(
                "connection to %s lost while %s (%s); retrying in %ss",
                safe_url(where),
                what,
                detail,
                delay,
            )
            if on_retry is not None:
                with contextlib.suppress(Exception):
                    on_retry()
            if stopping is not None:
                stopping.wait(delay)
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# -- writing: Arrow → LOAD DATA text / SQL literals ---------------------------------------------

Form = Literal["text", "hex", "plain", "quoted", "bit"]
"""How a column is written: ``text`` (escaped string), ``hex`` (binary, as hex digits),
``plain`` (numbers), ``quoted`` (decimals, floats, dates and times: their text), ``bit``
(an unsigned number loaded into a BIT column)."""


def column_form(field: pa.Field, bit: bool) -> Form:
    """How a target column of Arrow type ``field.type`` is written."""
    t = field.type
    if bit:
        return "bit"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "hex"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "plain"
    return "quoted"


_HEX_DIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _hex(array: pa.Array) -> pa.Array:
    """A binary array as upper-case hex digits (a string array), nulls kept."""
    if not pa.types.is_binary(array.type):
        array = array.cast(pa.binary())
    count = len(array)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=count + 1, offset=array.offset * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)[start:end]
        if buffers[2] is not None and end > start
        else np.empty(0, dtype=np.uint8)
    )
    digits = np.empty(data.size * 2, dtype=np.uint8)
    digits[0::2] = _HEX_DIGITS[data >> 4]
    digits[1::2] = _HEX_DIGITS[data & 15]
    new_offsets = ((offsets - start) * 2).astype(np.int32)
    hexed = pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(new_offsets), pa.py_buffer(digits)]
    )
    if array.null_count:
        hexed = pc.if_else(array.is_null(), pa.scalar(None, pa.string()), hexed)
    return hexed


def _as_text(array: pa.Array) -> pa.Array:
    """Numbers, decimals, dates and times as MySQL reads them (UTC for zoned timestamps)."""
    t = array.type
    if pa.types.is_boolean(t):
        array = array.cast(pa.int8())
    elif pa.types.is_timestamp(t) and t.tz is not None:
        array = array.cast(pa.timestamp(t.unit))
    elif pa.types.is_duration(t):
        return time_text(array)
    return array.cast(pa.string())


_TSV_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\x00", "\\0"))
_SQL_ESCAPES = (
    ("\\", "\\\\"),
    ("'", "\\'"),
    ("\x00", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\x1a", "\\Z"),
)


def _escape(array: pa.Array, escapes: Sequence[tuple[str, str]]) -> pa.Array:
    pattern = "[" + "".join(re.escape(c) for c, _ in escapes) + "]"
    if not pc.any(pc.match_substring_regex(array, pattern)).as_py():
        return array
    for char, replacement in escapes:
        array = pc.replace_substring(array, char, replacement)
    return array


def _column_text(array: pa.Array, form: Form, *, sql: bool) -> pa.Array:
    """One column as text for ``LOAD DATA`` (``sql=False``) or a SQL ``VALUES`` list."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if form == "hex":
        text = _hex(array)
        if sql:
            text = pc.binary_join_element_wise("X'", text, "'", "")
    elif form == "text":
        text = array.cast(pa.string())
        text = _escape(text, _SQL_ESCAPES if sql else _TSV_ESCAPES)
        if sql:
            text = pc.binary_join_element_wise("'", text, "'", "")
    else:
        text = _as_text(array)
        if sql and form == "quoted":
            text = pc.binary_join_element_wise("'", text, "'", "")
    null = "NULL" if sql else "\\N"
    return pc.fill_null(text, null) if text.null_count else text


def tsv_text(batch: pa.RecordBatch, forms: Sequence[Form]) -> pa.Buffer:
    """``batch`` as ``LOAD DATA`` input: fields by tab, rows by newline, ``\\`` escapes, ``\\N``
    for NULL, binary columns as hex (loaded with ``UNHEX``). One buffer, no per-row Python."""
    columns = [_column_text(batch.column(i), form, sql=False) for i, form in enumerate(forms)]
    rows = pc.binary_join_element_wise(*columns, "\t") if len(columns) > 1 else columns[0]
    lines = pc.binary_join_element_wise(rows, "", "\n")
    return _data(lines)


def sql_values(batch: pa.RecordBatch, forms: Sequence[Form]) -> list[bytes]:
    """Each row of ``batch`` as a SQL row constructor ``(v1,v2,...)`` (UTF-8 bytes)."""
    columns = [_column_text(batch.column(i), form, sql=True) for i, form in enumerate(forms)]
    inner = pc.binary_join_element_wise(*columns, ",") if len(columns) > 1 else columns[0]
    rows = pc.binary_join_element_wise("(", inner, ")", "")
    return [value.encode("utf-8") for value in rows.to_pylist()]


def _data(array: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array without nulls (its data buffer's used part)."""
    count = len(array)
    if count == 0:
        return pa.py_buffer(b"")
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=count + 1, offset=array.offset * 4)
    return buffers[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


# -- XA -----------------------------------------------------------------------------------------

XA_FORMAT_ID = 0x53594E43
"""``formatID`` of syncx's XA transactions (``SYNC``)."""
_XID_TEXT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def job_identity(job_name: str, state_dir: Path) -> str:
    """12 hex digits naming a job and its state folder (two jobs of one name never collide)."""
    seed = f"{job_name}\0{state_dir.resolve()}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


@dataclass(frozen=True)
class Xid:
    """An XA transaction id: ``gtrid`` = ``syncx-<job identity>-<run>``, ``bqual`` =
    ``<subtask>-<attempt token>-<sequence>`` (both ASCII, within MySQL's 64-byte limits)."""

    gtrid: str
    bqual: str
    format_id: int = XA_FORMAT_ID

    def __post_init__(self) -> None:
        for part in (self.gtrid, self.bqual):
            if not _XID_TEXT.match(part):
                msg = f"not a valid XA id part: {part!r}"
                raise ValueError(msg)

    def sql(self) -> str:
        """The xid as XA statements take it."""
        return f"'{self.gtrid}','{self.bqual}',{self.format_id}"

    def to_json(self) -> list[Any]:
        """The form stored in a writer handle."""
        return [self.format_id, self.gtrid, self.bqual]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> Xid:
        """Rebuild an xid stored by :meth:`to_json`."""
        return cls(gtrid=str(raw[1]), bqual=str(raw[2]), format_id=int(raw[0]))

    def __str__(self) -> str:
        return f"{self.gtrid}/{self.bqual}"


def xa_recover(cursor: Any) -> list[Xid]:
    """Every prepared XA transaction on the server that syncx started (``XA RECOVER``)."""
    cursor.execute("XA RECOVER")
    found = []
    for format_id, gtrid_length, bqual_length, data in cursor.fetchall():
        if int(format_id) != XA_FORMAT_ID:
            continue
        raw = data if isinstance(data, bytes | bytearray) else str(data).encode("latin-1")
        gtrid = bytes(raw[: int(gtrid_length)]).decode("ascii", "replace")
        bqual = bytes(raw[int(gtrid_length) : int(gtrid_length) + int(bqual_length)]).decode(
            "ascii", "replace"
        )
        with contextlib.suppress(ValueError):
            found.append(Xid(gtrid, bqual, int(format_id)))
    return found


# -- misc ---------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (always quoted)."""
    return "`" + name.replace("`", "``") + "`"


def python_value(array: pa.Array, index: int) -> Any:
    """One value of an Arrow array as the Python value a query binds (UTC-naive datetimes)."""
    value = array[index].as_py()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def bad_values(errors: dict[int, str], names: Sequence[str]) -> list[BadValue]:
    """Decoding errors as :class:`libs.sql.BadValue` s."""
    out = []
    for row, error in sorted(errors.items()):
        field = error.split(":", 1)[0]
        out.append(BadValue(row, field if field in names else "", error))
    return out


def mysql_sa_type(mt: MysqlType) -> TypeEngine[Any]:
    """A SQLAlchemy type for expressions over a column of ``mt`` (ORDER BY, comparisons)."""
    t = mt.arrow
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_decimal(t):
        return sa.Numeric()
    if pa.types.is_floating(t):
        return sa.Float()
    if pa.types.is_timestamp(t):
        return sa.DateTime()
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    if pa.types.is_binary(t):
        return sa.LargeBinary()
    return sa.String()
