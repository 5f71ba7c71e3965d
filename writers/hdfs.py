"""``hdfswriter``: Hive-compatible text, ORC or Parquet files on HDFS (or a local folder), exactly
once, with ChunJun's parameters.

Where: ``defaultFS`` + ``hadoopConfig`` name the cluster (see :mod:`libs.webhdfs`: WebHDFS, NameNode
HA, Kerberos; ``file:///`` writes to the local disk through the same code above the filesystem);
the files go to ``<path>/<fileName>/`` (``fileName`` is a sub-folder such as ``pt=20240101``),
into Hive-style partition folders ``<column>=<value>/`` with ``partition: [dt]`` (partition
columns are not stored in the files, as Hive expects).

Exactly once, by staging and rename (:mod:`writers.file`): each subtask writes into
``<path>/<fileName>/.syncx-staging/<job>/`` segment files named by run, subtask, group, sequence
and (once prepared) checkpoint id; ``prepare`` closes them (the upload completes: HDFS closes the
file, local files are fsynced); ``commit`` renames into the target folder, never copies. Restore
completes the renames of the restored checkpoint and deletes staged files of later ones.
``writeMode: overwrite`` empties the target folder once at the start of a fresh run, never on a
restore, and only of data files of ``fileType`` and partition folders unless
``overwriteAll: true`` (see :mod:`writers.file`). Everything unfinished is under a hidden name (``.``/``_``), which Hive and Spark skip.
A lock file ``.syncx-staging/writer.lock`` refuses a second job writing the same folder.

No small files -- the decision. A Parquet or ORC file cannot stay open across a checkpoint: its
footer is written at close, and the rows since the last checkpoint must be durable at
``prepare``. Rolling one file per checkpoint and subtask (Flink's ``OnCheckpointRollingPolicy``)
makes each file as large as what one subtask writes in one checkpoint interval. Measured here: a
2,000,000-row orders table is ~90 MB of Snappy Parquet (~45 bytes a row); read from MySQL at the
~100,000 rows/s of the pymysql path with two channels, each subtask writes ~22 MB per default
10 s interval -- 4-6 files per subtask for 2M rows, ~2,200 files of ~22 MB for a 500M-row table,
where ``maxFileSize`` (default 1 GiB) asks for ~25. So files are *compacted at commit*: a
subtask's *group* (one target file) collects the segments of successive checkpoints -- committed,
recorded in every checkpoint, but not yet visible -- until they reach ``maxFileSize``; the
commit of the checkpoint that fills it merges the segments into one hidden file and renames that
into place (a group of one segment is simply renamed). When the job ends (or stops, or restores),
the open groups are published the same way. A 2M-row run gives one file per subtask; a large
migration gives files of ``maxFileSize`` plus one smaller file per subtask. The cost: data of a
group with several segments is read back and written once more at commit. Parquet segments are
concatenated row group by row group without decoding (their bytes copied under one footer whose
offsets are moved, as ``parquet-tools merge`` does: the file keeps each segment's row groups,
one or more per checkpoint), unless a segment's schema differs, when they are re-encoded; ORC
segments are re-encoded; text is concatenated. Committed rows become visible when their file is
complete (at ``maxFileSize``, at the end, at a stop), not at each checkpoint.
``mergeSmallFiles: false`` turns this off (one visible file per checkpoint and subtask).

Types: Hive's names (``column[].type``, ``fullColumnType``): tinyint, smallint, int, bigint,
float, double, decimal(p,s), string/varchar/char, boolean, date, timestamp, binary. DECIMAL keeps
precision and scale in ORC and Parquet; timestamps are real timestamp types (Parquet
``TIMESTAMP(MICROS)``, or INT96 with ``timestampType: int96`` for Hive 2 / Impala; ORC
``TIMESTAMP``); dates are ``DATE``; text writes ``\\N`` for NULL. A *declared* type the format
cannot hold is an error naming the parameter before the job starts. A column with no declared
type takes the reader's type, widened where Hive has none for it (the decision, as DataX and
Hive users declare such MySQL columns; :func:`libs.formats.hive_widening`, logged once per
column): unsigned 8/16/32-bit integers the next larger signed type, ``BIGINT UNSIGNED``
``decimal(20,0)``, TIME (and durations) a string in MySQL's ``[-]HH:MM:SS[.ffffff]`` form,
decimals beyond 38 digits their exact text; in ORC a timestamp with a time zone becomes a
``TIMESTAMP`` in UTC (Hive 3's ORC reader has no ``TIMESTAMP_INSTANT``). A TIME column declared
``string`` gets the same text. Merging ORC segments reads them back with pyarrow, which reads ORC
timestamps as nanoseconds (1677-2262 only): with ``mergeSmallFiles`` on, other timestamps (MySQL's
``9999-12-31``) are refused before they are staged, naming the parameter, rather than failing at
every commit and restore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import override

from libs.formats import format_named
from libs.formats.base import hive_text
from libs.formats.columnar import ORC_TIMESTAMPS
from libs.fs import FileSystem, is_hidden
from libs.types import arrow_type, conform
from libs.webhdfs import HdfsConnectionParams, TextParams
from sync.contract import DirtyRecord, JobContext, WriterTask
from sync.errors import JobFailedError, JobFileError
from sync.model import Params
from sync.state import process_alive
from writers.file import (
    OVERWRITE_ALL_DESCRIPTION,
    OVERWRITE_DESCRIPTION,
    STAGING,
    Shaper,
    StagedFileWriter,
    StagedHandle,
    StagedWriterTask,
    overwrite_refusal,
)

__all__ = ["HdfsWriter", "HdfsWriterColumn", "HdfsWriterParams"]

log = logging.getLogger(__name__)

WHERE = "job.content[0].writer.parameter"
LOCK = "writer.lock"
GIB = 1024 * 1024 * 1024
_COMPRESSION: dict[str, dict[str, str]] = {
    "text": {"none": "none", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"},
    "orc": {"none": "none", "zlib": "zlib", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"},
    "parquet": {
        "none": "none",
        "snappy": "snappy",
        "gzip": "gzip",
        "zstd": "zstd",
        "lz4": "lz4",
        "brotli": "brotli",
    },
}
_DEFAULT_COMPRESSION = {"text": "none", "orc": "zlib", "parquet": "snappy"}


class HdfsWriterColumn(Params):
    """A column of the written files: its name, Hive type and the reader field it comes from."""

    name: str
    type: str | None = Field(default=None, description="Hive type; default the reader's.")
    index: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The reader field (0-based); default this entry's position."
    )


class HdfsWriterParams(HdfsConnectionParams, TextParams):
    """``parameter`` of ``hdfswriter``."""

    path: str = Field(description="Target folder (a fully qualified hdfs://ns/a/b is /a/b).")
    file_name: str | None = Field(
        default=None, description="A sub-folder of path to write into, e.g. pt=20240101."
    )
    file_type: Literal["text", "orc", "parquet"] = Field(description="text, orc or parquet.")
    write_mode: Literal["append", "overwrite"] = Field(
        default="append",
        validation_alias=AliasChoices("writeMode", "mode", "write_mode"),
        description=OVERWRITE_DESCRIPTION,
    )
    overwrite_all: bool = Field(default=False, description=OVERWRITE_ALL_DESCRIPTION)
    column: list[HdfsWriterColumn | str] = Field(
        default_factory=list, description="The file's columns, in reader order (default: all)."
    )
    full_column_name: list[str] | None = Field(
        default=None, description="All columns of the file (columns not in `column` are NULL)."
    )
    full_column_type: list[str] | None = Field(
        default=None, description="Types of fullColumnName (default: from `column`, else string)."
    )
    compress: str | None = Field(
        default=None,
        description=(
            "text: gzip, bzip2, none (default); orc: zlib (default), snappy, lz4, zstd, none; "
            "parquet: snappy (default), gzip, zstd, lz4, none."
        ),
    )
    max_file_size: Annotated[int, Field(gt=0)] = Field(
        default=GIB, description="Bytes: a file rolls to a new one past this size."
    )
    row_group_size: Annotated[int, Field(gt=0)] = Field(
        default=128 * 1024 * 1024,
        validation_alias=AliasChoices("rowGroupSize", "rowGroupSIze", "row_group_size"),
        description=(
            "Parquet: bytes of (in-memory) data per row group, at most 16 MiB: pyarrow builds "
            "each row group in memory, once per open file."
        ),
    )
    enable_dictionary: bool = Field(
        default=True,
        description=(
            "Dictionary encoding for the columns whose values repeat (Parquet: at most half "
            "distinct in a file's first rows; ORC: distinct keys under 80% of a stripe)."
        ),
    )
    partition: list[str] = Field(
        default_factory=list,
        description="Columns whose values make Hive partition folders (dt=2024-01-01/).",
    )
    timestamp_type: Literal["micros", "int96"] = Field(
        default="micros",
        description="Parquet timestamps: INT64 TIMESTAMP(MICROS), or INT96 for Hive 2/Impala.",
    )
    merge_small_files: bool = Field(
        default=True,
        description=(
            "Keep a file open across checkpoints until maxFileSize and merge its segments at "
            "commit (false: one visible file per checkpoint and subtask)."
        ),
    )
    next_check_rows: int | None = Field(
        default=None, description="ChunJun's size-check interval; accepted, not needed here."
    )
    flush_interval: int | None = Field(
        default=None, description="ChunJun's flush interval; accepted, checkpoints flush here."
    )
    filter_regex: str | None = Field(
        default=None, description="Listed in ChunJun's writer docs; accepted, not used."
    )

    @field_validator("file_type", mode="before")
    @classmethod
    def _lower_type(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("write_mode", mode="before")
    @classmethod
    def _lower_mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("partition", mode="before")
    @classmethod
    def _partition_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HdfsWriterParams:
        issues: list[InitErrorDetails] = []

        def issue(loc: tuple[str | int, ...], message: str, value: Any) -> None:
            issues.append(
                InitErrorDetails(
                    type=PydanticCustomError("hdfswriter", "{reason}", {"reason": message}),
                    loc=loc,
                    input=value,
                )
            )

        allowed = _COMPRESSION[self.file_type]
        if self.compress is not None and self.compress.strip().lower() not in allowed:
            codecs = ", ".join(sorted(set(allowed.values())))
            issue(
                ("compress",),
                f"{self.file_type} files can be compressed with {codecs} (LZO is not supported)",
                self.compress,
            )
        fmt = format_named(self.file_type)
        declared: list[tuple[tuple[str | int, ...], str]] = []
        for index, column in enumerate(self.column):
            if isinstance(column, HdfsWriterColumn) and column.type:
                declared.append((("column", index, "type"), column.type))
        for index, name in enumerate(self.full_column_type or []):
            declared.append((("fullColumnType", index), name))
        for loc, type_name in declared:
            try:
                kind = arrow_type(type_name)
            except ValueError as exc:
                issue(loc, str(exc), type_name)
                continue
            why = _unsupported(fmt.unsupported(kind), kind, self.file_type)
            if why:
                issue(
                    loc,
                    f"type {type_name} cannot be written to {self.file_type} files: {why}",
                    type_name,
                )
        names = self.file_columns()
        if self.full_column_type is not None and len(self.full_column_type) != len(
            self.full_column_name or []
        ):
            issue(
                ("fullColumnType",),
                "needs one type per fullColumnName entry",
                self.full_column_type,
            )
        for index, name in enumerate(self.partition):
            if names and name not in names:
                issue(("partition", index), f"'{name}' is not one of the columns", name)
        if self.write_mode == "overwrite":
            why = overwrite_refusal(self.folder(self.path, self.file_name))
            if why:
                issue(("path",), why, self.path)
        if names and set(names) <= set(self.partition):
            issue(("partition",), "every column is a partition column: nothing to write", None)
        if issues:
            raise ValidationError.from_exception_data(type(self).__name__, issues)
        return self

    def file_columns(self) -> list[str]:
        """Names of the written columns (partition columns included), empty when undeclared."""
        if self.full_column_name:
            return list(self.full_column_name)
        return [c if isinstance(c, str) else c.name for c in self.column]

    def compression(self) -> str:
        """``compress`` normalized (``none`` when uncompressed)."""
        if self.compress is None or not self.compress.strip():
            return _DEFAULT_COMPRESSION[self.file_type]
        return _COMPRESSION[self.file_type][self.compress.strip().lower()]


def _unsupported(reason: str | None, kind: pa.DataType, file_type: str) -> str | None:
    if reason:
        return reason
    if file_type == "parquet" and pa.types.is_time(kind):
        return "Hive and Spark cannot read Parquet TIME columns; declare the column string"
    return None


class HdfsWriter(StagedFileWriter[HdfsWriterParams]):
    """Text, ORC or Parquet files on HDFS through WebHDFS, or in a local folder."""

    Parameters = HdfsWriterParams

    def __init__(self, params: HdfsWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.format = format_named(params.file_type)
        self.base = params.folder(params.path)
        self.folder = params.folder(params.path, params.file_name)
        self.max_file_size = params.max_file_size
        self.partition = tuple(params.partition)
        self.compact = params.merge_small_files
        self._lock_path = f"{self.folder.rstrip('/')}/{STAGING}/{LOCK}"
        self._lock_token: str | None = None
        self._tasks = 0
        self._tasks_lock = threading.Lock()
        self._widened: set[str] = set()

    @override
    def make_filesystem(self) -> FileSystem:
        return self.params.filesystem(where=WHERE, plugin="hdfswriter", stopping=self.ctx.stopping)

    @override
    def read_back(
        self, table: str | None = None, columns: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]] | None:
        """The folder through ``hdfsreader`` (partition folders carry values it cannot pair; a
        CDC job's files are a changelog)."""
        del columns
        return None if self.partition or table is not None else ("hdfsreader", {})

    @override
    def format_options(self) -> dict[str, object]:
        params = self.params
        compress = params.compression()
        return {
            "compress": None if compress == "none" else compress,
            "rowGroupBytes": params.row_group_size,
            "rowGroupSize": 1024 * 1024,
            "enableDictionary": params.enable_dictionary,
            "fieldDelimiter": params.field_delimiter,
            "encoding": params.encoding,
            "encodingParameter": f"{WHERE}.encoding",
            "timestampType": params.timestamp_type,
        }

    # -- before the job --------------------------------------------------------------------------

    @override
    def check(self) -> None:
        fs = self.fs
        if fs.exists(self.base) and not fs.is_dir(self.base):
            msg = f"{WHERE}.path: {self.base} is a file, not a folder"
            raise JobFileError(msg)
        if self.folder != self.base and fs.exists(self.folder) and not fs.is_dir(self.folder):
            msg = f"{WHERE}.fileName: {self.folder} is a file, not a folder"
            raise JobFileError(msg)
        fs.makedirs(self.staged.staging)
        if self.params.write_mode == "append":
            self._check_existing_files()

    def _check_existing_files(self) -> None:
        """Append mode adds files to a folder Hive reads as one table: refuse other formats."""
        fs, file_type = self.fs, self.params.file_type
        checked = 0
        folders = [self.folder]
        while folders and checked < 5:
            folder = folders.pop(0)
            for entry in fs.listdir(folder):
                name = entry.path.rsplit("/", 1)[-1]
                if is_hidden(name):
                    continue
                if entry.is_dir:
                    folders.append(entry.path)
                    continue
                if entry.size == 0:
                    continue
                with fs.open_read(entry.path) as stream:
                    head = stream.read(4)
                checked += 1
                if not self.format.matches(head):
                    found = (
                        "parquet" if head == b"PAR1" else "orc" if head[:3] == b"ORC" else "text"
                    )
                    msg = (
                        f"{WHERE}.fileType: {file_type}, but {entry.path} in the target folder "
                        f"is a {found} file; in append mode a folder's files must all be "
                        f"{file_type} (writeMode: overwrite replaces them)"
                    )
                    raise JobFileError(msg)
                if checked >= 5:
                    break

    @override
    def begin(self, handles: list[StagedHandle], *, fresh: bool) -> None:
        self._acquire_lock()
        try:
            super().begin(handles, fresh=fresh)
        except BaseException:
            with contextlib.suppress(Exception):
                self._release_lock()
            raise

    # -- the folder lock ---------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        token = uuid.uuid4().hex
        holder = {
            "job": self.ctx.job_name,
            "run": self.ctx.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "token": token,
        }
        data = json.dumps(holder).encode()
        for _ in range(3):
            if self.fs.create_exclusive(self._lock_path, data):
                self._lock_token = token
                return
            try:
                current = json.loads(self.fs.read_bytes(self._lock_path))
            except FileNotFoundError:
                continue
            except ValueError:
                current = {}
            if self._may_take_over(current):
                self.fs.delete(self._lock_path)
                continue
            msg = (
                f"{WHERE}.path: {self.folder} is being written by job '{current.get('job')}' "
                f"(run {current.get('run')}, pid {current.get('pid')} on {current.get('host')}, "
                f"since {current.get('since')}); two jobs must not write one folder at once. If "
                f"that job is no longer running, delete {self._lock_path}"
            )
            raise JobFailedError(msg)
        msg = f"{WHERE}.path: could not take the lock {self._lock_path}"
        raise JobFailedError(msg)

    def _may_take_over(self, holder: dict[str, Any]) -> bool:
        """A lock of a process of this host that is gone, or of this job (an earlier attempt or
        run: the state folder's lock keeps one run of a job at a time)."""
        same_job = holder.get("job") == self.ctx.job_name
        if holder.get("host") != socket.gethostname():
            return same_job
        pid = holder.get("pid")
        if pid == os.getpid():
            return same_job
        return not (isinstance(pid, int) and process_alive(pid))

    def _release_lock(self) -> None:
        token, self._lock_token = self._lock_token, None
        if token is None:
            return
        try:
            current = json.loads(self.fs.read_bytes(self._lock_path))
        except (FileNotFoundError, ValueError):
            return
        if current.get("token") == token:
            self.fs.delete(self._lock_path)

    # -- subtasks ----------------------------------------------------------------------------

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        with self._tasks_lock:
            self._tasks += 1
        return _HdfsTask(self, subtask, self.shaper(schema))

    def task_closed(self, *, discarded: bool) -> None:
        """A subtask closed; after a failure or stop, the last one releases the folder lock."""
        with self._tasks_lock:
            self._tasks -= 1
            last = self._tasks == 0
        if last and discarded:
            try:
                self._release_lock()
            except Exception:  # best effort: the next run of this job takes the lock over
                return

    @override
    def release(self) -> None:
        self._release_lock()

    @override
    def shaper(self, schema: pa.Schema | None) -> Shaper:
        plan = self._column_plan()
        fmt, file_type = self.format, self.params.file_type
        orc_merges = file_type == "orc" and self.compact
        resolved: list[pa.Schema] = []

        def shape(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
            if not resolved:
                resolved.append(self._file_schema(plan, batch.schema))
                for position, field in enumerate(resolved[0]):
                    why = _unsupported(fmt.unsupported(field.type), field.type, file_type)
                    if why and field.name not in self.partition:
                        where = f"{WHERE}.column[{position}]" if plan else f"{WHERE}.column"
                        msg = (
                            f"{where}: column {field.name} of type {field.type} cannot be "
                            f"written to {file_type} files: {why}"
                        )
                        raise JobFileError(msg)
            target = resolved[0]
            arrays = batch.columns
            if plan:
                arrays = [
                    arrays[source]
                    if source is not None
                    else pa.nulls(batch.num_rows, target.field(i).type)
                    for i, (_name, _kind, source) in enumerate(plan)
                ]
            texts = [
                _as_text(array) if pa.types.is_string(field.type) else array
                for array, field in zip(arrays, target, strict=True)
            ]
            if plan or any(a is not b for a, b in zip(texts, arrays, strict=True)):
                batch = pa.RecordBatch.from_arrays(texts, names=target.names)
            shaped, dirty = conform(batch, target)
            if orc_merges:
                _check_orc_merges(shaped)
            return shaped, dirty

        return shape

    def _column_plan(self) -> list[tuple[str, pa.DataType | None, int | None]]:
        """(name, declared type, reader field) of each file column; empty: take the reader's."""
        params = self.params
        declared: dict[str, tuple[pa.DataType | None, int | None]] = {}
        for position, column in enumerate(params.column):
            if isinstance(column, str):
                declared[column] = (None, position)
            else:
                kind = arrow_type(column.type) if column.type else None
                source = column.index if column.index is not None else position
                declared[column.name] = (kind, source)
        if params.full_column_name:
            types = params.full_column_type or []
            plan: list[tuple[str, pa.DataType | None, int | None]] = []
            for i, name in enumerate(params.full_column_name):
                full_kind, full_source = declared.get(name, (None, None))
                if i < len(types):
                    full_kind = arrow_type(types[i])
                if full_source is None and full_kind is None:
                    full_kind = pa.string()
                plan.append((name, full_kind, full_source))
            return plan
        return [(name, kind, source) for name, (kind, source) in declared.items()]

    def _file_schema(
        self, plan: list[tuple[str, pa.DataType | None, int | None]], incoming: pa.Schema
    ) -> pa.Schema:
        """The written columns: declared types as declared, the others the reader's, widened
        where Hive has no such type (:meth:`_undeclared`)."""
        if not plan:
            return pa.schema(f.with_type(self._undeclared(f.name, f.type)) for f in incoming)
        fields = []
        for position, (name, declared, source) in enumerate(plan):
            if source is not None and source >= len(incoming):
                msg = (
                    f"{WHERE}.column[{position}]: column {name} is reader field {source}, but "
                    f"the reader delivers {len(incoming)} column(s) {incoming.names}"
                )
                raise JobFileError(msg)
            if declared is not None:
                fields.append(pa.field(name, declared))
            elif source is not None:
                fields.append(pa.field(name, self._undeclared(name, incoming.field(source).type)))
            else:
                fields.append(pa.field(name, pa.string()))
        return pa.schema(fields)

    def _undeclared(self, name: str, kind: pa.DataType) -> pa.DataType:
        """The type of a column with no declared type: the reader's, or what the format widens
        it to (logged once per column and job, not per subtask)."""
        widening = self.format.widening(kind)
        if widening is None:
            return kind
        with self._tasks_lock:
            first = name not in self._widened
            self._widened.add(name)
        if first:
            log.info(
                "%s.column: column %s (%s) is written as %s: %s; declare its type to choose "
                "another",
                WHERE,
                name,
                kind,
                widening.hive,
                widening.why,
            )
        return widening.type


def _check_orc_merges(batch: pa.RecordBatch) -> None:
    """Refuse, before they are staged, timestamps that would make merging ORC segments fail:
    merging reads them back with pyarrow, which reads ORC timestamps as nanoseconds. A job
    that fails at a commit would fail again at each restore; this one says what to change."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not pa.types.is_timestamp(field.type):
            continue
        try:
            pc.cast(column, pa.timestamp("ns", field.type.tz))
        except pa.ArrowInvalid as exc:
            first, last = ORC_TIMESTAMPS
            bad = next(
                (
                    value
                    for value in column.to_pylist()
                    if value is not None and not first <= value.replace(tzinfo=None) <= last
                ),
                "a value out of range",
            )
            msg = (
                f"{WHERE}.mergeSmallFiles: column {field.name} holds {bad}, a timestamp ORC "
                f"files cannot be merged with: merging reads the files back with pyarrow, which "
                f"reads ORC timestamps from {first} to {last} only (Hive reads them all). Set "
                "mergeSmallFiles: false (one file per checkpoint and subtask), or write Parquet"
            )
            raise JobFileError(msg) from exc


def _as_text(array: pa.Array) -> pa.Array:
    """A column written as string: Hive's text of it where that is not Arrow's cast."""
    text = hive_text(array)
    return array if text is None else text


class _HdfsTask(StagedWriterTask):
    def __init__(self, writer: HdfsWriter, subtask: int, shaper: Shaper) -> None:
        super().__init__(writer, subtask, shaper)
        self._hdfs_writer = writer

    @override
    def close(self) -> None:
        try:
            super().close()
        finally:
            self._hdfs_writer.task_closed(discarded=self.discarded)
