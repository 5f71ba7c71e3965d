"""The ``binlogreader`` plugin: plans the snapshot and stream splits and opens them."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pyarrow as pa
from typing_extensions import override

from libs.cdc import touched_rows
from readers.binlog.params import BinlogReaderParams, BinlogStart
from readers.binlog.positions import (
    BinlogPosition,
    SnapshotPosition,
    SnapshotSplit,
    SplitData,
    SplitPosition,
    StreamSplit,
    binlog_bytes,
)
from readers.binlog.server import BinlogServer, query
from readers.binlog.snapshot import SnapshotSplitReader, SnapshotTable
from readers.binlog.stream import StreamSplitReader
from sync.contract import (
    CompletedCheckpoint,
    Estimate,
    JobContext,
    Position,
    Reader,
    Split,
    SplitReader,
    State,
    encode,
)
from sync.errors import JobFailedError, JobFileError

__all__ = ["BinlogReader"]

log = logging.getLogger(__name__)


class BinlogReader(Reader[BinlogReaderParams]):
    """Row changes of a MySQL/MariaDB binlog (see :mod:`readers.binlog`)."""

    Parameters = BinlogReaderParams
    position_type: ClassVar[type[State] | None] = SplitPosition
    split_type: ClassVar[type[State] | None] = SplitData

    def __init__(self, params: BinlogReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.server = BinlogServer(params)
        self._lock = threading.Lock()
        self._snapshot_tables: dict[str, SnapshotTable] = {}
        self._stream_reader: StreamSplitReader | None = None
        self._stream_start: BinlogPosition | None = None
        self._checkpointed = threading.Condition()
        self._done_in_checkpoint: tuple[int, frozenset[str]] | None = None
        self.log_sizes: dict[str, int] = {}
        """Binlog file → size, as :meth:`estimate` found them (for the stream's progress)."""

    # -- framework ---------------------------------------------------------------------------

    @override
    def notify_checkpoint_complete(self, checkpoint: CompletedCheckpoint) -> None:
        """The stream's handover waits for a stored checkpoint that has the snapshot done."""
        with self._checkpointed:
            self._done_in_checkpoint = (checkpoint.id, checkpoint.done)
            self._checkpointed.notify_all()

    def covered_by_checkpoint(self, splits: frozenset[str], timeout: float) -> int | None:
        """The id of a stored checkpoint of this attempt in which ``splits`` are all done, or
        ``None`` when there is none yet after waiting up to ``timeout`` seconds."""
        with self._checkpointed:
            self._checkpointed.wait_for(
                lambda: (
                    self._done_in_checkpoint is not None and splits <= self._done_in_checkpoint[1]
                ),
                timeout,
            )
            latest = self._done_in_checkpoint
        return latest[0] if latest is not None and splits <= latest[1] else None

    @property
    @override
    def bounded(self) -> bool:
        return self.params.stop_at is not None

    @override
    def check(self) -> None:
        problems = self._setting_problems() + self.server.problems()
        if problems:
            raise JobFailedError("binlogreader cannot start:\n  - " + "\n  - ".join(problems))

    @override
    def plan(self, parallelism: int) -> list[Split]:
        server = self.server
        conn = server.connect()
        try:
            flavor = server.flavor(conn)
            resume = self.ctx.job_state.get("binlog")
            start: BinlogPosition | None = None
            if resume:
                saved = BinlogPosition.from_json(resume)
                problem = server.purged(conn, flavor, saved)
                if problem is None:
                    log.info(
                        "binlogreader: continuing from the last run's end (%s)", saved.describe()
                    )
                    start = saved
                elif self.params.snapshot != "when_needed":
                    msg = (
                        f"the last run's end position is no longer on the server: {problem}. "
                        "Set snapshot: when_needed to copy the tables again and stream on from "
                        "there, or start from another position (start)"
                    )
                    raise JobFailedError(msg)
                else:
                    log.warning("binlogreader: %s; taking a new snapshot (when_needed)", problem)
            elif (
                self.params.snapshot == "when_needed"
                and self.params.start is not None
                and not self.params.start.is_empty()
            ):
                start = server.configured_start(conn, flavor)
                problem = server.purged(conn, flavor, start)
                if problem is not None:
                    log.warning("binlogreader: %s; taking a snapshot (when_needed)", problem)
                    start = None
            snapshot = start is None and self.params.snapshot in ("initial", "when_needed")
            if not snapshot:
                if start is None:
                    start = server.configured_start(conn, flavor)
                return [Split("binlog", StreamSplit(start=start.to_json()))]
            handover, tables = server.snapshot_point(conn, flavor)
        finally:
            conn.close()
        splits: list[Split] = []
        for db, table in tables:
            copy = self.snapshot_table(db, table)
            for inner in copy.reader.plan(parallelism):
                data = SnapshotSplit(db, table, inner.to_json(), handover.to_json())
                splits.append(Split(f"snapshot:{db}.{table}:{inner.id}", data))
        log.info(
            "binlogreader: snapshot of %d table(s) in %d split(s), then the binlog from %s",
            len(tables),
            len(splits),
            handover.describe(),
        )
        stream = StreamSplit(start=handover.to_json(), snapshot=[s.id for s in splits])
        return [*splits, Split("binlog", stream)]

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate | None:
        """A bounded (``stopAt``) run: with a snapshot, the rows of its tables (their readers'
        estimates); else the binlog bytes from the stream's start to its end (the end now for
        ``now`` and timestamps)."""
        snapshots = [s.data for s in splits if isinstance(s.data, SnapshotSplit)]
        if snapshots:
            rows = 0
            for data in snapshots:
                reader = self.snapshot_table(data.db, data.table).reader
                found = reader.estimate([Split.from_json(data.inner, reader.split_type)])
                rows += (found.rows or 0) if found is not None else 0
            return Estimate(rows=rows)
        stream = next((s.data for s in splits if isinstance(s.data, StreamSplit)), None)
        start = BinlogPosition.from_json(stream.start) if stream is not None else None
        if start is None or start.file is None or start.pos is None:
            return None
        conn = self.server.connect()
        try:
            self.log_sizes = {str(r[0]): int(r[1]) for r in query(conn, "SHOW BINARY LOGS")}
            status = query(conn, "SHOW MASTER STATUS")
        finally:
            conn.close()
        stop = self.params.stop_at
        end = (str(status[0][0]), int(status[0][1]))
        if isinstance(stop, BinlogStart) and stop.journal_name is not None:
            end = (stop.journal_name, stop.position or 4)
        return Estimate(bytes=binlog_bytes(self.log_sizes, (start.file, start.pos), end))

    @override
    def open(self, split: Split, position: Position | None) -> SplitReader:
        data = split.data
        if isinstance(data, SnapshotSplit):
            assert position is None or isinstance(position, SnapshotPosition)
            copy = self.snapshot_table(data.db, data.table)
            form = self.params.layout()
            return SnapshotSplitReader(copy, data, position, form, self.ctx.report_dirty)
        assert isinstance(data, StreamSplit)
        assert position is None or isinstance(position, BinlogPosition)
        return StreamSplitReader(self, data, position)

    @override
    def next_job_state(self, positions: dict[str, Position]) -> dict[str, Any] | None:
        """Where the next run continues: the stream's end. The runtime records a position only
        after a batch, so a stream that ended in this process reports its own (it may have moved
        past transactions of other tables, or emitted nothing at all)."""
        stream = self._stream_reader
        end = stream.snapshot() if stream is not None and stream.finished else None
        if end is not None:
            return {"binlog": end.to_json()}
        position = positions.get("binlog") or self._stream_start
        if position is None:
            return None
        return {"binlog": encode(position)}

    @override
    def tables(self) -> dict[str, Reader[Any]]:
        """Each captured table and the ``mysqlreader`` of its snapshot (closed with this one)."""
        conn = self.server.connect()
        try:
            captured = self.server.captured_tables(conn)
        finally:
            conn.close()
        return {f"{db}.{table}": self.snapshot_table(db, table).reader for db, table in captured}

    @override
    def changes_since(
        self, splits: Sequence[Split], checkpoint: CompletedCheckpoint
    ) -> Iterator[tuple[str, pa.Table]]:
        """The rows the binlog changed from the checkpoint's stream position to the binlog's
        end when the iteration starts, of every captured table and every kind of change
        (whatever ``cat`` says), read by a stream of its own (another replica id)."""
        return self._changes_from(self._checkpointed_start(splits, checkpoint))

    def _checkpointed_start(
        self, splits: Sequence[Split], checkpoint: CompletedCheckpoint
    ) -> BinlogPosition:
        """The stream position ``checkpoint`` holds, at its transaction boundary (the changes
        emitted after it are read again: a superset); before the stream emitted anything, its
        start, once every snapshot split is done."""
        stream = next((s for s in splits if isinstance(s.data, StreamSplit)), None)
        if stream is None:
            msg = f"checkpoint {checkpoint.id} holds no binlog stream"
            raise JobFileError(msg)
        position = checkpoint.positions.get(stream.id)
        if isinstance(position, BinlogPosition):
            return dataclasses.replace(position, emitted={})
        pending = [s for s in stream.data.snapshot if s not in checkpoint.done]
        if pending:
            msg = (
                f"checkpoint {checkpoint.id} was taken while the snapshot was being copied "
                f"({len(pending)} of {len(stream.data.snapshot)} split(s) to go), so its target "
                "holds part of the tables; verify once the snapshot is done and checkpointed"
            )
            raise JobFileError(msg)
        return BinlogPosition.from_json(stream.data.start)

    def _changes_from(self, start: BinlogPosition) -> Iterator[tuple[str, pa.Table]]:
        conn = self.server.connect()
        try:
            end = self.server.current(conn, self.server.flavor(conn))
        finally:
            conn.close()
        stop = BinlogStart.model_validate({"journalName": end.file, "position": end.pos})
        copy = BinlogReader(
            self.params.model_copy(
                update={
                    "stop_at": stop,
                    "cat": None,
                    "ddl": "apply",
                    "slave_id": None,
                    "snapshot": "never",
                }
            ),
            self.ctx,
        )
        opened = copy.open(Split("binlog", StreamSplit(start=start.to_json())), start)
        try:
            for batch in opened.batches():
                found = touched_rows(batch) if batch is not None else None
                if found is not None:
                    yield found
        finally:
            opened.close()
            copy.close()

    def stream_opened(self, reader: StreamSplitReader, start: BinlogPosition) -> None:
        """The stream split was opened (in this process) at ``start``."""
        with self._lock:
            self._stream_reader = reader
            self._stream_start = start

    @override
    def close(self) -> None:
        for copy in self._snapshot_tables.values():
            copy.reader.close()
        self._snapshot_tables.clear()

    # -- shared with the split readers -------------------------------------------------------

    def snapshot_table(self, db: str, table: str) -> SnapshotTable:
        """The copy of ``db.table`` (one ``mysqlreader`` per table, made on first use)."""
        key = f"{db}.{table}"
        with self._lock:
            copy = self._snapshot_tables.get(key)
            if copy is None:
                copy = SnapshotTable.of(self.server, db, table, self.ctx)
                self._snapshot_tables[key] = copy
            return copy

    # -- implementation ----------------------------------------------------------------------

    def _setting_problems(self) -> list[str]:
        readers, writers = self.ctx.readers, self.ctx.writers
        problems = []
        if writers > 1 and readers != writers:
            problems.append(
                f"setting.speed: {readers} reader and {writers} writer channels "
                "spread the changes of one table over several writers, which would apply them "
                "out of order; use writerChannel 1 or as many writer as reader channels"
            )
        restore = self.ctx.restore
        if (
            self.params.snapshot != "never"
            and readers > 1
            and not (restore.is_restore or restore.checkpoint_interval)
        ):
            problems.append(
                "snapshot with several reader channels hands over to the binlog at a "
                "checkpoint: set setting.restore.isRestore: true (or readerChannel 1)"
            )
        if self.params.snapshot != "never" and (
            (restore.restore_column_name or "").strip()
            or (restore.is_restore and restore.restore_column_index is not None)
        ):
            problems.append(
                "setting.restore.restoreColumnName/restoreColumnIndex: the snapshot copies each "
                "table by its own primary key, so one resume column cannot apply to every "
                "table; remove them"
            )
        return problems
