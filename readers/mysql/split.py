"""One open ``mysqlreader`` split: streamed keyset pages with the reader's driver, an ordered
stream, or polling; lost connections retried, a page connectorx cannot read read again."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.sql import Select
from typing_extensions import override

from libs.mysql.connect import (
    RETRY_DELAYS,
    connect,
    errno,
    error_text,
    is_connection_lost,
    is_read_timeout,
    query_failure,
    where,
)
from libs.mysql.fetch import DriverCannotRead, limit_malloc_arenas
from libs.mysql.types import MysqlType, python_value
from libs.sql import decode_value, encode_value
from readers.mysql.state import MysqlPosition, MysqlSplit, Watermark, plain
from readers.sql import START, SqlPosition, SqlSplitReader
from readers.sql.state import Mode
from sync.contract import Split
from sync.errors import RetriableError

if TYPE_CHECKING:
    from readers.mysql.reader import MysqlReader

__all__ = ["MysqlSplitReader"]

log = logging.getLogger(__name__)


class MysqlSplitReader(SqlSplitReader):
    """One open split, read with the reader's driver in streamed keyset pages.

    Positions (:class:`MysqlPosition`) are the generic ones (``after``, ``nulls``, ``offset``)
    plus ``inc`` (the watermark) in incremental runs, and ``poll`` (the cursor) when polling.
    """

    _reader: MysqlReader
    _data: MysqlSplit
    _position: MysqlPosition | None

    def __init__(self, reader: MysqlReader, split: Split, position: SqlPosition | None) -> None:
        super().__init__(reader, split, position)
        # reading starts here: cap glibc's arenas now (not when the plugin is built, so that
        # `syncx validate` and the job's other plugins are not affected)
        limit_malloc_arenas()
        self._driver = reader.driver()
        self._fetcher = reader.new_fetcher(self._driver)
        self._mark = Watermark.from_json(self._position.inc if self._position else None)
        self._failures = 0
        self._since = time.monotonic()
        """When the running query started or last gave a batch (how long a read waited)."""

    # -- reading -----------------------------------------------------------------------------

    @override
    def read_phases(self, mode: Mode) -> Iterator[pa.RecordBatch | None]:
        return self._poll() if mode == "poll" else super().read_phases(mode)

    @override
    def release(self) -> None:
        self._fetcher.close()

    def _select(self, query: Select[Any]) -> tuple[Select[Any], list[tuple[str, MysqlType]]]:
        chosen = self._reader.selected(self._driver)
        query = query.with_only_columns(
            *[expr for _, _, expr in chosen], maintain_column_froms=True
        )
        return query, [(name, mt) for name, mt, _ in chosen]

    def _run(self, query: Select[Any]) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
        """Run a query with this split's driver; yields full batches (key columns included)."""
        query, columns = self._select(query)
        engine = self._reader.engine()
        compiled = query.compile(
            dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = dict(compiled.params)
        for key, value in params.items():
            params[key] = plain(value)
        self._since = time.monotonic()
        for item in self._fetcher.stream(str(compiled), params, columns, self._reader.page_rows):
            yield item
            self._since = time.monotonic()

    def _lost(self, exc: BaseException) -> str:
        """What a lost connection was: a stall (nothing within the read timeout: pymysql and
        connectorx say so, mysqlclient's read failed after waiting that long), else the
        driver's message."""
        reader = self._reader
        timeout = reader.params.effective_read_timeout()
        waited = time.monotonic() - self._since
        if is_read_timeout(exc) or waited >= 0.95 * timeout:
            return (
                f"no data from {where(reader.engine().url)} within readTimeout {timeout:g}s: "
                "the connection stalled"
            )
        return error_text(exc, [reader.params.secret()])

    def _attempt_failed(self, exc: BaseException, what: str) -> None:
        """After a failed query: fall back from connectorx, or count a lost connection (and
        wait before the retry), or re-raise."""
        reader = self._reader
        if isinstance(exc, DriverCannotRead):
            fallback = "mysqlclient" if _installed_text("mysqlclient") else "pymysql"
            log.warning(
                "%s: connectorx cannot read %s (%s); reading it with %s",
                reader.plugin_name,
                what,
                exc,
                fallback,
            )
            self._fetcher.close()
            self._driver = fallback
            self._fetcher = reader.new_fetcher(fallback)
            return
        if not is_connection_lost(exc):
            if isinstance(exc, Exception) and errno(exc) is not None:
                detail = error_text(exc, [reader.params.secret()])
                msg = f"{reader.plugin_name}: {what} failed: {detail}"
                raise query_failure(exc, msg) from exc
            raise exc
        self._fetcher.close()
        detail = self._lost(exc)
        while True:
            self._failures += 1
            if self._failures > len(RETRY_DELAYS):
                msg = (
                    f"{reader.plugin_name}: lost the connection while reading {what} "
                    f"({self._failures} attempts): {detail}"
                )
                raise RetriableError(msg) from exc
            delay = RETRY_DELAYS[self._failures - 1]
            log.warning(
                "%s: connection lost while reading %s (%s); retrying in %ss",
                reader.plugin_name,
                what,
                detail,
                delay,
            )
            reader.ctx.stopping.wait(delay)
            if self._driver != "connectorx":
                return
            # connectorx waits 30 s for a server that is down: ask with pymysql first
            try:
                connect(reader.engine().url).close()
            except Exception as probe:
                if not is_connection_lost(probe):
                    raise
                detail = error_text(probe, [reader.params.secret()])
                continue
            return

    def _emit(
        self, batch: pa.RecordBatch, errors: dict[int, str], position: dict[str, Any]
    ) -> pa.RecordBatch | None:
        """Track the watermark, set the position, return the output rows."""
        extra = self._reader.extra()
        if extra.inc is not None and batch.num_rows:
            tie = batch.column(extra.tie) if extra.tie is not None else None
            self._mark.update(batch.column(extra.inc), tie)
        if self._mark.seen and self._data.mode != "poll":
            position = {**position, "inc": self._mark.to_json()}
        self._position = MysqlPosition(**position)
        return self._reader.output_batch(batch, errors)

    @override
    def read_keyset(self) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        source = reader.source()
        assert source.key is not None
        key_name = source.key.name
        unique = source.key.unique
        after: Any = START
        if self.in_keyset():
            after = decode_value(self._position.after)  # type: ignore[union-attr]
        limit = reader.params.page_size
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            got = 0
            last: Any = START
            carry: list[tuple[pa.RecordBatch, dict[int, str]]] = []
            try:
                for batch, errors in self._run(reader.page_query(self._split, after, limit)):
                    self._failures = 0
                    got += batch.num_rows
                    keys = batch.column(key_name)
                    last = python_value(keys, batch.num_rows - 1)
                    if unique:
                        after = last
                        yield self._emit(batch, errors, {"after": encode_value(last)})
                        continue
                    carry.append((batch, errors))
                    ready, carry, emitted_key = _cut_ties(carry, key_name)
                    if ready is not None:
                        after = emitted_key
                        yield self._emit(*ready, {"after": encode_value(emitted_key)})
                    if stopping.is_set():
                        return
            except Exception as exc:
                self._attempt_failed(exc, f"split {self._split.id}")
                continue
            if not unique and last is not START:
                if got >= limit:  # the run of equal keys may go on past the page
                    carry = list(self._run(reader.tie_query(self._split, last))) or carry
                rows, errors = _concat(carry)
                after = last
                yield self._emit(rows, errors, {"after": encode_value(last)})
            if got < limit:
                return

    @override
    def read_custom(self) -> Iterator[pa.RecordBatch | None]:
        return self.read_stream(nulls=False, custom=True)

    @override
    def read_stream(self, *, nulls: bool, custom: bool = False) -> Iterator[pa.RecordBatch | None]:
        """Rows with a NULL key, a table without key, or customSql: one streamed query whose
        position is the number of rows emitted (``None`` when its order is not stable)."""
        reader = self._reader
        tag = "nulls" if nulls else "offset"
        resumable = not custom and reader.stream_resumable()
        offset = 0
        done = getattr(self._position, tag, None)
        if done is not None:
            offset = int(done)
        emitted = 0
        while not reader.ctx.stopping.is_set():
            if custom:
                source = reader.source()
                query = (
                    sa.select(*source.select_list())
                    .select_from(source.from_)
                    .where(*reader.conditions(self._split))
                )
                if emitted:
                    query = query.offset(emitted)
            else:
                query = reader.stream_query(self._split, offset + emitted, nulls=nulls)
            try:
                for batch, errors in self._run(query):
                    self._failures = 0
                    emitted += batch.num_rows
                    position: dict[str, Any] = {tag: offset + emitted} if resumable else {}
                    yield self._emit(batch, errors, position)
                    if reader.ctx.stopping.is_set():
                        return
            except Exception as exc:
                self._attempt_failed(exc, "customSql" if custom else f"split {self._split.id}")
                continue
            return

    def _poll(self) -> Iterator[pa.RecordBatch | None]:
        """Polling: ``inc`` (then the tie key) order after the cursor; idle ticks between polls."""
        reader = self._reader
        extra = reader.extra()
        assert extra.inc is not None
        raw = self._position.poll if self._position is not None else None
        if raw is None:
            raw = self._data.start
        self._mark = Watermark.from_json(raw)
        if self._position is None and raw is not None:
            self._position = MysqlPosition(poll=raw)
        source = reader.source()
        inc = reader._inc_expr()
        order = [inc] + ([reader._column_expr(extra.tie)] if extra.tie else [])
        limit = reader.params.page_size
        interval = reader.params.polling_interval / 1000
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            conds = [*reader._where_only(), *reader.after_watermark(self._mark), inc.is_not(None)]
            query = sa.select(*source.select_list()).select_from(source.from_).where(*conds)
            query = query.order_by(*order).limit(limit)
            got = 0
            carry: list[tuple[pa.RecordBatch, dict[int, str]]] = []
            try:
                for batch, errors in self._run(query):
                    self._failures = 0
                    got += batch.num_rows
                    if extra.tie is not None:
                        yield self._emit_poll(batch, errors)
                        continue
                    carry.append((batch, errors))
                    ready, carry, _ = _cut_ties(carry, extra.inc)
                    if ready is not None:
                        yield self._emit_poll(*ready)
            except Exception as exc:
                self._attempt_failed(exc, "the polling query")
                continue
            if carry:
                rows, errors = _concat(carry)
                if got >= limit:  # complete the run of the last value
                    last = python_value(rows.column(extra.inc), rows.num_rows - 1)
                    tie_query = (
                        sa.select(*source.select_list())
                        .select_from(source.from_)
                        .where(*reader._where_only(), inc == last)
                    )
                    rows, errors = _concat(list(self._run(tie_query)))
                yield self._emit_poll(rows, errors)
            if got >= limit:
                continue
            waited = 0.0
            while waited < interval and not stopping.is_set():
                step = min(1.0, interval - waited)
                stopping.wait(step)
                waited += step
                yield None

    def _emit_poll(self, batch: pa.RecordBatch, errors: dict[int, str]) -> pa.RecordBatch | None:
        extra = self._reader.extra()
        assert extra.inc is not None
        tie = batch.column(extra.tie) if extra.tie is not None else None
        self._mark.update(batch.column(extra.inc), tie)
        if extra.tie is None:
            self._mark.inclusive = False
        self._position = MysqlPosition(poll=self._mark.to_json())
        return self._reader.output_batch(batch, errors)


def _installed_text(driver: str) -> bool:
    try:
        __import__("MySQLdb" if driver == "mysqlclient" else "pymysql")
    except ImportError:
        return False
    return True


def _concat(
    parts: list[tuple[pa.RecordBatch, dict[int, str]]],
) -> tuple[pa.RecordBatch, dict[int, str]]:
    """Batches (with their row errors) as one."""
    if len(parts) == 1:
        return parts[0]
    errors: dict[int, str] = {}
    offset = 0
    for batch, bad in parts:
        for row, error in bad.items():
            errors[offset + row] = error
        offset += batch.num_rows
    table = pa.Table.from_batches([b for b, _ in parts])
    return table.combine_chunks().to_batches()[0] if offset else parts[0][0], errors


def _cut_ties(
    carry: list[tuple[pa.RecordBatch, dict[int, str]]], key: str
) -> tuple[
    tuple[pa.RecordBatch, dict[int, str]] | None, list[tuple[pa.RecordBatch, dict[int, str]]], Any
]:
    """Split buffered rows (ordered by ``key``) before their last run of equal keys: the rows
    before can be emitted (their position is exact), the run waits for more rows."""
    rows, errors = _concat(carry)
    keys = rows.column(key)
    count = rows.num_rows
    last = keys[count - 1]
    same = pc.fill_null(pc.equal(keys, last), False).to_numpy(zero_copy_only=False)
    differ = np.flatnonzero(~same)
    if differ.size == 0:
        return None, [(rows, errors)], None
    cut = int(differ[-1]) + 1
    head = rows.slice(0, cut)
    tail = rows.slice(cut)
    head_errors = {r: e for r, e in errors.items() if r < cut}
    tail_errors = {r - cut: e for r, e in errors.items() if r >= cut}
    return (head, head_errors), [(tail, tail_errors)], python_value(keys, cut - 1)
