"""``binlogreader``'s stream split: binlog events → CDC batches, positions at transaction ends.

Changes of whole transactions gather in a flush window and leave as batches of one table each;
the position after the last of them is the window's transaction boundary, before that the
previous boundary plus the changes emitted per table (:class:`BinlogPosition` ``emitted``), so a
restore drops exactly what was emitted already. A transaction too big for memory waits in a
spill file (:mod:`~readers.binlog.spill`). A lost connection, a server restart or a binlog
rotation resume from the last emitted position with backoff; DDL on captured tables is skipped,
fails the job or travels as a DDL batch (``ddl``). Row events are decoded by
:class:`~readers.binlog.decoder.RowDecoder` where it can, else by ``mysql-replication``; a
table map is parsed once per table id.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from typing_extensions import override

from libs.cdc import Layout, SourceInfo, build_changes, ddl_batch, parse_ddl
from libs.mysql.connect import access_denied, connection_settings, pymysql_connection
from libs.mysql.types import column_type_of_binlog
from readers.binlog.decoder import Change, TableShape
from readers.binlog.params import PLUGIN, BinlogStart
from readers.binlog.positions import BinlogPosition, GtidState, StreamSplit, binlog_bytes
from readers.binlog.server import pymysql_module, query
from readers.binlog.spill import ChangeBuffer, Part, Spill, records
from sync.contract import DirtyRecord, SplitReader
from sync.errors import JobFailedError, RetriableError
from sync.registry import require

if TYPE_CHECKING:
    from readers.binlog.plugin import BinlogReader

__all__ = ["StreamSplitReader"]

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
"""A flush window closes at the first transaction boundary this long after it opened."""
TICK_SECONDS = 0.5
"""At least this often the stream yields (a batch or an idle tick), so checkpoints proceed."""
HEARTBEAT_SECONDS = 0.25
"""The server sends a heartbeat event after this long without events."""


_CATEGORIES = {"c": "insert", "u": "update", "d": "delete"}
"""A change's ``op`` → its ``cat`` name."""
DDL_EMITTED = "(ddl)"
"""The key of :attr:`BinlogPosition.emitted` counting DDL batches emitted after the position."""
_XA_PREPARED_FLAG = 64
"""MariaDB GTID event flag of an XA transaction's prepared part (``FL_PREPARED_XA``)."""


def _xa_id(query: str) -> str:
    """The XA transaction id of ``XA START|END|COMMIT|ROLLBACK <id> [ONE PHASE]``."""
    words = query.split(None, 2)
    rest = words[2] if len(words) > 2 else ""
    return " ".join(rest.upper().removesuffix("ONE PHASE").split())


class _Reconnect(Exception):
    """The replication connection must be opened again (from the last emitted position)."""


