"""Where and how to connect to MySQL/MariaDB: endpoints, jdbc URLs, sessions, errors and retries.

Every connection uses ``utf8mb4`` and the session time zone ``+00:00``, so ``TIMESTAMP`` values
travel as UTC. MySQL error codes are sorted into lost connections (retried, then
:class:`~sync.errors.RetriableError`), rejected rows (dirty records) and the rest.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy.engine import URL

from libs.sql import (
    DEFAULT_CONNECT_TIMEOUT,
    KEEPALIVE,
    SESSION_TIME_ZONE,
    parse_url,
    safe_url,
    scrub,
    strip_password,
)
from sync.errors import FatalError, JobFileError, RetriableError, SyncxError
from sync.model import Params
from sync.registry import require

if TYPE_CHECKING:
    from libs.mysql.stall import StallWatch

log = logging.getLogger(__name__)

CR_SERVER_LOST = 2013
"""The client's "lost connection to MySQL server during query"."""


class MysqlConfigError(JobFileError, FatalError):
    """A parameter the server shows to be wrong (unknown table or column, a ``splitPk`` that is
    not indexed, a failing ``customSql``): named by its path like a job-file error, but found
    only by connecting, so the exit code is 1 (``syncx validate`` cannot know it); a restart
    cannot cure it, so it is never retried."""

    exit_code = 1


DEFAULT_READ_TIMEOUT = 300.0
"""Seconds a reading connection waits for the server's next bytes before it counts as lost.

A stalled network (a half-open connection: a NAT or firewall that dropped the flow, a peer that
vanished without a RST) sends nothing and closes nothing: without a read timeout a reader would
wait for ever. Five minutes is far beyond what a keyset page or a heartbeat-carrying binlog
stream takes, and short enough for a restart to come in good time."""


class ReadTimedOut(TimeoutError):
    """The server sent nothing within the read timeout: the connection stalled (a lost
    connection, retried as one)."""


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
        if not isinstance(data, dict) or not data.get("host") or "url" not in cls.model_fields:
            return data  # a model without `url` (MysqlServer) keeps `host` as it is
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


class MysqlServer(MysqlEndpoint):
    """One MySQL server and who logs in to it, in ChunJun's spellings: ``jdbcUrl`` (a string or a
    one-element list; a password in it moves into the ``password`` secret) and/or ``host`` /
    ``port`` (``host`` wins over the jdbcUrl's host), ``username``, ``password``."""

    host: str | None = Field(
        default=None, description="Server host (beside or instead of `jdbcUrl`)."
    )
    jdbc_url: str | None = Field(
        default=None,
        description="jdbc:mysql://host:port/db: the server and the default database.",
    )
    username: str | None = Field(default=None, description="User to log in as.")
    password: SecretStr | None = Field(default=None, description="Secret.")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_jdbc_url(cls, data: Any) -> Any:
        """A password in ``jdbcUrl`` moves into the ``password`` secret."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("jdbcUrl", "jdbc_url"):
            raw = data.get(key)
            if isinstance(raw, list):  # ChunJun sometimes writes a one-element list
                raw = raw[0] if raw else None
                data[key] = raw
            if isinstance(raw, str):
                cleaned, secret = strip_password(raw)
                data[key] = cleaned if cleaned.strip() else None
                if secret and not data.get("password"):
                    data["password"] = secret
        if isinstance(data.get("host"), str) and not data["host"].strip():
            data["host"] = None
        return data

    @field_validator("jdbc_url")
    @classmethod
    def _jdbc_is_mysql(cls, value: str | None) -> str | None:
        if value is not None:
            mysql_url(value)
        return value

    @model_validator(mode="after")
    def _server_given(self) -> MysqlServer:
        if self.host is None and self.jdbc_url is None:
            msg = "give `jdbcUrl` or `host` (and `port`)"
            raise ValueError(msg)
        return self

    def server_url(self) -> URL:
        """Where to log in (user ``root`` and port 3306 unless given), without a database."""
        jdbc = mysql_url(self.jdbc_url) if self.jdbc_url else None
        port = self.port if self.port not in (None, "") else (jdbc.port if jdbc else None)
        return URL.create(
            "mysql+pymysql",
            username=self.username or (jdbc.username if jdbc else None) or "root",
            password=self.password.get_secret_value() if self.password else None,
            host=self.host or (jdbc.host if jdbc else None) or "localhost",
            port=int(port) if port is not None else 3306,
        )

    def default_database(self) -> str | None:
        """``database``, else the jdbcUrl's database."""
        jdbc = mysql_url(self.jdbc_url) if self.jdbc_url else None
        return self.database or (jdbc.database if jdbc else None)


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


