"""``hdfsreader``: Hive text, ORC or Parquet files on HDFS (or the local disk), with ChunJun's
parameters; resumable by (file, row).

``defaultFS`` + ``hadoopConfig`` name the cluster as for ``hdfswriter`` (:mod:`libs.webhdfs`).
``path`` is a file, a folder (its visible files, recursively: names starting with ``.`` or ``_``
are skipped, as Hive does), a glob, or a list of these; ``fileName`` is appended to it;
``filterRegex`` keeps the files whose name matches.

Splits: one per file; a Parquet or ORC file larger than ``splitSize`` (default 128 MiB, one HDFS
block) is split into ranges of row groups / stripes of about that size, so several readers share
one large file (:class:`HdfsSplitData`). A split's position is the number of rows consumed from it
(:class:`~readers.stream.RowsRead`): a restore continues with the next row.

Columns (``column``): ``name`` and/or ``index`` (0-based; text files have no names, so an entry
without ``index`` takes the next field), ``type`` (values are converted, a value that does not
convert is a dirty record), ``isPart`` (the value comes from the file's Hive partition folder,
``pt=1`` in ``.../pt=1/000000_0``), ``value`` (a constant, for a column the file does not have),
``format`` (a Java date pattern such as ``yyyyMMdd HH:mm:ss`` for date/timestamp columns stored as
text). Text files: ``\\N`` is NULL, a short line's missing fields are NULL, binary columns are
base64 (as Hive writes them); gzip and bzip2 files are recognized by their content.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AliasChoices, Field, field_validator
from typing_extensions import override

from libs.formats import format_named
from libs.fs import FileSystem
from libs.types import arrow_type, java_date_format, row_of
from libs.webhdfs import HdfsConnectionParams, TextParams
from readers.file import BaseFileReader, FileColumn, FileSplitData
from sync.contract import DirtyRecord, JobContext, Split
from sync.errors import JobFileError
from sync.model import regex

__all__ = ["HdfsReader", "HdfsReaderColumn", "HdfsReaderParams", "HdfsSplitData"]

WHERE = "job.content[0].reader.parameter"
MIB = 1024 * 1024


class HdfsReaderColumn(FileColumn):
    """A column to read (ChunJun's ``name``, ``index``, ``type``, ``isPart``, ``format``,
    ``value``)."""

    index: Annotated[int, Field(ge=-1)] | None = Field(
        default=None, description="0-based field index (-1 or absent: by name / next field)."
    )
    is_part: bool = Field(default=False, description="Take the value from the partition folder.")
    format: str | None = Field(
        default=None, description="Java date pattern of a date/timestamp stored as text."
    )
    value: Any = Field(default=None, description="A constant for a column the file lacks.")

    @field_validator("index")
    @classmethod
    def _unset(cls, value: int | None) -> int | None:
        return None if value == -1 else value


class HdfsReaderParams(HdfsConnectionParams, TextParams):
    """``parameter`` of ``hdfsreader``."""

    path: str | list[str] = Field(
        description="Files, folders or globs (a fully qualified hdfs://ns/a/b is /a/b)."
    )
    file_name: str | None = Field(default=None, description="Appended to path.")
    file_type: Literal["text", "orc", "parquet"] = Field(
        default="text",
        validation_alias=AliasChoices("fileType", "format", "file_type"),
        description="text (Hive's layout), orc or parquet.",
    )
    column: list[HdfsReaderColumn | str] = Field(
        default_factory=list, description="Columns to read (default: all, as strings for text)."
    )
    filter_regex: str | None = Field(default=None, description="Only files whose name matches.")
    split_size: Annotated[int, Field(gt=0)] = Field(
        default=128 * MIB, description="Parquet/ORC files larger than this are split."
    )

    @field_validator("file_type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("filter_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return regex(value)


def _partition_values(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in path.split("/")[:-1]:
        name, sep, value = part.partition("=")
        if sep and name:
            values[name] = unquote(value)
    return values


@dataclass(frozen=True)
class HdfsSplitData(FileSplitData):
    """A file, or the range ``[first, last)`` of its row groups / stripes (``units``)."""

    units: list[int] | None = None


class HdfsReader(BaseFileReader[HdfsReaderParams]):
    """Reads Hive text, ORC or Parquet files as splits."""

    Parameters = HdfsReaderParams
    split_type = HdfsSplitData

    def __init__(self, params: HdfsReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.format = format_named(params.file_type)
        self.columns = [
            HdfsReaderColumn(name=c) if isinstance(c, str) else c for c in params.column
        ]
        self._text = params.file_type == "text"
        self._fields = self._field_indexes()

    @override
    def make_filesystem(self) -> FileSystem:
        return self.params.filesystem(where=WHERE, plugin="hdfsreader", stopping=self.ctx.stopping)

    @override
    def patterns(self) -> list[str]:
        paths = [self.params.path] if isinstance(self.params.path, str) else self.params.path
        return [self.params.folder(path, self.params.file_name) for path in paths]

    @override
    def filter_regex(self) -> str | None:
        return self.params.filter_regex

    def _field_indexes(self) -> list[int | None]:
        """For text files: the field each column reads (None: partition value or constant)."""
        indexes: list[int | None] = []
        following = 0
        for column in self.columns:
            col = column if isinstance(column, HdfsReaderColumn) else None
            if col is not None and (col.is_part or (col.value is not None and col.index is None)):
                indexes.append(None)
            elif column.index is not None:
                indexes.append(column.index)
                following = column.index + 1
            else:
                indexes.append(following)
                following += 1
        return indexes

    @override
    def plan(self, parallelism: int) -> list[Split]:
        splits: list[Split] = []
        limit = self.params.split_size
        for i, info in enumerate(self.files()):
            if self._text or info.size <= limit:
                splits.append(Split(f"file-{i}", HdfsSplitData(path=info.path)))
                continue
            with self.fs.open_read(info.path) as stream:
                units = self.format.units(stream) or []
            ranges, start, size = [], 0, 0
            for unit, unit_size in enumerate(units):
                size += unit_size
                if size >= limit:
                    ranges.append((start, unit + 1))
                    start, size = unit + 1, 0
            if start < len(units) or not ranges:
                ranges.append((start, len(units)))
            for j, (first, last) in enumerate(ranges):
                data = HdfsSplitData(path=info.path, units=[first, last])
                splits.append(Split(f"file-{i}-{j}", data))
        return splits

    @override
    def read_options(self, split: Split) -> dict[str, object]:
        options: dict[str, object] = {
            "fieldDelimiter": self.params.field_delimiter,
            "encoding": self.params.encoding,
        }
        wanted = [i for i in self._fields if i is not None]
        if self._text and self.columns and wanted:
            options["fields"] = max(wanted) + 1
        if split.data.units is not None:
            options["units"] = split.data.units
        return options

    @override
    def select(self, batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
        if not self.columns:
            return batch
        partitions: dict[str, str] | None = None
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        dirty: dict[int, DirtyRecord] = {}
        for position, column in enumerate(self.columns):
            col = column if isinstance(column, HdfsReaderColumn) else HdfsReaderColumn()
            target = arrow_type(column.type) if column.type else None
            index: int | None = None
            if col.is_part:
                if partitions is None:
                    partitions = _partition_values(path)
                if not column.name or column.name not in partitions:
                    msg = (
                        f"{WHERE}.column[{position}]: isPart, but {path} is not in a "
                        f"'{column.name}=...' folder"
                    )
                    raise JobFileError(msg)
                source = pa.array([partitions[column.name]] * batch.num_rows, pa.string())
            else:
                index = self._source_index(position, column, batch)
                if index is None:
                    if col.value is None:
                        what = column.name if column.index is None else f"index {column.index}"
                        msg = f"{WHERE}.column[{position}]: {what} not in {path}"
                        raise JobFileError(msg)
                    source = pa.array([str(col.value)] * batch.num_rows, pa.string())
                else:
                    source = batch.column(index)
            name = column.name or (
                batch.schema.field(index).name if index is not None else f"_c{position}"
            )
            if target is not None and pa.types.is_string(source.type):
                source = self._parse_text(source, target, col.format, name, batch, dirty)
            arrays.append(source)
            fields.append(pa.field(name, target or source.type))
        if dirty:
            keep = pa.array([i not in dirty for i in range(batch.num_rows)])
            arrays = [a.filter(keep) for a in arrays]
            for record in dirty.values():
                self.ctx.report_dirty(record)
        selected = pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields])
        return self.convert(selected, pa.schema(fields))

    def _source_index(self, position: int, column: FileColumn, batch: pa.RecordBatch) -> int | None:
        if self._text:
            index = self._fields[position]
        elif column.index is not None:
            index = column.index
        else:
            found = batch.schema.get_field_index(column.name or "")
            index = found if found >= 0 else None
        if index is None or index >= batch.num_columns:
            return None
        return index

    def _parse_text(
        self,
        source: pa.Array,
        target: pa.DataType,
        pattern: str | None,
        name: str,
        batch: pa.RecordBatch,
        dirty: dict[int, DirtyRecord],
    ) -> pa.Array:
        """Text values whose conversion a plain cast does not do: base64 binary, dated text."""
        if pa.types.is_binary(target) and self._text:
            decoded = []
            for value in source.to_pylist():
                try:
                    decoded.append(
                        None if value is None else base64.b64decode(value, validate=True)
                    )
                except ValueError:
                    decoded.append(value.encode())
            return pa.array(decoded, pa.binary())
        if pattern and (pa.types.is_timestamp(target) or pa.types.is_date(target)):
            fmt = java_date_format(pattern)
            unit = target.unit if pa.types.is_timestamp(target) else "s"
            if "%f" in fmt:
                values = []
                for i, value in enumerate(source.to_pylist()):
                    try:
                        values.append(None if value is None else dt.datetime.strptime(value, fmt))
                    except ValueError:
                        values.append(None)
                        dirty.setdefault(i, _bad(batch, i, name, value, pattern))
                parsed = pa.array(values, pa.timestamp("us")).cast(pa.timestamp(unit))
            else:
                parsed = pc.strptime(source, format=fmt, unit=unit, error_is_null=True)
                failed = pc.and_(pc.is_valid(source), pc.is_null(parsed))
                for i in pc.indices_nonzero(failed).to_pylist():
                    dirty.setdefault(i, _bad(batch, i, name, source[i].as_py(), pattern))
            return parsed.cast(pa.date32()) if pa.types.is_date(target) else parsed
        return source


def _bad(batch: pa.RecordBatch, index: int, name: str, value: Any, pattern: str) -> DirtyRecord:
    return DirtyRecord(
        row_of(batch, index), f"{name}: '{value}' does not match {pattern}", "conversion", name
    )
