"""Finding a stalled connection without cutting a slow statement (``mysqlwriter``).

A stalled network (a half-open connection: a middlebox that holds the flow but forwards
nothing, a peer gone without a RST) and a slow statement look alike to the client: no byte
comes. A socket read timeout cannot tell them apart, and a writer's statements may rightly take
long — a ``LOAD DATA`` behind another transaction's locks, the ``XA COMMIT`` of a large
transaction, an ``ALTER TABLE`` of a big table applied by CDC —, so any short timeout would cut
legitimate work and restart the job for nothing, and a long one leaves a stall undetected for as
long. A watched connection therefore has no read timeout. A :class:`StallWatch` thread looks for
a read or write of it that has waited ``timeout`` seconds and asks the server, on a connection of
its own, what that connection's session is doing (``information_schema.PROCESSLIST``, by the
connection id; a user always sees its own sessions. A connection whose id the server does not
know by that number — a proxy such as ProxySQL between — is not watched: asking about it could
break, or kill, another session):

- running a command (``Query``, ``Killed``, ...): the statement is slow, not stalled; the watch
  asks again after another ``timeout``;
- idle (``Sleep``) for at least half the timeout, or gone: the server is not working on it, so
  the statement or its answer is lost on the way. The session is killed (``KILL CONNECTION``:
  its open transaction is rolled back and its locks released now, not hours later when the
  server notices; a prepared XA transaction survives it, for ``XA RECOVER``) and the socket is
  shut down, so the waiting statement fails as a lost connection (error 2013, retried) whose
  message says it stalled;
- the server cannot be reached or asked: the same (nothing will answer the statement either).

Watched sessions set ``net_read_timeout`` and ``net_write_timeout`` to the timeout, so a server
waiting for the rest of a ``LOAD DATA LOCAL`` that the network holds back (state "Reading from
net") gives up by itself (MariaDB after about twice that) and the next question finds the
session gone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from libs.mysql.connect import CR_SERVER_LOST, error_text, pymysql_connection

__all__ = ["DEFAULT_STALL_TIMEOUT", "StallWatch"]

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT = 60.0
"""Seconds a watched read or write waits before the server is asked whether it still runs the
statement. It never cuts a statement the server is running, so it can be short: a stall is
found within one to two of it."""

PROBE_SETTINGS = ("host", "port", "user", "password", "ssl", "connect_timeout", "charset")
"""The connect arguments a probe shares with the connection it asks about."""
PROBE_READ_TIMEOUT = 10
"""Seconds a probe waits for the server's answers (its statements are trivial)."""


@functools.cache
def watched_connection() -> type:
    """The pymysql connection class a :class:`StallWatch` watches: it notes since when a read or
    write waits, and turns the failure of one the watch broke into the watch's message."""
    import pymysql  # noqa: PLC0415 - optional driver

    base: Any = pymysql_connection()

    class Watched(base):  # type: ignore[misc,valid-type]
        waiting: float | None = None
        """Since when (``time.monotonic``) a read or write waits; None while none does."""
        asked: float = 0.0
        """When the watch last found the server running this connection's statement."""
        stalled: str | None = None
        """Why the watch found the connection stalled (it shut the socket down)."""

        def _read_bytes(self, num_bytes: int) -> bytes:
            return self._wait(super()._read_bytes, num_bytes)  # type: ignore[no-any-return]

        def _write_bytes(self, data: bytes) -> None:
            self._wait(super()._write_bytes, data)

        def _wait(self, io: Callable[[Any], Any], argument: Any) -> Any:
            self.waiting = time.monotonic()
            try:
                return io(argument)
            except Exception as exc:
                if self.stalled is None:
                    raise
                raise pymysql.err.OperationalError(CR_SERVER_LOST, self.stalled) from exc
            finally:
                self.waiting = None

    return Watched