def keepalive(sock: socket.socket) -> None:
    """Turn on TCP :data:`~libs.sql.KEEPALIVE` (the options the platform has)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in zip(
        ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE, strict=True
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def unverified_tls() -> ssl.SSLContext:
    """The TLS context of pymysql's ``preferred`` mode (no certificate or host name checked),
    as pymysql builds it but without loading CA certificates it would never use."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def pymysql_connection() -> type:
    """pymysql's ``Connection`` with three changes.

    - The TLS context of its default mode (``preferred``: TLS when the server offers it,
      certificates not verified) is built once per process rather than once per connection, and
      without the system's CA certificates, which an unverified context never reads: loading
      them cost ~25 ms of CPU (a connection, before; a process, after the first change), and
      exactly-once ``mysqlwriter`` opens a connection per checkpoint and subtask.
    - Opening a connection — the handshake and session setup too, not only the TCP connect as in
      pymysql — takes at most its connect timeout: a stall there fails like a lost connection.
      Sockets get :func:`keepalive`.
    - A write on a connection already closed is a lost connection (error 2013): pymysql's
      ``LOAD DATA LOCAL`` writes its end packet after a failed send, and the ``AttributeError``
      of that write on the closed socket hid the lost connection.
    """
    import pymysql  # noqa: PLC0415 - optional driver

    base: Any = pymysql.connections.Connection

    class Connection(base):  # type: ignore[misc,valid-type]
        preferred: Any = None
        """The context of the default mode, built by the first connection."""
        _read_timeout: float | None

        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp != {}:
                return super()._create_ssl_ctx(sslp)
            if Connection.preferred is None:  # a race builds two: harmless
                Connection.preferred = unverified_tls()
            return Connection.preferred

        def connect(self, sock: Any = None) -> None:
            steady = self._read_timeout
            self._read_timeout = self.connect_timeout
            try:
                super().connect(sock)
            finally:
                self._read_timeout = steady  # the next read sets it on the socket
            if not self.unix_socket:
                keepalive(self._sock)

        def _write_bytes(self, data: bytes) -> None:
            if self._sock is None:
                raise pymysql.err.OperationalError(
                    CR_SERVER_LOST, "Lost connection to MySQL server during query"
                )
            super()._write_bytes(data)

    return Connection


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
        settings["read_timeout"] = max(1, math.ceil(read_timeout))  # mysqlclient: whole seconds
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
    watch: StallWatch | None = None,
) -> Any:
    """A DB-API connection to ``url`` with syncx's session settings (utf8mb4, UTC).

    ``raw``: values come back as the server's text (``str``/``bytes``), not as Python objects.
    ``watch``: a pymysql connection that ``watch`` checks for stalls (instead of a read timeout).
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
        if raw:
            kwargs["conv"] = _raw_conversions()
        kwargs["local_infile"] = local_infile
        conn = pymysql_connection()(**kwargs) if watch is None else watch.connect(**kwargs)
    cursor = conn.cursor()
    try:
        for command in commands:
            cursor.execute(command)
    finally:
        cursor.close()
    return conn


def connectorx_url(url: URL) -> str:
    """The ``mysql://user:password@host:port/db`` connectorx wants.

    ``prefer_socket=false``: connectorx's driver (the ``mysql`` crate) otherwise asks a server
    reached on 127.0.0.1 for its ``@@socket`` and reconnects through that Unix socket, bypassing
    the address the job names: through an SSH tunnel or a local proxy it would read from
    whatever local server owns that socket path. ``tcp_keepalive_time_ms``: the kernel probes an
    idle connection after a minute, so one whose peer vanished is closed in the end (see
    :class:`~libs.mysql.fetch.Fetcher` for the read timeout).
    """
    user = quote(url.username or "", safe="")
    password = quote(str(url.password), safe="") if url.password else ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{url.port}" if url.port else ":3306"
    database = f"/{quote(url.database, safe='')}" if url.database else ""
    options = "?prefer_socket=false&tcp_keepalive_time_ms=60000"
    return f"mysql://{auth}{url.host or 'localhost'}{port}{database}{options}"


def where(url: URL) -> str:
    """``host:port`` of ``url``, for messages."""
    return f"{url.host or 'localhost'}:{url.port or 3306}"


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


ACCESS_DENIED: dict[int, str] = {
    1044: "access to the database is denied",
    1045: "access is denied (wrong user or password; on a replication connection also a "
    "missing REPLICATION SLAVE)",
    1142: "a table privilege is missing",
    1227: "a global privilege is missing (REPLICATION CLIENT / BINLOG MONITOR, SUPER)",
    1698: "access is denied (the user's authentication plugin refused the login)",
}
"""Refused logins and missing privileges: a restart cannot cure them, so they are never retried."""


def access_denied(exc: BaseException) -> str | None:
    """What a refused login or a missing privilege means (None for any other error)."""
    code = errno(exc)
    return ACCESS_DENIED.get(code) if code is not None else None


def connect_failure(
    exc: BaseException,
    where: str,
    user: str | None,
    *,
    param_path: str,
    secrets: Sequence[str | None],
) -> SyncxError:
    """The error a failed connect becomes: a refused login stops the job (naming the parameter
    path, the server and the user), anything else is retriable."""
    detail = error_text(exc, secrets)
    if access_denied(exc) is not None:
        msg = f"{param_path}: cannot log in to {where} as '{user}': {detail}"
        return FatalError(msg)
    return RetriableError(f"cannot connect to {where}: {detail}")


_CONNECTORX_CODE = re.compile(r"MySqlError \{ ERROR (\d+) ")
"""connectorx's text of a server error: ``MySqlError { ERROR 1317 (70100): ... }``."""
_CONNECTORX_LOST = re.compile(
    r"timed out waiting for connection|io ?error|os error \d+|bytes remaining on stream"
    r"|connection (?:was )?(?:lost|reset|refused|aborted|closed)|broken pipe|unexpected eof",
    re.IGNORECASE,
)
"""connectorx's texts of a broken connection (it raises a plain ``RuntimeError``):
``CodecError { IO error: `Connection reset by peer (os error 104)' }``, ``CodecError { IO error:
`bytes remaining on stream' }`` (the server closed it mid-result), a pool that found no server."""


