"""One writer subtask: conforms rows to the target's columns; its strategy's session writes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from typing_extensions import override

from libs import cdc
from libs.types import conform
from sync.contract import DirtyRecord, Handle, WriterTask
from sync.errors import JobFailedError

if TYPE_CHECKING:
    from writers.sql.writer import SqlWriter

__all__ = ["SqlWriterTask"]


class SqlWriterTask(WriterTask):
    """One writer subtask: CDC batches and conformed rows go to its :class:`Session`."""

    def __init__(self, writer: SqlWriter, subtask: int) -> None:
        self.writer = writer
        self.subtask = subtask
        self._names: list[str] | None = None
        configured = writer.params.column_names()
        if configured is not None:
            self._names = writer.resolve_columns(configured, configured=True)
        self.session = writer.strategy.session(self)

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if batch.num_rows == 0:
            return []
        if cdc.is_cdc(batch.schema):
            return self.session.write_changes(batch)
        if self.writer.routes_by_source():
            msg = (
                f"{self.writer.param_path}.table '*' routes changes by their source table: it "
                "needs CDC input (binlogreader), not plain rows"
            )
            raise JobFailedError(msg)
        batch, dirty = self.conform(batch)
        if batch.num_rows == 0:
            return dirty
        return dirty + self.session.write_rows(batch)

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        return self.session.prepare(checkpoint_id)

    @override
    def commit(self, handle: Handle) -> None:
        self.writer.commit_handle(handle)
        self.session.committed(handle)

    @override
    def abort(self, handle: Handle) -> None:
        self.writer.abort_handle(handle)
        self.session.aborted(handle)

    @override
    def discard(self) -> None:
        self.session.discard()

    @override
    def close(self) -> None:
        self.session.close()

    def conform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
        """``batch`` under the target's column names and types; rows that do not convert are
        dirty. Times of day and intervals (DuckDB's ``transformSql`` turns durations into
        them) going into duration columns (MySQL ``TIME``) become durations first."""
        writer = self.writer
        target = writer.target()
        if self._names is None:
            self._names = writer.resolve_columns(batch.schema.names, configured=False)
            writer.check_key_written(self._names, configured=False)
        names = self._names
        if batch.num_columns != len(names):
            msg = (
                f"the reader delivers {batch.num_columns} column(s) {batch.schema.names} but "
                f"{writer.param_path}.column names {len(names)} {names}"
            )
            raise JobFailedError(msg)
        arrays = list(batch.columns)
        for index, name in enumerate(names):
            if pa.types.is_duration(target.fields[name].type):
                arrays[index] = _as_duration(arrays[index])
        renamed = pa.RecordBatch.from_arrays(arrays, names=names)
        return conform(renamed, pa.schema([target.fields[n] for n in names]))


def _as_duration(array: pa.Array) -> pa.Array:
    """A time of day or a (day-time) interval as ``duration('us')``; other types as they are."""
    t = array.type
    if pa.types.is_time(t):
        return array.cast(pa.time64("us")).cast(pa.int64()).cast(pa.duration("us"))
    if t == pa.month_day_nano_interval():
        layout = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
        values = np.frombuffer(array.buffers()[1], dtype=layout, count=len(array) + array.offset)[
            array.offset :
        ]
        micros = values["days"].astype(np.int64) * 86_400_000_000 + values["nanos"] // 1000
        mask = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
        return pa.array(micros, type=pa.duration("us"), mask=mask)
    return array
