"""``streamwriter`` (``streamsink``): prints rows to stdout, or discards them.

With ``print: true`` each row is one line of delimited text (``fieldDelimiter``, default ``,``),
NULL printed as empty. It writes as rows arrive, so it is at-least-once: rows printed after the
last checkpoint are printed again on a restore.
"""

from __future__ import annotations

import sys
import threading
from typing import ClassVar

import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field
from typing_extensions import override

from sync.contract import DirtyRecord, Handle, Semantic, Writer, WriterTask
from sync.model import Params

__all__ = ["StreamWriter", "StreamWriterParams", "WriterColumn"]

_PRINT_LOCK = threading.Lock()


class WriterColumn(Params):
    """A column a writer receives: its name and optionally its type."""

    name: str
    type: str | None = None


class StreamWriterParams(Params):
    """``parameter`` of ``streamwriter``."""

    print: bool = Field(default=False, description="Print rows to stdout; otherwise discard.")
    column: list[WriterColumn | str] = Field(
        default_factory=list, description="Columns to print, by name (default: all)."
    )
    field_delimiter: str = Field(default=",", min_length=1, max_length=1)


class StreamWriter(Writer[StreamWriterParams]):
    """Prints or discards."""

    Parameters = StreamWriterParams
    semantic: ClassVar[Semantic] = "at-least-once"

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        names = [c if isinstance(c, str) else c.name for c in self.params.column]
        return _StreamTask(self.params, names)


class _StreamTask(WriterTask):
    def __init__(self, params: StreamWriterParams, names: list[str]) -> None:
        self._params = params
        self._names = names
        self._options = pacsv.WriteOptions(
            include_header=False, delimiter=params.field_delimiter, quoting_style="none"
        )

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if not self._params.print:
            return []
        if self._names:
            batch = batch.select([n for n in self._names if n in batch.schema.names])
        with _PRINT_LOCK:
            sys.stdout.flush()
            pacsv.write_csv(batch, sys.stdout.buffer, self._options)
            sys.stdout.buffer.flush()
        return []

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        return None

    @override
    def commit(self, handle: Handle) -> None:
        return None

    @override
    def abort(self, handle: Handle) -> None:
        return None
