"""One open ``sqlreader`` split: keyset pages (after a NULL-key phase), or one ordered stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select
from typing_extensions import override

from libs.sql import decode_value, encode_value
from readers.sql.source import START
from readers.sql.state import Mode, SqlPosition, SqlSplit
from sync.contract import Position, Split, SplitReader

if TYPE_CHECKING:
    from readers.sql.reader import SqlReader

__all__ = ["SqlSplitReader"]


class SqlSplitReader(SplitReader):
    """One open split: keyset pages (after a NULL-key phase), or one ordered stream.

    Positions (:class:`SqlPosition`): ``None`` (start), ``nulls`` (NULL-key rows emitted),
    ``after`` (keyset), ``offset`` (ordered stream). :meth:`snapshot` returns the position after
    the last batch :meth:`batches` yielded.
    """

    def __init__(self, reader: SqlReader, split: Split, position: SqlPosition | None) -> None:
        self._reader = reader
        self._split = split
        self._data: SqlSplit = split.data
        self._position: SqlPosition | None = position
        self._conn: Connection | None = None
        self._result: Any = None

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        try:
            yield from self.read_phases(self._data.mode)
        finally:
            self.release()

    @override
    def snapshot(self) -> Position:
        return self._position

    @override
    def close(self) -> None:
        self.release()

    # -- phases ------------------------------------------------------------------------------

    # -- hooks: a dialect plugin overrides the phases and may add modes --------------------

    def read_phases(self, mode: Mode) -> Iterator[pa.RecordBatch | None]:
        """The phases of a split of ``mode``: :meth:`read_keyset` (after :meth:`read_stream`
        of the NULL keys), :meth:`read_stream` or :meth:`read_custom`."""
        if mode == "keyset":
            if self._data.nulls and not self.in_keyset():
                yield from self.read_stream(nulls=True)
            yield from self.read_keyset()
        elif mode == "stream":
            yield from self.read_stream(nulls=False)
        else:
            yield from self.read_custom()

    def in_keyset(self) -> bool:
        """Whether the position is in the keyset phase (the NULL keys are done)."""
        return self._position is not None and self._position.in_keyset

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._reader.engine().connect()
        return self._conn

    def release(self) -> None:
        """Close the open result and connection."""
        if self._result is not None:
            try:
                self._result.close()
            finally:
                self._result = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def read_keyset(self) -> Iterator[pa.RecordBatch | None]:
        """Keyset pages after the position's key (a page ending in a run of equal keys is
        completed first)."""
        reader = self._reader
        source = reader.source()
        assert source.key is not None
        key_index, unique = source.key_index, source.key.unique
        after: Any = START
        if self.in_keyset():
            after = decode_value(self._position.after)  # type: ignore[union-attr]
        limit = reader.page_rows
        conn = self._connection()
        stopping = reader.ctx.stopping
        while not stopping.is_set():
            try:
                rows = list(reader.fetch_rows(conn, reader.page_query(self._split, after, limit)))
                full = len(rows) == limit
                if not rows:
                    return
                last = rows[-1][key_index]
                if full and not unique:
                    cut = len(rows)
                    while cut > 0 and rows[cut - 1][key_index] == last:
                        cut -= 1
                    ties = reader.fetch_rows(conn, reader.tie_query(self._split, last))
                    rows = rows[:cut] + list(ties)
            finally:
                conn.rollback()
            batch = reader.to_batch(rows)
            after = last
            self._position = reader.position_type(after=encode_value(last))
            yield batch if batch.num_rows else None
            if not full:
                return

    def read_stream(self, *, nulls: bool) -> Iterator[pa.RecordBatch | None]:
        """One ordered stream (``nulls``: the NULL-key rows), skipping the rows read."""
        reader = self._reader
        tag = "nulls" if nulls else "offset"
        resumable = reader.stream_resumable()
        offset = 0
        done = getattr(self._position, tag, None) if resumable else None
        if done is not None:
            offset = int(done)
        query = reader.stream_query(self._split, offset, nulls=nulls)
        yield from self._run_stream(query, tag if resumable else None, offset)

    def read_custom(self) -> Iterator[pa.RecordBatch | None]:
        """customSql without key, with one cursor (not resumable)."""
        yield from self._run_stream(self._reader.custom_query(), None, 0)

    def _run_stream(
        self, query: Select[Any], tag: str | None, offset: int
    ) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        limit = reader.page_rows
        conn = self._connection()
        self._result = conn.execution_options(stream_results=True, yield_per=limit).execute(query)
        for rows in self._result.partitions(limit):
            if reader.ctx.stopping.is_set():
                return
            batch = reader.to_batch(rows)
            offset += len(rows)
            self._position = reader.position_type(**{tag: offset}) if tag is not None else None
            yield batch if batch.num_rows else None
        self._result.close()
        self._result = None
        conn.rollback()
