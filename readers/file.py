"""``filereader``: CSV, JSON lines or Parquet files, one split per file, resumable by row.

``path`` is a file, a folder (its visible files: names starting with ``.`` or ``_`` are skipped,
as Hive does) or a glob, or a list of these. A split's position is the number of rows consumed
from its file, so a restore continues at the next row. With typed ``column`` entries, values are
converted to those types and a value that does not convert is a dirty record (the rest of the
file goes on).

The filesystem (:meth:`FileReader.make_filesystem`), the split plan and the column selection
(:meth:`FileReader.select`) are hooks: ``hdfsreader`` reads the same way through WebHDFS.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO, ClassVar, Literal, TypeVar

import pyarrow as pa
import pyarrow.orc as paorc
import pyarrow.parquet as pq
from pydantic import AliasChoices, Field
from typing_extensions import override

from libs.formats import format_named
from libs.formats.base import FileFormat
from libs.fs import FileInfo, FileSystem, LocalFileSystem, expand_paths
from libs.types import arrow_type, conform
from readers.stream import RowsRead
from sync.contract import Estimate, JobContext, Reader, Split, SplitReader, State
from sync.errors import JobFileError
from sync.model import Params

__all__ = ["BaseFileReader", "FileColumn", "FileReader", "FileReaderParams", "FileSplitData"]

WHERE = "job.content[0].reader.parameter"
SAMPLE_FILES = 64
"""Files an estimate looks into at most (on HDFS each is a request)."""
_SEQUENTIAL = ("txt", "jsonl")
"""Formats syncx reads front to back itself: the file position says how far a split is."""
_CSV_SAMPLE = 1 << 20
P = TypeVar("P", bound=Params)


class FileColumn(Params):
    """A column to read: by ``name`` or by ``index`` (0-based), with an optional type."""

    name: str | None = None
    index: Annotated[int, Field(ge=0)] | None = None
    type: str | None = None


class FileReaderParams(Params):
    """``parameter`` of ``filereader``."""

    path: str | list[str] = Field(description="File, folder or glob (or a list of them).")
    file_type: Literal["parquet", "csv", "json", "jsonl"] = Field(
        default="parquet", validation_alias=AliasChoices("fileType", "format", "file_type")
    )
    column: list[FileColumn | str] = Field(default_factory=list, description="Default: all.")
    field_delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="CSV: the first line names the columns.")
    filter_regex: str | None = Field(default=None, description="Only files whose name matches.")


@dataclass(frozen=True)
class FileSplitData(State):
    """One file to read (a path on the reader's filesystem)."""

    path: str


class BaseFileReader(Reader[P]):
    """Files as splits, one per file, on any :class:`~libs.fs.FileSystem` (hooks below)."""

    position_type = RowsRead
    split_type: ClassVar[type[State] | None] = FileSplitData
    format: FileFormat
    columns: list[FileColumn]

    def __init__(self, params: P, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._fs: FileSystem | None = None

    def make_filesystem(self) -> FileSystem:
        """The filesystem the files are on (created on first use: no I/O in constructors)."""
        return LocalFileSystem()

    @property
    def fs(self) -> FileSystem:
        """The filesystem, created on first use."""
        if self._fs is None:
            self._fs = self.make_filesystem()
        return self._fs

    def patterns(self) -> list[str]:
        """The files, folders and globs to read."""
        raise NotImplementedError

    def filter_regex(self) -> str | None:
        """Only files whose name matches this are read."""
        return None

    def files(self) -> list[FileInfo]:
        """Every file to read, in order, after ``filterRegex``."""
        found = expand_paths(self.fs, self.patterns())
        regex = self.filter_regex()
        if regex:
            compiled = re.compile(regex)
            found = [f for f in found if compiled.search(f.path.rsplit("/", 1)[-1])]
        return found

    @override
    def check(self) -> None:
        if not self.files():
            shown = ", ".join(self.patterns())
            msg = f"{WHERE}.path: no files match {shown}"
            raise JobFileError(msg)

    @override
    def plan(self, parallelism: int) -> list[Split]:
        return [
            Split(f"file-{i}", FileSplitData(path=info.path)) for i, info in enumerate(self.files())
        ]

    @override
    def estimate(self, splits: Sequence[Split]) -> Estimate:
        """Hive text and JSON lines are read front to back: the files' sizes, and the splits
        report how far into their file they are. Parquet and ORC (whole row groups at a time)
        and CSV (read ahead in the background) count rows instead: from the footers, or for CSV
        from the lines in the first MiB; exact up to :data:`SAMPLE_FILES` files, beyond that the
        rows per byte of that many of them times the size of all."""
        sizes = {info.path: info.size for info in self.files()}
        paths = sorted({split.data.path for split in splits})
        total = sum(sizes.get(path, 0) for path in paths)
        kind = self.format.extension
        if kind in _SEQUENTIAL:
            return Estimate(bytes=total)
        sample = paths[:: max(1, math.ceil(len(paths) / SAMPLE_FILES))]
        rows = sampled = 0
        header = bool(splits) and bool(self.read_options(splits[0]).get("header", False))
        for path in sample:
            with self.fs.open_read(path) as stream:
                rows += _rows_of(kind, stream, sizes.get(path, 0), header)
            sampled += sizes.get(path, 0)
        if len(sample) < len(paths) and sampled:
            rows = round(rows * total / sampled)
        return Estimate(rows=rows)

    @override
    def open(self, split: Split, position: RowsRead | None) -> SplitReader:
        return _FileSplit(self, split, position.rows if position else 0)

    def read_options(self, split: Split) -> dict[str, object]:
        """Options for the format's reader of one split."""
        del split
        return {}

    def select(self, batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
        """The configured columns of a batch read from ``path``, converted to their types;
        values that do not convert are reported as dirty and their rows dropped."""
        if not self.columns:
            return batch
        arrays, fields = [], []
        for position, column in enumerate(self.columns):
            index = (
                column.index
                if column.index is not None
                else batch.schema.get_field_index(column.name or "")
            )
            if index < 0 or index >= batch.num_columns:
                what = column.name if column.index is None else f"index {column.index}"
                msg = f"{WHERE}.column[{position}]: {what} not in {path}"
                raise JobFileError(msg)
            arrays.append(batch.column(index))
            name = column.name or batch.schema.field(index).name
            kind = arrow_type(column.type) if column.type else batch.schema.field(index).type
            fields.append(pa.field(name, kind))
        selected = pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields])
        return self.convert(selected, pa.schema(fields))

    def convert(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """Cast to ``schema``; rows that do not convert go to the dirty sink."""
        converted, dirty = conform(batch, schema)
        for record in dirty:
            self.ctx.report_dirty(record)
        return converted


class FileReader(BaseFileReader[FileReaderParams]):
    """Reads local files as splits."""

    Parameters = FileReaderParams

    def __init__(self, params: FileReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.format = format_named(params.file_type)
        self.columns = [FileColumn(name=c) if isinstance(c, str) else c for c in params.column]

    @override
    def patterns(self) -> list[str]:
        return [self.params.path] if isinstance(self.params.path, str) else list(self.params.path)

    @override
    def filter_regex(self) -> str | None:
        return self.params.filter_regex

    @override
    def read_options(self, split: Split) -> dict[str, object]:
        options: dict[str, object] = {
            "header": self.params.header,
            "fieldDelimiter": self.params.field_delimiter,
        }
        typed = [c for c in self.columns if c.type]
        if self.params.file_type == "csv" and typed:
            options["types"] = {c.name: pa.string() for c in typed if c.name}
        return options


def _rows_of(kind: str, stream: BinaryIO, size: int, header: bool) -> int:
    """The rows of a file: a Parquet or ORC footer's count; a CSV file's lines in its first
    MiB, scaled to its size."""
    if kind == "parquet":
        return int(pq.ParquetFile(stream).metadata.num_rows)
    if kind == "orc":
        return int(paorc.ORCFile(stream).nrows)
    head = stream.read(_CSV_SAMPLE)
    lines = head.count(b"\n") + (1 if head and not head.endswith(b"\n") else 0)
    if head and size > len(head):
        lines = round(lines * size / len(head))
    return max(0, lines - int(header))


class _FileSplit(SplitReader):
    def __init__(self, reader: BaseFileReader[Any], split: Split, start: int) -> None:
        self._reader = reader
        self._split = split
        self._path = split.data.path
        self._rows = start
        self._file = reader.fs.open_read(self._path)
        self._sequential = reader.format.extension in _SEQUENTIAL

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        options = reader.read_options(self._split)
        for batch in reader.format.read(self._file, self._rows, reader.ctx.batch_rows, options):
            selected = reader.select(batch, self._path)
            self._rows += batch.num_rows
            yield selected

    @override
    def snapshot(self) -> RowsRead:
        return RowsRead(rows=self._rows)

    @override
    def progress(self) -> int | None:
        """How far into a Hive text or JSON lines file reading has come (other formats count
        rows instead)."""
        return self._file.tell() if self._sequential else None

    @override
    def close(self) -> None:
        self._file.close()
