"""``filewriter``: CSV, JSON lines or Parquet part files in a folder, exactly once.

Two-phase commit by staging and rename. Each writer subtask writes into
``<path>/.syncx-staging/<job>/`` (hidden: Hive, Spark and ``filereader`` skip names starting with
``.`` or ``_``) a file named by run, subtask, writer instance and sequence; ``prepare`` closes (fsyncs)
the checkpoint's file and returns its (staged, final) names; ``commit`` renames it into ``path``.
A restore commits the restored handles again (a rename whose source is gone and whose target
exists is already done) and deletes every other staged file of the job. Nothing partial is ever
visible in the target folder. ``writeMode: overwrite`` empties the folder's visible files once,
at the start of a fresh run (never on a restore).

A file rolls to a new one past ``maxFileSize`` bytes; otherwise each checkpoint closes one file
per subtask (checkpoints far apart give few, large files).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field
from typing_extensions import override

from sync.formats import FileFormat, FormatWriter, format_named
from sync.fs import FileSystem, LocalFileSystem
from sync.model import Params
from sync.plugin import DirtyRecord, Handle, JobContext, Writer, WriterTask
from sync.types import arrow_type, conform
from writers.stream import WriterColumn

__all__ = ["FileWriter", "FileWriterParams", "StagedFiles"]

STAGING = ".syncx-staging"


class FileWriterParams(Params):
    """``parameter`` of ``filewriter``."""

    path: str = Field(description="Target folder.")
    file_type: Literal["parquet", "csv", "json", "jsonl"] = Field(
        default="parquet", validation_alias=AliasChoices("fileType", "format", "file_type")
    )
    file_name: str = Field(default="part", description="Prefix of the part files.")
    write_mode: Literal["append", "overwrite"] = Field(
        default="append", validation_alias=AliasChoices("writeMode", "mode", "write_mode")
    )
    column: list[WriterColumn | str] = Field(
        default_factory=list, description="Names (and types) of the columns, in reader order."
    )
    field_delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="CSV: write a header line.")
    compress: Literal["snappy", "gzip", "zstd", "lz4", "brotli", "none"] = Field(
        default="snappy", description="Parquet compression."
    )
    max_file_size: Annotated[int, Field(gt=0)] = Field(
        default=512 * 1024 * 1024, description="Roll to a new file past this many bytes."
    )
    row_group_size: Annotated[int, Field(gt=0)] = Field(default=128 * 1024)
    enable_dictionary: bool = True


class StagedFiles:
    """The staging layout and the commit/abort rules, for any :class:`FileSystem`."""

    def __init__(self, fs: FileSystem, folder: str, job: str) -> None:
        self.fs = fs
        self.folder = folder
        self.staging = fs.join(folder, STAGING, job)

    def commit(self, handle: Handle) -> None:
        """Rename each staged file into place; already-renamed files are skipped."""
        for staged, final in handle["files"]:
            source = self.fs.join(self.staging, staged)
            target = self.fs.join(self.folder, final)
            if self.fs.exists(source):
                if self.fs.exists(target):
                    msg = f"cannot commit {source}: {target} exists already"
                    raise RuntimeError(msg)
                self.fs.rename(source, target)
            elif not self.fs.exists(target):
                msg = f"cannot commit {target}: its staged file {source} is gone"
                raise RuntimeError(msg)

    def abort(self, handle: Handle) -> None:
        """Delete a handle's staged files."""
        for staged, _final in handle["files"]:
            self.fs.delete(self.fs.join(self.staging, staged))

    def recover(self, handles: list[Handle]) -> None:
        """Commit ``handles``, then delete every other staged file of the job."""
        keep: set[str] = set()
        for handle in handles:
            self.commit(handle)
            keep.update(staged for staged, _ in handle["files"])
        for entry in self.fs.listdir(self.staging):
            if entry.path.rsplit("/", 1)[-1] not in keep:
                self.fs.delete(entry.path, recursive=entry.is_dir)

    def clear_visible(self) -> None:
        """``overwrite``: remove the folder's visible files (hidden ones stay)."""
        for entry in self.fs.listdir(self.folder):
            name = entry.path.rsplit("/", 1)[-1]
            if not name.startswith((".", "_")):
                self.fs.delete(entry.path, recursive=entry.is_dir)


