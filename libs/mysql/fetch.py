"""Reading rows fast: connectorx (Arrow from Rust), mysqlclient (raw bytes) or pymysql.

connectorx reads a whole page with the GIL released and the page is cut into batches without
copying; glibc's arenas are capped at two, and what C/Rust code freed is given back to the
system after a page once the process has grown (see :func:`trim_malloc`).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import decimal
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from sqlalchemy.engine import URL

from libs.mysql.connect import (
    SESSION_TIME_ZONE,
    Driver,
    ReadTimedOut,
    connect,
    connectorx_url,
    where,
)
from libs.mysql.types import MysqlType, decode_text, from_connectorx

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


TRIM_GROWTH = 64 << 20
"""Bytes of resident memory the process may gain after a ``malloc_trim`` (or after its first
page) before the next page ends with one (:func:`trim_malloc`)."""

_trim_lock = threading.Lock()
_resident_after_trim: int | None = None


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``; Linux)."""
    pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def trim_malloc() -> None:
    """After a connectorx page: give the memory C/Rust code freed back to the system (glibc
    ``malloc_trim``) when the process has grown by :data:`TRIM_GROWTH` since it last did.

    glibc keeps freed memory mapped, and the next page reuses it. A trim after every page gave
    it back and the next page faulted it in again (MySQL → Kafka: 300,000 page faults and 1.6-1.9
    s of system CPU at 2M rows, now ~110,000 and 1.0-1.2 s; 1.2 million and 7-8.7 s at 8M rows,
    now ~250,000 and 4.2-4.5 s). With no trim at all, the arenas that connectorx shares with
    librdkafka fragment and that job's RSS kept growing with the table (264 → 373 MB over 8M
    rows); trimming on growth bounds it (326-343 MB, against 308-312 with a trim a page).
    MySQL → Parquet and → MySQL peak at the same RSS with or without trims."""
    libc = _libc()
    if libc is None:
        return
    global _resident_after_trim
    with _trim_lock:
        resident = resident_bytes()
        if _resident_after_trim is None:  # the first page sets the mark
            _resident_after_trim = resident
        elif resident - _resident_after_trim >= TRIM_GROWTH:
            with contextlib.suppress(AttributeError):
                libc.malloc_trim(0)
            _resident_after_trim = resident_bytes()


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

    ``read_timeout``: the text drivers' socket read timeout (a read that waits longer fails as a
    lost connection). connectorx has none (its URL takes no read timeout) and reads a whole page
    in Rust with the GIL released, so the page is read in a thread of its own and
    :class:`~libs.mysql.connect.ReadTimedOut` is raised when it has not arrived within
    ``read_timeout``: the stalled read is abandoned (its thread ends when its connection does:
    TCP keepalive closes one whose peer is gone).
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
            page = self._connectorx_page(connectorx, sql)
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

    def _connectorx_page(self, connectorx: Any, sql: str) -> Any:
        """One page from connectorx, within ``read_timeout`` (see the class docs)."""

        def read() -> Any:
            return connectorx.read_sql(
                connectorx_url(self.url),
                sql,
                return_type="arrow",
                pre_execution_query=[f"SET time_zone = '{SESSION_TIME_ZONE}'"],
            )

        if not self.read_timeout:
            return read()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["page"] = read()
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name="syncx-connectorx-page", daemon=True).start()
        if not done.wait(self.read_timeout):
            msg = (
                f"no answer from {where(self.url)} within readTimeout {self.read_timeout:g}s "
                "(connectorx page read): the connection stalled"
            )
            raise ReadTimedOut(msg)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["page"]


# -- errors -------------------------------------------------------------------------------------