class StallWatch:
    """Watches the connections it opens for stalls (see the module docs); one per writer,
    :meth:`close` d with it."""

    def __init__(self, timeout: float, *, name: str, secrets: Sequence[str | None] = ()) -> None:
        self.timeout = timeout
        self.name = name
        """Whose connections (a plugin name), for messages."""
        self._secrets = secrets
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._settings: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._renumbered = False
        """A proxy between renumbers sessions (said once)."""

    def connect(self, **settings: Any) -> Any:
        """A watched pymysql connection, from DB-API ``connect`` keyword arguments (also what a
        SQLAlchemy pool's ``do_connect`` event gets)."""
        conn = watched_connection()(**settings)
        seconds = max(1, math.ceil(self.timeout))
        cursor = conn.cursor()
        try:
            cursor.execute(
                f"SET SESSION net_read_timeout = {seconds}, net_write_timeout = {seconds}"
            )
            cursor.execute("SELECT CONNECTION_ID()")
            (session,) = cursor.fetchone()
        finally:
            cursor.close()
        if int(session) != conn.thread_id():
            if not self._renumbered:
                self._renumbered = True
                log.warning(
                    "%s: the server calls its session %s, the handshake said %s: a proxy "
                    "between renumbers sessions, so stalls of its connections are found only "
                    "by TCP keepalive (readTimeout cannot ask the server about them)",
                    self.name,
                    session,
                    conn.thread_id(),
                )
            return conn
        with self._lock:
            self._settings = {k: v for k, v in settings.items() if k in PROBE_SETTINGS}
            self._connections.add(conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self.name}-stall-watch", daemon=True
                )
                self._thread.start()
        return conn

    def close(self) -> None:
        """Stop watching."""
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(PROBE_READ_TIMEOUT + 5)

    # -- the watch thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.wait(self.timeout / 4):
            now = time.monotonic()
            with self._lock:
                connections = list(self._connections)
            overdue = [
                (conn, since)
                for conn in connections
                if (since := conn.waiting) is not None
                and now - max(since, conn.asked) >= self.timeout
            ]
            if overdue:
                self._ask(overdue)

    def _ask(self, overdue: list[tuple[Any, float]]) -> None:
        """Ask the server about the overdue connections; break those it is not working for."""
        with self._lock:
            settings = dict(self._settings)
        where = f"{settings.get('host')}:{settings.get('port')}"
        ids = {int(conn.thread_id()): (conn, since) for conn, since in overdue}
        probe: Any = None
        try:
            probe = pymysql_connection()(**settings, read_timeout=PROBE_READ_TIMEOUT)
            cursor = probe.cursor()
            marks = ", ".join(["%s"] * len(ids))
            cursor.execute(
                "SELECT `ID`, `COMMAND`, `TIME` FROM information_schema.PROCESSLIST "
                f"WHERE `ID` IN ({marks})",
                list(ids),
            )
            sessions = {int(row[0]): (str(row[1]), int(row[2] or 0)) for row in cursor.fetchall()}
        except Exception as exc:
            if probe is not None:
                with contextlib.suppress(Exception):
                    probe.close()
            reason = f"the server cannot be asked ({error_text(exc, self._secrets)})"
            for conn, since in overdue:
                self._break(conn, since, where, reason)
            return
        idle_enough = max(1, int(self.timeout // 2))
        try:
            for session, (conn, since) in ids.items():
                command, seconds = sessions.get(session, (None, 0))
                if command is None:
                    reason = f"the server has no session {session} any more"
                elif command == "Sleep" and seconds >= idle_enough:
                    reason = f"the server shows session {session} idle for {seconds}s"
                    with contextlib.suppress(Exception):  # it may have ended meanwhile
                        cursor.execute(f"KILL CONNECTION {session}")
                else:
                    conn.asked = time.monotonic()
                    log.debug(
                        "%s: session %s is still running its statement (%s, %ss)",
                        self.name,
                        session,
                        command,
                        seconds,
                    )
                    continue
                self._break(conn, since, where, reason)
        finally:
            with contextlib.suppress(Exception):
                probe.close()

    def _break(self, conn: Any, since: float, where: str, reason: str) -> None:
        """Shut a stalled connection's socket down (its waiting read or write fails), unless
        the wait it was found in has ended meanwhile."""
        if conn.waiting != since:
            return
        waited = time.monotonic() - since
        conn.stalled = (
            f"no answer from {where} for {waited:.0f}s and {reason}: the connection stalled "
            f"(readTimeout {self.timeout:g}s)"
        )
        log.warning("%s: %s", self.name, conn.stalled)
        sock = conn._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