class StreamSplitReader(SplitReader):
    """The binlog from a position: transactions → CDC batches, positions at boundaries."""

    def __init__(
        self, owner: BinlogReader, split: StreamSplit, position: BinlogPosition | None
    ) -> None:
        self._owner = owner
        self._server = owner.server
        self._params = owner.params
        self._split = split
        self._awaiting = position is None and bool(split.snapshot)
        """Not handed over yet: the snapshot is not known to be done and committed, so no
        change may be emitted, and a restore must wait again (see :meth:`snapshot`)."""
        self._position = position or BinlogPosition.from_json(split.start)
        """The last emitted position (what :meth:`snapshot` returns)."""
        self._opened_at = self._position
        owner.stream_opened(self, self._position)
        self._stream: Any = None
        self._stream_connects = 0
        self._sequence = 0
        self._layout: Layout = owner.params.layout()
        self._double_updates = self._layout == "paving" and owner.params.split_update
        """An update is two records (UPDATE_BEFORE, UPDATE_AFTER)."""
        self._spill = Spill(owner.ctx.temp_dir, owner.params.transaction_buffer_bytes)
        self._categories = owner.params.categories()
        self._ddl = owner.params.ddl_policy()
        self._shapes: dict[tuple[str, str, int], TableShape] = {}
        self._layouts_seen: dict[str, tuple[str, ...]] = {}
        self._end: tuple[str, int] | None = None
        self._end_ts: int | None = None
        self._done = False
        self._healthy = False
        self._gtid_state = GtidState(None, mariadb=True)
        self._floor: BinlogPosition | None = None
        """While an XA transaction is prepared but not committed: the position before it."""
        self._last_read = time.monotonic()
        """When the stream last gave an event (heartbeats included)."""

    # -- contract ----------------------------------------------------------------------------

    @override
    def snapshot(self) -> BinlogPosition | None:
        # Before the handover the stream has not started: its position is its start (None),
        # so a run restored from a checkpoint taken while it waited waits again rather than
        # streaming beside snapshot splits that are still being read.
        if self._awaiting:
            return None
        return self._position

    @override
    def progress(self) -> int | None:
        """Binlog bytes from where the split was opened to the last emitted position."""
        opened, now = self._opened_at, self._position
        if opened.file is None or opened.pos is None or now.file is None or now.pos is None:
            return None
        return binlog_bytes(self._owner.log_sizes, (opened.file, opened.pos), (now.file, now.pos))

    @property
    def finished(self) -> bool:
        """Whether the stream reached its end (``stopAt``)."""
        return self._done

    @override
    def close(self) -> None:
        self._close_stream()

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        ctx = self._owner.ctx
        if self._awaiting:
            yield from self._await_snapshot()
        if ctx.stopping.is_set():
            return
        self._resolve_end()
        if self._end is not None and self._position.reached(self._end):
            self._done = True
            return
        delay = 0.5
        lost_since: float | None = None
        progress = self._position.to_json()
        while not ctx.stopping.is_set() and not self._done:
            try:
                yield from self._read()
                return
            except _Reconnect as exc:
                reason = str(exc)
            except Exception as exc:
                problem = self._connection_problem(exc)
                if problem is None:
                    raise
                reason = problem
            self._close_stream()
            now = time.monotonic()
            if lost_since is None or self._position.to_json() != progress:
                lost_since, delay = now, 0.5  # it moved on since the last failure: a new outage
                progress = self._position.to_json()
            elif now - lost_since > self._params.reconnect_timeout:
                msg = (
                    f"the binlog connection to {self._server.where} is lost ({reason}) and "
                    f"did not come back within {self._params.reconnect_timeout:.0f}s; resume "
                    f"from {self._position.describe()} with --restore latest"
                )
                raise RetriableError(msg)
            log.warning(
                "binlogreader: %s; reconnecting in %.1fs from %s",
                reason,
                delay,
                self._position.describe(),
            )
            deadline = time.monotonic() + delay
            while not ctx.stopping.is_set() and time.monotonic() < deadline:
                ctx.stopping.wait(min(TICK_SECONDS, max(0.0, deadline - time.monotonic())))
                yield None
            delay = min(delay * 2, 10.0)

    # -- waiting for the snapshot ------------------------------------------------------------

    def _await_snapshot(self) -> Iterator[None]:
        """Emit nothing until every snapshot split is done and covered by a stored checkpoint
        (with one reader channel the snapshot splits were read before this one: no wait)."""
        expected = frozenset(self._split.snapshot)
        ctx = self._owner.ctx
        if ctx.readers == 1:
            self._awaiting = False
            return
        log.info("binlogreader: the stream waits for the snapshot's %d split(s)", len(expected))
        while not ctx.stopping.is_set():
            covered = self._owner.covered_by_checkpoint(expected, timeout=0.2)
            if covered is not None:
                log.info(
                    "binlogreader: snapshot complete (checkpoint %d); streaming from %s",
                    covered,
                    self._position.describe(),
                )
                self._awaiting = False
                return
            yield None

    # -- the stream --------------------------------------------------------------------------

    def _resolve_end(self) -> None:
        """``stopAt``: the binlog coordinates to stop at (the end at start time for ``now`` and
        for a timestamp, which also stops at the first transaction after it)."""
        stop = self._params.stop_at
        if stop is None:
            return
        if isinstance(stop, BinlogStart) and stop.journal_name is not None:
            self._end = (stop.journal_name, stop.position or 4)
            return
        conn = self._server.connect()
        try:
            rows = query(conn, "SHOW MASTER STATUS")
        finally:
            conn.close()
        self._end = (str(rows[0][0]), int(rows[0][1]))
        stamp = stop if isinstance(stop, int) else None
        if isinstance(stop, BinlogStart):
            stamp = stop.timestamp
        if stamp is not None:
            self._end_ts = stamp // 1000 if stamp > 10**11 else stamp
        log.info("binlogreader: reading up to %s:%s (stopAt)", *self._end)

    def _open_stream(self) -> Any:
        replication = require("pymysqlreplication", "binlog", PLUGIN)
        from pymysqlreplication import event as ev  # noqa: PLC0415
        from pymysqlreplication import row_event as rev  # noqa: PLC0415

        flavor = self._server.flavor()
        self._stream_connects = 0
        self._healthy = False
        self._shapes.clear()  # table ids are per server run: a restarted server reuses them

        def connect(**kwargs: Any) -> Any:
            if kwargs.get("db") != "information_schema":
                if self._stream_connects:
                    # mysql-replication reconnects by itself from its *first* position: we
                    # reconnect from the last emitted one instead
                    raise _Reconnect(self._lost_reason())
                self._stream_connects += 1
            return pymysql_connection()(**kwargs)

        # without any byte (heartbeats included) for readTimeout, the connection counts as lost
        settings = connection_settings(self._server.url, read_timeout=self._params.read_timeout)
        position = self._position
        kwargs: dict[str, Any] = {
            "connection_settings": settings,
            "server_id": self._params.slave_id or random.randint(100_000, 2**31 - 1),
            # always blocking: a non-blocking dump gets reset by MariaDB 10.11 at the binlog's
            # end; a bounded run stops at its end position or at the first heartbeat instead
            "blocking": True,
            "only_events": [
                ev.RotateEvent,
                ev.MariadbGtidEvent,
                ev.GtidEvent,
                ev.QueryEvent,
                ev.XidEvent,
                ev.XAPrepareEvent,
                ev.HeartbeatLogEvent,
                rev.WriteRowsEvent,
                rev.UpdateRowsEvent,
                rev.DeleteRowsEvent,
            ],
            "only_schemas": sorted(self._server.selection.databases)
            if self._server.selection.databases is not None
            else None,
            "slave_heartbeat": HEARTBEAT_SECONDS,
            # each table id's map parsed once, as _shape caches per id (a DDL gives the table a
            # new id; ids are forgotten at a new binlog file): a load of small transactions maps
            # its tables for every statement, and parsing those maps again was most of the
            # reader's time under sysbench (issue 16)
            "freeze_schema": True,
            "pymysql_wrapper": connect,
            "enable_logging": False,
        }
        if flavor.mariadb:
            if not position.gtid:
                msg = f"no GTID position to resume from on MariaDB ({position.describe()})"
                raise JobFailedError(msg)
            kwargs.update(is_mariadb=True, auto_position=position.gtid)
        elif flavor.gtid:
            kwargs.update(auto_position=position.gtid or "")
        else:
            kwargs.update(log_file=position.file, log_pos=position.pos, resume_stream=True)
        self._gtid_state = GtidState(position.gtid, mariadb=flavor.mariadb)
        self._file = position.file
        self._stream = replication.BinLogStreamReader(**kwargs)
        self._last_read = time.monotonic()
        return self._stream

    def _lost_reason(self) -> str:
        """Why mysql-replication lost its connection: nothing came for the read timeout (a
        stall: a healthy stream brings an event or a heartbeat every
        :data:`HEARTBEAT_SECONDS`), or it broke."""
        timeout = self._params.read_timeout
        quiet = time.monotonic() - self._last_read
        if quiet >= 0.95 * timeout:
            return (
                f"nothing came from {self._server.where} for {quiet:.1f}s (readTimeout "
                f"{timeout:g}s; the server sends a heartbeat every {HEARTBEAT_SECONDS:g}s): "
                "the replication connection stalled"
            )
        return "the replication connection was lost"

    def _close_stream(self) -> None:
        """Close the replication connection, and the spill files of the transactions it was
        reading (they are read again from the last emitted position)."""
        self._spill.close_all()
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:
                log.debug("closing the binlog stream failed", exc_info=True)
            self._stream = None

    def _connection_problem(self, exc: BaseException) -> str | None:
        """A short reason when ``exc`` means "reconnect"; None when it is not a lost connection.

        A fatal server answer (purged binlog, missing privilege) raises a clear error here.
        """
        pymysql = pymysql_module()
        if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InternalError):
            code = exc.args[0] if exc.args else 0
            text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
            if code == 1236:
                msg = (
                    f"the server cannot send the binlog from {self._position.describe()}: {text}. "
                    "The position was probably purged (expire_logs_days / binlog_expire_logs_"
                    "seconds); start anew with snapshot: when_needed to copy the tables again"
                )
                raise JobFailedError(msg) from exc
            denied = access_denied(exc)
            if denied is not None:
                msg = (
                    f"the binlog user '{self._server.url.username}' is refused ({denied}): "
                    f"{text}. It needs REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR) "
                    "and SELECT"
                )
                raise JobFailedError(msg) from exc
            return f"{text} (error {code})"
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RetriableError):
            return str(exc)
        if isinstance(exc, pymysql.err.Error):
            return f"{type(exc).__name__}: {exc}"
        return None

    def _read(self) -> Iterator[pa.RecordBatch | None]:
        """Read events until stopped or the end is reached; raises to reconnect.

        Changes of whole transactions gather in a window; at a transaction boundary the window
        is flushed (batches of one table each) once it is ``FLUSH_SECONDS`` old or holds a
        batch worth of changes, or when the server is idle (heartbeat).
        """
        from pymysqlreplication import event as ev  # noqa: PLC0415
        from pymysqlreplication import row_event as rev  # noqa: PLC0415

        ctx = self._owner.ctx
        stream = self._open_stream()
        window = self._buffer()
        skip = dict(self._position.emitted)
        after_ts = self._position.after_ts
        selection = self._server.selection
        rows_events = (rev.WriteRowsEvent, rev.UpdateRowsEvent, rev.DeleteRowsEvent)
        last_yield = time.monotonic()
        in_group = False
        explicit_begin = False
        xa: ChangeBuffer | None = None  # the current group's changes when it is an XA one
        xa_id = ""
        held: dict[str, ChangeBuffer] = {}  # prepared XA transactions with changes, by id
        prepared: set[str] = set()  # every XA transaction whose XA PREPARE was read
        self._floor = None
        group_gtid: str | None = None
        group_ts = 0
        group_skipped = False
        file = self._position.file
        event = None
        while not ctx.stopping.is_set():
            if event is not None:
                # mysql-replication's event and its packet refer to each other: break the cycle
                # so the event's bytes go now, not at the next (rare: syncx run) collection
                event.packet = None
            event = stream.fetchone()
            now = self._last_read = time.monotonic()
            if event is None:
                msg = "the server ended the binlog stream"
                raise _Reconnect(msg)
            self._healthy = True
            kind = type(event)
            if kind in rows_events:
                if (group_skipped and xa is None) or (event.schema, event.table) not in selection:
                    continue
                shape, changes = self._changes(event, kind, rev, file, group_gtid)
                if xa is not None:
                    xa.admit(shape, changes, {})  # emitted at XA COMMIT, if it comes
                else:
                    window.admit(shape, changes, skip)
                if now - last_yield >= TICK_SECONDS:
                    yield None  # a long transaction: let checkpoints through (position unchanged)
                    last_yield = time.monotonic()
                continue
            if kind is ev.HeartbeatLogEvent:  # the server has nothing more to send now
                if not in_group:
                    yield from self._flush(window, skip)
                    if not window.rows:
                        ctx.report_lag(0.0)
                    if self._end is not None and not skip_pending(skip):
                        self._done = True  # caught up with a binlog end at or past stopAt's
                        return
                yield None
                last_yield = now
                continue
            if kind is ev.RotateEvent:
                if event.next_binlog != file:
                    self._forget_table_ids(stream)
                file = event.next_binlog
                continue
            starts_group = kind is ev.MariadbGtidEvent or kind is ev.GtidEvent
            query = ""
            if kind is ev.QueryEvent:
                query = event.query.strip()
                if query[:5].upper() == "BEGIN":
                    explicit_begin = True
                    if in_group:
                        continue
                    starts_group = True
            if starts_group:
                if self._end_ts is not None and event.timestamp > self._end_ts:
                    yield from self._flush(window, skip)  # stopAt: a transaction after the end
                    self._done = True
                    return
                in_group = True
                explicit_begin = explicit_begin and kind is ev.QueryEvent
                xa_flag = getattr(event, "flags", 0) & _XA_PREPARED_FLAG
                xa = self._buffer() if kind is ev.MariadbGtidEvent and xa_flag else None
                group_gtid = (
                    getattr(event, "gtid", None) if kind is not ev.QueryEvent else group_gtid
                )
                group_ts = event.timestamp
                group_skipped = after_ts is not None and group_ts < after_ts
                if not group_skipped:
                    after_ts = None
                continue
            ddl: str | None = None
            release: ChangeBuffer | None = None
            if kind is ev.XidEvent:
                pass
            elif kind is ev.XAPrepareEvent:
                prepared.add(xa_id)
                if xa is not None and xa.rows:
                    held[xa_id] = xa  # until its XA COMMIT; the position stays before it
                    if self._floor is None:
                        self._floor = self._position
            elif kind is ev.QueryEvent:
                upper = query[:12].upper()
                if upper.startswith(("SAVEPOINT", "ROLLBACK TO")):
                    continue
                if upper.startswith(("XA START", "XA BEGIN", "XA END")) and in_group:
                    xa = self._buffer() if xa is None else xa
                    xa_id = _xa_id(query)
                    continue
                if upper.startswith("XA COMMIT") and query.upper().endswith("ONE PHASE"):
                    release = xa  # MySQL's one-phase XA commit ends its own group
                elif upper.startswith("XA COMMIT"):
                    release = held.pop(_xa_id(query), None)
                    if _xa_id(query) not in prepared:
                        log.warning(
                            "binlogreader: XA transaction %s committed at %s:%s was prepared "
                            "before the start position: its changes are not in the stream",
                            _xa_id(query),
                            file,
                            event.packet.log_pos,
                        )
                    prepared.discard(_xa_id(query))
                elif upper.startswith("XA ROLLBACK"):
                    rolled_back = held.pop(_xa_id(query), None)
                    if rolled_back is not None:
                        rolled_back.clear()
                    prepared.discard(_xa_id(query))
                elif not upper.startswith(("COMMIT", "ROLLBACK", "XA ")) and not group_skipped:
                    ddl = query
            else:
                continue
            if not held:
                self._floor = None
            xa = None
            if release is not None and not group_skipped:
                window.take(release, skip)
            elif release is not None:
                release.clear()  # committed before the start timestamp: not emitted
            # a transaction boundary
            in_group = False
            explicit_begin = False
            if group_gtid is not None:
                self._gtid_state.add(group_gtid)
            gtid_here = group_gtid
            group_gtid = None
            boundary_ts = group_ts or event.timestamp
            group_ts = 0
            group_skipped = False
            boundary = BinlogPosition(
                file, event.packet.log_pos, self._gtid_state.text(), boundary_ts, {}, after_ts
            )
            if ddl is not None:
                schema = event.schema
                db = schema.decode() if isinstance(schema, bytes) else str(schema or "")
                source = SourceInfo(file, event.packet.log_pos, gtid_here, event.timestamp * 1000)
                yield from self._ddl_event(window, skip, db, ddl, source, boundary)
                last_yield = time.monotonic()
            window.boundary = boundary
            if self._end is not None and boundary.reached(self._end):
                yield from self._flush(window, skip)
                self._done = True
                return
            if window.rows >= ctx.batch_rows or (
                window.rows and now - window.opened >= FLUSH_SECONDS
            ):
                yield from self._flush(window, skip)
                last_yield = time.monotonic()
            elif not window.rows and not skip_pending(skip):
                self._position = self._after(boundary)  # nothing pending: the position moves on
                window.boundary = None
            if now - last_yield >= TICK_SECONDS:
                yield None
                last_yield = time.monotonic()

    def _forget_table_ids(self, stream: Any) -> None:
        """A new binlog file begins: forget every table id → table mapping.

        Table ids are numbered anew each time the server starts, and a server start always
        begins a new binlog file. mysql-replication clears its map only at a rotate event
        written at the end of a file, which a server that stopped or crashed never writes, and
        it keeps no mapping for a table outside ``only_schemas``: after a restart, a row event
        of such a table whose id an earlier captured table had would be decoded as that table's
        (phantom changes, or values that do not decode). Every transaction maps its tables
        before its row events, so nothing is lost by forgetting.
        """
        stream.table_map = {}
        self._shapes.clear()

    def _changes(
        self, event: Any, kind: type, rev: Any, file: str | None, gtid: str | None
    ) -> tuple[TableShape, list[Change]]:
        """A rows event's changes (of the kinds ``cat`` asks for)."""
        shape = self._shape(event)
        op = "u" if kind is rev.UpdateRowsEvent else "c" if kind is rev.WriteRowsEvent else "d"
        if _CATEGORIES[op] not in self._categories:
            return shape, []
        source = SourceInfo(file, event.packet.log_pos, gtid, event.timestamp * 1000)
        return shape, shape.changes(event, op, source)

    def _shape(self, event: Any) -> TableShape:
        key = (event.schema, event.table, event.table_id)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        columns = event.columns
        names = [c.name for c in columns]
        if any(n is None for n in names):
            msg = (
                f"row event of {event.schema}.{event.table} carries no column names: the server "
                "needs binlog_row_metadata=FULL (set it, then restart the job)"
            )
            raise JobFailedError(msg)
        types = [column_type_of_binlog(c) for c in columns]
        primary = event.primary_key
        key_columns = [primary] if isinstance(primary, str) and primary else list(primary or ())
        shape = TableShape.of(event.schema, event.table, names, types, key_columns, columns)
        qualified = shape.layout.qualified
        previous = self._layouts_seen.get(qualified)
        if previous is not None and previous != tuple(names):
            log.info("binlogreader: the layout of %s changed: %s -> %s", qualified, previous, names)
        self._layouts_seen[qualified] = tuple(names)
        self._shapes[key] = shape
        return shape

    def _buffer(self) -> ChangeBuffer:
        """A buffer for the changes of open transactions (the flush window, an XA one)."""
        step = max(1, self._owner.ctx.batch_rows)
        return ChangeBuffer(self._build, step, self._spill, double_updates=self._double_updates)

    def _flush(self, window: ChangeBuffer, skip: dict[str, int]) -> Iterator[pa.RecordBatch]:
        """Emit the window, one batch per part (a table's changes, at most ``batch_rows``), from
        memory or its spill file; the position after the last of them is the window's boundary,
        before that the previous boundary plus the changes emitted per table."""
        if skip_pending(skip) or window.boundary is None:
            return  # changes emitted before a restore are still to be dropped again
        boundary = self._after(window.boundary)
        if not window.rows:
            self._position = boundary
            window.clear()
            return
        window.seal()
        emitted = dict(self._position.emitted)
        last_ts = 0
        for index, part in enumerate(window.parts):
            batch = part.load()
            for _at, _records, record in part.dirty:
                self._owner.ctx.report_dirty(record)
            emitted[part.table] = emitted.get(part.table, 0) + part.records
            last_ts = max(last_ts, part.last_ts)
            if index == len(window.parts) - 1 and self._floor is None:
                self._position = boundary
            else:
                self._position = self._position.with_emitted(emitted)
            if batch.num_rows:
                yield batch
        self._owner.ctx.report_lag(max(0.0, time.time() - last_ts / 1000))
        window.clear()

    def _after(self, boundary: BinlogPosition) -> BinlogPosition:
        """The position after everything up to ``boundary`` was emitted: the boundary itself,
        or while an XA transaction is prepared but not committed, the position before it (its
        changes are read again on restore) with what was emitted since."""
        return boundary if self._floor is None else self._position

    def _build(self, shape: TableShape, changes: list[Change]) -> Part:
        """One batch of ``changes`` of ``shape``'s table, numbered on from the stream's
        sequence; a change whose values do not convert is left out of it, to be reported as
        dirty when the part is emitted (its transaction may yet be rolled back)."""
        sequence = self._sequence
        counts = [records(c, double_updates=self._double_updates) for c in changes]
        self._sequence += sum(counts)
        part = Part(shape.layout.qualified, sum(counts), changes[-1][3].ts_ms, [], None)
        try:
            part.batch = self._build_batch(shape, changes, sequence)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
            good = []
            at = 0
            for change, count in zip(changes, counts, strict=True):
                try:
                    build_changes(shape.layout, self._layout, [change])  # type: ignore[list-item]
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError) as exc:
                    row = dict(zip(shape.names, change[2] or change[1] or [], strict=False))
                    reason = f"{shape.layout.qualified}: {exc}"
                    part.dirty.append((at, count, DirtyRecord(row, reason, "conversion")))
                else:
                    good.append(change)
                at += count
            part.batch = self._build_batch(shape, good, sequence)
        return part

    def _build_batch(
        self, shape: TableShape, changes: list[Change], sequence: int
    ) -> pa.RecordBatch:
        return build_changes(
            shape.layout,
            self._layout,
            changes,  # type: ignore[arg-type]
            split_update=self._params.split_update,
            sequence=sequence,
        )

    def _ddl_event(
        self,
        window: ChangeBuffer,
        skip: dict[str, int],
        db: str,
        query: str,
        source: SourceInfo,
        boundary: BinlogPosition,
    ) -> Iterator[pa.RecordBatch]:
        """A DDL statement ends a group; ``window`` still ends at the boundary before it."""
        statement = parse_ddl(query, db)
        if statement.kind == "other" or statement.temporary:
            return
        selection = self._server.selection
        touched = [(d or db, t) for d, t in statement.tables if (d or db, t) in selection]
        if not touched:
            return
        where = f"{source.file}:{source.pos}" + (f" (GTID {source.gtid})" if source.gtid else "")
        names = ", ".join(f"{d}.{t}" for d, t in touched)
        if self._ddl == "skip":
            log.warning(
                "binlogreader: skipped DDL on %s at %s: %s (ddl: skip)", names, where, query
            )
            if statement.kind == "truncate":
                log.warning(
                    "binlogreader: TRUNCATE is not in the row events: the target keeps %s's rows",
                    names,
                )
            return
        if self._ddl == "fail":
            msg = (
                f"DDL on captured table {names} at {where}: {query!r}. The job's ddl policy is "
                "'fail': change the target to match, then resume with ddl: skip (restore with "
                "--force-restore: the saved position is before this statement)"
            )
            raise JobFailedError(msg)
        # apply: one batch per table the statement names; after all but the last the position
        # is the one before the statement plus the DDL batches emitted (a restore there emits
        # the rest), after the last the boundary after it
        done = skip.pop(DDL_EMITTED, 0)
        if done >= len(touched):  # emitted before the restore, with everything before it
            if done > len(touched):
                skip[DDL_EMITTED] = done - len(touched)
            return
        yield from self._flush(window, skip)  # the changes before the statement leave first
        if window.rows or skip_pending(skip):
            msg = f"internal: DDL at {where} reached with changes still pending"
            raise JobFailedError(msg)
        for index in range(done, len(touched)):
            d, t = touched[index]
            if index == len(touched) - 1 and self._floor is None:
                self._position = boundary
            else:
                emitted = self._position.emitted
                count = emitted.get(DDL_EMITTED, 0) + 1
                self._position = self._position.with_emitted({**emitted, DDL_EMITTED: count})
            yield ddl_batch(d, t, query, source)


def skip_pending(skip: dict[str, int]) -> bool:
    """Whether changes emitted before a restore are still to be dropped."""
    return any(count > 0 for count in skip.values())
