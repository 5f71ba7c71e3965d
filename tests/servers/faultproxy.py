"""A TCP proxy that injects network faults, for the fault tests (``tests/test_faults.py``).

:class:`FaultProxy` listens on an ephemeral port of 127.0.0.1 and forwards every connection to
an upstream server (the test MariaDB). It runs an asyncio loop in a thread of the test process;
every control is a call the test makes at any moment, and returns once the loop has carried it
out (no sleeps stand in for synchronisation):

- :meth:`~FaultProxy.reset` closes every live connection with a TCP RST (``SO_LINGER`` 0) on
  both sides, as a crashed middlebox or a killed peer would;
- :meth:`~FaultProxy.stall` / :meth:`~FaultProxy.resume`: the live connections stop forwarding
  bytes both ways (end-of-stream included) without closing: a half-open connection, no RST, no
  data. Connections made later flow (a NAT that lost the old flows' state);
- :meth:`~FaultProxy.slow` caps the bytes per second each connection forwards each way;
- :meth:`~FaultProxy.refuse`: new connections are reset at once (a server that is down);
- triggers, fired by the traffic itself rather than by time: :meth:`~FaultProxy.reset_when`
  resets a connection when the client sends a statement containing a pattern (before it reaches
  the server, or once the server's reply arrives, so the server ran it but the client never
  hears), :meth:`~FaultProxy.stall_when` stalls it there instead, :meth:`~FaultProxy.reset_after`
  and :meth:`~FaultProxy.stall_after` act once a number of bytes went through (in the middle of
  a result set, of a binlog stream, of a ``LOAD DATA``).

``connections_seen`` counts accepted connections, ``live`` the open ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]
"""``up``: client → server (statements), ``down``: server → client (results, binlog)."""

_CHUNK = 65536


@dataclass
class Fault:
    """An armed trigger: what it does, when it fires, how often it fired."""

    action: Literal["reset", "stall", "mark"]
    """``mark`` only fires (the test waits for the traffic to get somewhere)."""
    direction: Direction
    pattern: bytes | None = None
    after_bytes: int | None = None
    on_reply: bool = False
    """``reply=True``: act when the server answers the matching statement."""
    scope: Literal["link", "all"] = "link"
    refuse: bool = False
    """When it fires, the proxy starts refusing new connections (in the same step)."""
    times: int = 1
    fired: int = 0
    counted: int = 0
    fired_event: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> bool:
        """Wait until the trigger fired (all its ``times``); True if it did."""
        return self.fired_event.wait(timeout)

    @property
    def done(self) -> bool:
        return self.fired >= self.times


class _Link:
    """One proxied connection: the client's and the server's stream writers."""

    def __init__(
        self, number: int, client: asyncio.StreamWriter, server: asyncio.StreamWriter
    ) -> None:
        self.number = number
        self.client = client
        self.server = server
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.closed = False
        self.on_reply: Literal["reset", "stall"] | None = None
        """What to do when the server's next answer arrives (a statement trigger's ``reply``)."""
        self.tail: dict[Direction, bytes] = {"up": b"", "down": b""}


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with a RST (``SO_LINGER`` 0), dropping unsent data."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """A fault-injecting TCP proxy in front of ``upstream_host:upstream_port`` (see the module
    docs). Use as a context manager, or :meth:`start` and :meth:`close`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._links: dict[int, _Link] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._seen = 0
        self._resets = 0
        self._bytes: dict[Direction, int] = {"up": 0, "down": 0}
        self._rate: float | None = None
        self._refusing = False

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on an ephemeral port (``self.port``) and start forwarding."""
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening and reset every connection."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts -----------------------------------------------------------------------------------

    @property
    def connections_seen(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._seen

    @property
    def live(self) -> int:
        """Connections open now (stalled ones included)."""
        return self._call(self._count())

    def forwarded(self, direction: Direction = "down") -> int:
        """Bytes forwarded so far in ``direction``."""
        with self._lock:
            return self._bytes[direction]

    @property
    def resets(self) -> int:
        """Connections reset so far (by :meth:`reset`, by triggers and while refusing)."""
        with self._lock:
            return self._resets

    # -- controls --------------------------------------------------------------------------------

    def reset(self) -> int:
        """Reset every live connection with a RST on both sides; how many were reset."""
        return self._call(self._reset_all())

    def stall(self) -> int:
        """Stop forwarding on every live connection (both ways, closes included) without
        closing it; how many were stalled. Later connections flow."""
        return self._call(self._stall_all())

    def resume(self) -> None:
        """Let stalled connections flow again (what they held is forwarded)."""
        self._call(self._resume_all())

    def slow(self, bytes_per_second: float | None) -> None:
        """Forward at most this many bytes per second per connection and direction (None: no
        limit)."""
        with self._lock:
            self._rate = bytes_per_second

    def refuse(self, refusing: bool = True) -> None:
        """While ``refusing``, every new connection is reset as soon as it is accepted."""
        with self._lock:
            self._refusing = refusing

    def reset_when(
        self,
        pattern: bytes,
        *,
        reply: bool = False,
        times: int = 1,
        scope: str = "link",
        refuse: bool = False,
    ) -> Fault:
        """Reset the connection whose client sends ``pattern``: before the bytes reach the
        server, or (``reply``) when the server's answer arrives, which is then dropped. Fires
        ``times`` times; ``scope="all"`` resets every live connection; ``refuse``: from then on
        new connections are refused too (until :meth:`refuse` ``(False)``)."""
        fault = Fault("reset", "up", pattern=pattern, on_reply=reply, times=times, refuse=refuse)
        fault.scope = scope  # type: ignore[assignment]
        return self._arm(fault)

    def stall_when(self, pattern: bytes, *, reply: bool = False) -> Fault:
        """Stall the connection whose client sends ``pattern``: holding the statement (the
        server never gets it), or (``reply``) holding the server's answer (the server ran it,
        the client never hears)."""
        return self._arm(Fault("stall", "up", pattern=pattern, on_reply=reply))

    def mark_after(self, count: int, *, direction: Direction = "down") -> Fault:
        """A trigger that only fires once ``count`` more bytes went ``direction``."""
        return self._arm(Fault("mark", direction, after_bytes=count))

    def reset_after(
        self, count: int, *, direction: Direction = "down", scope: str = "link"
    ) -> Fault:
        """Reset once ``count`` more bytes went ``direction`` (counted over every connection):
        the connection carrying the byte that crossed the mark, or every one (``scope="all"``).
        """
        return self._arm(Fault("reset", direction, after_bytes=count, scope=scope))  # type: ignore[arg-type]

    def stall_after(
        self, count: int, *, direction: Direction = "down", scope: str = "link"
    ) -> Fault:
        """Stall once ``count`` more bytes went ``direction``: the connection carrying the byte
        that crossed the mark (holding that chunk), or every live one (``scope="all"``)."""
        return self._arm(Fault("stall", direction, after_bytes=count, scope=scope))  # type: ignore[arg-type]

    def disarm(self) -> None:
        """Forget every trigger that has not fired yet."""
        with self._lock:
            self._faults = [f for f in self._faults if f.done]

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (polling every 10 ms) until ``predicate()``; False after ``timeout`` seconds."""
        event = threading.Event()
        deadline = timeout
        while deadline > 0:
            if predicate():
                return True
            event.wait(0.01)
            deadline -= 0.01
        return predicate()

    # -- the loop --------------------------------------------------------------------------------

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def _arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _count(self) -> int:
        return len(self._links)

    async def _reset_all(self) -> int:
        links = list(self._links.values())
        for link in links:
            self._reset(link)
        return len(links)

    async def _stall_all(self) -> int:
        for link in self._links.values():
            link.flowing.clear()
        return len(self._links)

    async def _resume_all(self) -> None:
        for link in self._links.values():
            link.flowing.set()

    def _reset(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        link.flowing.set()  # wake its pumps: they see it closed
        _abort(link.client)
        _abort(link.server)
        self._links.pop(link.number, None)
        with self._lock:
            self._resets += 1

    def _close(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        link.flowing.set()
        for writer in (link.client, link.server):
            with contextlib.suppress(Exception):
                writer.close()
        self._links.pop(link.number, None)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self._seen += 1
            number = self._seen
            refusing = self._refusing
        if refusing:
            _abort(client_w)
            with self._lock:
                self._resets += 1
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client_w)
            return
        link = _Link(number, client_w, server_w)
        self._links[number] = link
        await asyncio.gather(
            self._pump(link, client_r, server_w, "up"),
            self._pump(link, server_r, client_w, "down"),
        )

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        try:
            while not link.closed:
                try:
                    data = await source.read(_CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                await link.flowing.wait()  # a stalled link holds what it read (and its close)
                if link.closed:
                    return
                if not data:
                    self._close(link)
                    return
                if self._statement_triggers(link, direction, data):
                    return
                await link.flowing.wait()  # a trigger may have stalled it
                if link.closed or not await self._forward(link, sink, data, direction):
                    return
        except (ConnectionError, OSError):
            self._close(link)

    async def _forward(
        self, link: _Link, sink: asyncio.StreamWriter, data: bytes, direction: Direction
    ) -> bool:
        """Forward ``data`` (at the set rate), cut where a byte-count trigger's mark falls so
        that it fires exactly after its bytes were delivered; False once ``link`` is reset."""
        while data:
            await link.flowing.wait()  # stalled in the middle of a chunk: hold the rest
            if link.closed:
                return False
            with self._lock:
                rate = self._rate
                size = len(data) if rate is None else max(1, int(rate / 20))  # 20 slices a s
                for fault in self._faults:
                    if not fault.done and fault.direction == direction and fault.after_bytes:
                        size = min(size, max(1, fault.after_bytes - fault.counted))
            piece, data = data[:size], data[size:]
            sink.write(piece)
            await sink.drain()
            if not await self._byte_triggers(link, direction, len(piece)):
                return False
            if rate is not None:
                await asyncio.sleep(len(piece) / rate)
        return True

    async def _byte_triggers(self, link: _Link, direction: Direction, count: int) -> bool:
        """Count ``count`` forwarded bytes; fire the byte-count triggers whose mark is reached
        (a stall holds the rest of the chunk until resumed). False once ``link`` is reset."""
        reset = stall = everyone = False
        with self._lock:
            self._bytes[direction] += count
            for fault in self._faults:
                if fault.done or fault.direction != direction or fault.after_bytes is None:
                    continue
                fault.counted += count
                if fault.counted < fault.after_bytes:
                    continue
                self._fire(fault)
                everyone = everyone or fault.scope == "all"
                reset = reset or fault.action == "reset"
                stall = stall or fault.action == "stall"
        if reset:
            for other in list(self._links.values()) if everyone else [link]:
                self._reset(other)
            return False
        if stall:
            for other in list(self._links.values()) if everyone else [link]:
                other.flowing.clear()
            await link.flowing.wait()
        return not link.closed

    def _fire(self, fault: Fault) -> None:
        """Count a firing (``self._lock`` held)."""
        fault.fired += 1
        if fault.refuse:
            self._refusing = True
        if fault.done:
            fault.fired_event.set()

    def _statement_triggers(self, link: _Link, direction: Direction, data: bytes) -> bool:
        """Apply the pattern triggers to a chunk before it is forwarded (and reset a link whose
        reply was to be dropped); True when ``link`` was reset (``data`` is dropped)."""
        if direction == "down" and link.on_reply == "reset":
            link.on_reply = None
            self._reset(link)
            return True
        if direction == "down" and link.on_reply == "stall":
            link.on_reply = None
            link.flowing.clear()
            return False
        seen = link.tail[direction] + data
        reset = everyone = False
        with self._lock:
            for fault in self._faults:
                if fault.done or fault.direction != direction or fault.pattern is None:
                    continue
                if fault.pattern not in seen:
                    continue
                self._fire(fault)
                seen = b""  # a statement fires a pattern once
                everyone = everyone or fault.scope == "all"
                if fault.on_reply:
                    link.on_reply = "stall" if fault.action == "stall" else "reset"
                elif fault.action == "stall":
                    link.flowing.clear()
                elif fault.action == "reset":
                    reset = True
            keep = max((len(f.pattern) for f in self._faults if f.pattern), default=1) - 1
        link.tail[direction] = seen[-keep:] if keep > 0 else b""
        if reset:
            for other in list(self._links.values()) if everyone else [link]:
                self._reset(other)
            return True
        return False
