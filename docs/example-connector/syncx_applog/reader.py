"""``applogreader``: the records of append-only JSON-lines log files, resumable by byte offset.

One split per file (``path``: files or globs). A split reads complete lines only: a last line
without its ``\\n`` is being appended and waits for the next read. Its position is the byte
offset after the last line it consumed, with the file's inode, so that a restore continues at
the next line and refuses a file that was replaced (rotated) in between. Each line is a JSON
object; ``column`` says which keys become columns and their types. A line that is not a JSON
object, or a value that does not convert, is a dirty record (counted against ``errorLimit``)
and reading goes on. With ``follow: true`` the reader keeps waiting for new lines (a stream)
and yields an idle tick about twice a second while nothing comes.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field
from typing_extensions import override

from sync.contract import DirtyRecord, JobContext, Reader, Split, SplitReader, State
from sync.errors import FatalError, JobFileError
from sync.model import Params

__all__ = ["AppLogReader", "AppLogReaderParams", "ByteOffset", "LogColumn", "LogFile"]

WHERE = "job.content[0].reader.parameter"
TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
}
IDLE_SECONDS = 0.5
"""How long a following split waits for new lines before it yields an idle tick."""
READ_BYTES = 1 << 16


class LogColumn(Params):
    """One key of the log records, read as a column."""

    name: str = Field(description="The key in each JSON line.")
    type: Literal["string", "bigint", "double", "boolean"] = "string"


class AppLogReaderParams(Params):
    """``parameter`` of ``applogreader``."""

    path: str | list[str] = Field(description="Log files or globs (a list for several).")
    column: list[LogColumn] = Field(min_length=1, description="The keys to read, in order.")
    follow: bool = Field(
        default=False,
        validation_alias=AliasChoices("follow", "tail"),
        description="Keep reading what is appended (an endless stream); false: stop at the end.",
    )


@dataclass(frozen=True)
class LogFile(State):
    """Split data: the log file a split reads."""

    path: str


@dataclass(frozen=True)
class ByteOffset(State):
    """A split's position: the byte offset after the last line consumed, and the file's inode.

    Version 1 stored the offset alone; version 2 added the inode (``None`` when unknown: a
    position upgraded from version 1 is not checked against a replaced file).
    """

    VERSION = 2

    offset: int
    inode: int | None = None

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Version 1 → 2: the inode is unknown."""
        if version == 1:
            return {**data, "inode": None}
        return super().upgrade(data, version)


class AppLogReader(Reader[AppLogReaderParams]):
    """Reads JSON-lines log files, one split per file."""

    Parameters = AppLogReaderParams
    position_type = ByteOffset
    split_type = LogFile

    def __init__(self, params: AppLogReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.arrow_schema = pa.schema([(c.name, TYPES[c.type]) for c in params.column])

    def files(self) -> list[str]:
        """Every file ``path`` names, sorted and without repeats."""
        patterns = [self.params.path] if isinstance(self.params.path, str) else self.params.path
        found = {match for pattern in patterns for match in glob.glob(pattern)}
        return sorted(path for path in found if Path(path).is_file())

    @override
    def check(self) -> None:
        if not self.files():
            msg = f"{WHERE}.path: no log file matches {self.params.path}"
            raise JobFileError(msg)

    @override
    def schema(self) -> pa.Schema:
        return self.arrow_schema

    @property
    @override
    def bounded(self) -> bool:
        return not self.params.follow

    @override
    def plan(self, parallelism: int) -> list[Split]:
        return [Split(f"log-{i}", LogFile(path)) for i, path in enumerate(self.files())]

    @override
    def open(self, split: Split, position: ByteOffset | None) -> SplitReader:
        return _LogSplit(self, split.data, position or ByteOffset(0))

    def to_batch(self, lines: list[bytes], path: str) -> pa.RecordBatch:
        """The lines' records as a batch; lines that do not convert go to the dirty sink."""
        rows: list[dict[str, Any]] = []
        for line in lines:
            record = self._record(line, path)
            if record is not None:
                rows.append(record)
        return pa.RecordBatch.from_pylist(rows, schema=self.arrow_schema)

    def _record(self, line: bytes, path: str) -> dict[str, Any] | None:
        text = line.decode("utf-8", errors="replace")
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            self.ctx.report_dirty(DirtyRecord({"line": text}, f"{path}: not a JSON object"))
            return None
        record = {c.name: value.get(c.name) for c in self.params.column}
        for column in self.params.column:
            try:
                pa.array([record[column.name]], TYPES[column.type])
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                error = f"{path}: {column.name} is not a {column.type}"
                self.ctx.report_dirty(DirtyRecord(record, error, "conversion", column.name))
                return None
        return record


class _LogSplit(SplitReader):
    """One open log file, read from a byte offset."""

    def __init__(self, reader: AppLogReader, split: LogFile, start: ByteOffset) -> None:
        self._reader = reader
        self._path = split.path
        try:
            self._file: IO[bytes] = Path(split.path).open("rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError as exc:
            msg = f"{WHERE}.path: the log file {split.path} is gone"
            raise FatalError(msg) from exc
        self._inode = os.fstat(self._file.fileno()).st_ino
        if start.inode is not None and start.inode != self._inode:
            self._file.close()
            msg = (
                f"{WHERE}.path: {split.path} was replaced since the checkpoint (log rotation?); "
                "restore is impossible, start the job anew"
            )
            raise FatalError(msg)
        self._offset = start.offset
        self._file.seek(self._offset)
        self._pending = b""

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        ctx = self._reader.ctx
        while not ctx.stopping.is_set():
            lines = self._complete_lines(ctx.batch_rows)
            if lines:
                batch = self._reader.to_batch(lines, self._path)
                yield batch if batch.num_rows else None
            elif not self._reader.params.follow:
                return
            else:
                ctx.stopping.wait(IDLE_SECONDS)
                yield None

    def _complete_lines(self, limit: int) -> list[bytes]:
        """Up to ``limit`` complete lines after the offset (the offset moves past them)."""
        lines: list[bytes] = []
        while len(lines) < limit:
            end = self._pending.find(b"\n")
            if end < 0:
                chunk = self._file.read(READ_BYTES)
                if not chunk:
                    break
                self._pending += chunk
                continue
            line, self._pending = self._pending[:end], self._pending[end + 1 :]
            self._offset += end + 1
            if line.strip():
                lines.append(line)
        return lines

    @override
    def snapshot(self) -> ByteOffset:
        return ByteOffset(self._offset, self._inode)

    @override
    def close(self) -> None:
        self._file.close()