class FileWriter(Writer[FileWriterParams]):
    """Part files in a local folder."""

    Parameters = FileWriterParams

    def __init__(self, params: FileWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.fs: FileSystem = LocalFileSystem()
        self.format = format_named(params.file_type)
        self.staged = StagedFiles(self.fs, params.path, ctx.job_name)

    @override
    def check(self) -> None:
        if self.fs.exists(self.params.path) and not self.fs.is_dir(self.params.path):
            msg = (
                f"job.content[0].writer.parameter.path: {self.params.path} is a file, not a folder"
            )
            raise ValueError(msg)
        self.fs.makedirs(self.staged.staging)

    @override
    def begin(self, handles: list[Handle], *, fresh: bool) -> None:
        self.staged.recover(handles)
        if fresh and self.params.write_mode == "overwrite":
            self.staged.clear_visible()

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        return _FileTask(self, subtask, _target_schema(self.params.column))


def _target_schema(columns: list[WriterColumn | str]) -> list[tuple[str, pa.DataType | None]]:
    out: list[tuple[str, pa.DataType | None]] = []
    for column in columns:
        if isinstance(column, str):
            out.append((column, None))
        else:
            out.append((column.name, arrow_type(column.type) if column.type else None))
    return out


class _FileTask(WriterTask):
    def __init__(
        self, writer: FileWriter, subtask: int, columns: list[tuple[str, pa.DataType | None]]
    ) -> None:
        self._writer = writer
        self._params = writer.params
        self._format: FileFormat = writer.format
        self._subtask = subtask
        self._columns = columns
        self._schema: pa.Schema | None = None
        self._open: tuple[FormatWriter, Any, str, str] | None = None
        self._files: list[list[str]] = []
        self._sequence = 0
        self._token = uuid.uuid4().hex[:8]
        self._options: dict[str, object] = {
            "compress": None if self._params.compress == "none" else self._params.compress,
            "rowGroupSize": self._params.row_group_size,
            "enableDictionary": self._params.enable_dictionary,
            "fieldDelimiter": self._params.field_delimiter,
            "header": self._params.header,
        }

    def _schema_for(self, batch: pa.RecordBatch) -> pa.Schema:
        if self._schema is None:
            if not self._columns:
                self._schema = batch.schema
            else:
                fields = [
                    pa.field(name, kind or batch.schema.field(i).type)
                    for i, (name, kind) in enumerate(self._columns[: batch.num_columns])
                ]
                self._schema = pa.schema(fields)
        return self._schema

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        batch, dirty = conform(batch, self._schema_for(batch))
        if batch.num_rows:
            writer, stream, _, _ = self._current(batch.schema)
            writer.write(batch)
            if stream.tell() >= self._params.max_file_size:
                self._close_current()
        return dirty

    def _current(self, schema: pa.Schema) -> tuple[FormatWriter, Any, str, str]:
        if self._open is None:
            name = (
                f"{self._writer.ctx.run_id}-{self._subtask:03d}-{self._token}-{self._sequence:05d}"
            )
            staged = f"{name}.{self._format.extension}.inprogress"
            final = f"{self._params.file_name}-{name}.{self._format.extension}"
            stream = self._writer.fs.open_write(
                self._writer.fs.join(self._writer.staged.staging, staged)
            )
            self._open = (self._format.writer(stream, schema, self._options), stream, staged, final)
            self._sequence += 1
        return self._open

    def _close_current(self) -> None:
        if self._open is not None:
            writer, _stream, staged, final = self._open
            writer.close()
            self._files.append([staged, final])
            self._open = None

    @override
    def prepare(self, checkpoint_id: int) -> Handle:
        self._close_current()
        files, self._files = self._files, []
        return {"files": files} if files else None

    @override
    def commit(self, handle: Handle) -> None:
        self._writer.staged.commit(handle)

    @override
    def abort(self, handle: Handle) -> None:
        self._writer.staged.abort(handle)

    @override
    def discard(self) -> None:
        if self._open is not None:
            writer, _stream, staged, _final = self._open
            self._open = None
            try:
                writer.close()
            finally:
                self._writer.fs.delete(self._writer.fs.join(self._writer.staged.staging, staged))
        for staged, _final in self._files:
            self._writer.fs.delete(self._writer.fs.join(self._writer.staged.staging, staged))
        self._files = []
