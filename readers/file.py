"""``filereader``: CSV, JSON lines or Parquet files, one split per file, resumable by row.

``path`` is a file, a folder (its visible files: names starting with ``.`` or ``_`` are skipped,
as Hive does) or a glob, or a list of these. A split's position is the number of rows consumed
from its file, so a restore continues at the next row. With typed ``column`` entries, values are
converted to those types and a value that does not convert is a dirty record (the rest of the
file goes on).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field
from typing_extensions import override

from sync.errors import JobFileError
from sync.formats import format_named
from sync.model import Params
from sync.plugin import JobContext, Reader, Split, SplitReader
from sync.types import arrow_type, conform

__all__ = ["FileColumn", "FileReader", "FileReaderParams"]


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


class FileReader(Reader[FileReaderParams]):
    """Reads files as splits."""

    Parameters = FileReaderParams

    def __init__(self, params: FileReaderParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.format = format_named(params.file_type)
        self.columns = [FileColumn(name=c) if isinstance(c, str) else c for c in params.column]

    def _files(self) -> list[str]:
        patterns = [self.params.path] if isinstance(self.params.path, str) else self.params.path
        found: list[str] = []
        for pattern in patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for match in matches:
                entry = Path(match)
                if entry.is_dir():
                    found.extend(
                        str(p)
                        for p in sorted(entry.rglob("*"))
                        if p.is_file() and _visible(p, entry)
                    )
                elif entry.is_file():
                    found.append(str(entry))
        if self.params.filter_regex:
            regex = re.compile(self.params.filter_regex)
            found = [f for f in found if regex.search(Path(f).name)]
        return found

    @override
    def check(self) -> None:
        if not self._files():
            msg = f"job.content[0].reader.parameter.path: no files match {self.params.path}"
            raise JobFileError(msg)

    @override
    def plan(self, parallelism: int) -> list[Split]:
        return [Split(f"file-{i}", {"path": path}) for i, path in enumerate(self._files())]

    @override
    def open(self, split: Split, position: int | None) -> SplitReader:
        return _FileSplit(self, str(split.data["path"]), int(position or 0))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


class _FileSplit(SplitReader):
    def __init__(self, reader: FileReader, path: str, start: int) -> None:
        self._reader = reader
        self._path = path
        self._rows = start
        self._file = Path(path).open("rb")  # noqa: SIM115 - closed in close()

    @override
    def batches(self) -> Iterator[pa.RecordBatch | None]:
        reader = self._reader
        typed = [c for c in reader.columns if c.type]
        options: dict[str, object] = {
            "header": reader.params.header,
            "fieldDelimiter": reader.params.field_delimiter,
        }
        if reader.params.file_type == "csv" and typed:
            options["types"] = {c.name: pa.string() for c in typed if c.name}
        for batch in reader.format.read(self._file, self._rows, reader.ctx.batch_rows, options):
            selected = self._select(batch)
            self._rows += batch.num_rows
            yield selected

    def _select(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = self._reader.columns
        if not columns:
            return batch
        arrays, fields = [], []
        for position, column in enumerate(columns):
            index = (
                column.index
                if column.index is not None
                else batch.schema.get_field_index(column.name or "")
            )
            if index < 0 or index >= batch.num_columns:
                what = column.name if column.index is None else f"index {column.index}"
                msg = f"job.content[0].reader.parameter.column[{position}]: {what} not in {self._path}"
                raise JobFileError(msg)
            arrays.append(batch.column(index))
            name = column.name or batch.schema.field(index).name
            fields.append(
                pa.field(
                    name, arrow_type(column.type) if column.type else batch.schema.field(index).type
                )
            )
        selected = pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields])
        converted, dirty = conform(selected, pa.schema(fields))
        for record in dirty:
            self._reader.ctx.report_dirty(record)
        return converted

    @override
    def snapshot(self) -> int:
        return self._rows

    @override
    def close(self) -> None:
        self._file.close()