def errno(exc: BaseException) -> int | None:
    """The MySQL error number of a driver (or SQLAlchemy) exception, if it has one (also in
    connectorx's error text)."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    args = getattr(source, "args", ())
    if args and isinstance(args[0], int):
        return int(args[0])
    if type(source).__name__ == "RuntimeError":
        found = _CONNECTORX_CODE.search(str(source))
        if found is not None:
            return int(found.group(1))
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """A lost, refused or stalled connection (worth a retry), as opposed to an error of the
    statement."""
    if isinstance(exc, ConnectionError | TimeoutError | BrokenPipeError):
        return True
    code = errno(exc)
    if code in CONNECTION_LOST:
        return True
    if type(exc).__name__ == "InterfaceError":  # pymysql: the connection is already closed
        return True
    if type(exc).__name__ != "RuntimeError":
        return False
    text = str(exc)
    lowered = text.lower()
    return bool(_CONNECTORX_LOST.search(text)) or ("connection" in lowered and "lost" in lowered)


def is_read_timeout(exc: BaseException) -> bool:
    """A read that waited out its timeout (pymysql says "(timed out)"; mysqlclient's message is
    that of any lost connection: the caller compares the time waited)."""
    if isinstance(exc, ReadTimedOut):
        return True
    return errno(exc) == 2013 and "timed out" in str(exc).lower()


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
