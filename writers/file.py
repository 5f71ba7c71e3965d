"""``filewriter``: CSV, JSON lines or Parquet part files in a folder, exactly once.

Two-phase commit by staging and rename. Each writer subtask writes into
``<path>/.syncx-staging/<job>/`` (hidden: Hive, Spark and ``filereader`` skip names starting with
``.`` or ``_``) *segment* files named by run, subtask, writer instance, file group and sequence:
``<run>-<subtask>-<token>-<group>-<seq>.<ext>.inprogress`` while open. ``prepare(n)`` closes
(fsyncs) the open segments and renames them ``...-<seq>-c<n>.<ext>`` (prepared for checkpoint
*n*); its handle lists them. ``commit`` renames a group's single segment into ``path`` (or merges
several into one file first, see below). A restore commits the restored handles again (a group
whose target file exists is done) and deletes every other staged file of the job. Nothing
partial is ever visible in the target folder. ``writeMode: overwrite`` empties the folder once,
at the start of a fresh run (never on a restore), deleting only what looks like data of the
declared format and partition folders: anything else found refuses the run, named, unless
``overwriteAll: true`` (:meth:`StagedFiles.clear_for_overwrite`); a root or top-level folder is
refused at validation (:func:`overwrite_refusal`).

A *group* is one target file. For ``filewriter`` every checkpoint closes each subtask's group
(one file per subtask and checkpoint; checkpoints far apart give few, large files); a file also
rolls to a new one past ``maxFileSize`` bytes. A writer with ``compact`` (``hdfswriter``) keeps a
group open across checkpoints until its segments reach ``maxFileSize``, and its commit then
merges them into one file (see :mod:`writers.hdfs`). The machinery here (:class:`StagedFiles`,
:class:`StagedFileWriter`, :class:`StagedWriterTask`) serves any :class:`~libs.fs.FileSystem`
and :class:`~libs.formats.FileFormat`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import override

from libs.formats import format_named
from libs.formats.base import FileFormat, FormatWriter, Opener
from libs.fs import FileInfo, FileSystem, LocalFileSystem, is_hidden
from libs.types import arrow_type, conform
from sync.contract import DirtyRecord, JobContext, State, Writer, WriterTask
from sync.errors import FatalError, SyncxError
from sync.model import Params
from writers.stream import WriterColumn

__all__ = [
    "OVERWRITE_ALL_DESCRIPTION",
    "OVERWRITE_DESCRIPTION",
    "STAGING",
    "FileWriter",
    "FileWriterParams",
    "Shaper",
    "StagedFileWriter",
    "StagedFiles",
    "StagedHandle",
    "StagedWriterTask",
    "hive_partition_dirs",
    "overwrite_refusal",
]

log = logging.getLogger(__name__)

STAGING = ".syncx-staging"
WHERE = "job.content[0].writer.parameter"
HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"

BUFFER_BUDGET = 64 * 1024 * 1024
"""Bytes of rows a writer subtask's open files may hold in memory together (Parquet row groups
being built; each file also holds at most :data:`libs.formats.columnar.ROW_GROUP_MEMORY`): a
``partition`` job writing many partitions at once writes the largest row groups out early, at
half this, rather than holding one full row group per partition."""

P = TypeVar("P", bound=Params)
Shaper = Callable[[pa.RecordBatch], tuple[pa.RecordBatch, list[DirtyRecord]]]
"""Turns an input batch into the file's columns and types; rows that do not convert are dirty."""


# -- what overwrite may delete -----------------------------------------------------------------

OVERWRITE_DESCRIPTION = (
    "overwrite empties the target folder at the start of a fresh run: its data files of "
    "fileType and its partition folders (key=value/). Anything else there (other files, "
    "other folders) makes the run refuse to start, naming it, unless overwriteAll is true. "
    "Refused on a filesystem root and on a folder less than two levels deep (/, /tmp, /home)."
)
OVERWRITE_ALL_DESCRIPTION = (
    "With writeMode overwrite: delete everything visible in the target folder, not only data "
    "files of fileType and partition folders."
)
_DATA_EXTENSIONS = {
    "parquet": {"parquet", "parq"},
    "orc": {"orc"},
    "txt": {"txt", "text", "csv", "tsv", "dat"},
    "csv": {"csv", "txt"},
    "jsonl": {"jsonl", "json", "ndjson"},
}
"""Name extensions of data files, by the format's own extension (``FileFormat.extension``)."""
_COMPRESSED = {"gz", "bz2", "deflate", "snappy", "zst", "zstd", "lz4", "lzo", "br"}
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\x28\xb5\x2f\xfd")


def overwrite_refusal(folder: str) -> str | None:
    """Why ``writeMode: overwrite`` must not empty ``folder`` (a path inside its filesystem; a
    relative one is taken from the working directory): the root, or a folder one level deep
    such as ``/tmp`` or ``/home``, is far more likely a mistake than a table's folder."""
    absolute = posixpath.normpath(folder if folder.startswith("/") else os.path.abspath(folder))  # noqa: PTH100
    levels = [part for part in absolute.split("/") if part]
    if len(levels) >= 2:
        return None
    what = f"{absolute}, a folder one level deep" if levels else "the filesystem root"
    example = f"{absolute}/<table>" if levels else "/data/<table>"
    return (
        f"writeMode overwrite empties the target folder, and it is {what}; write into a folder "
        f"at least two levels deep (such as {example})"
    )


def _extension(name: str) -> str:
    """A file name's data extension: ``part-0.snappy.parquet`` -> parquet, ``x.csv.gz`` -> csv,
    ``000000_0`` and ``0.job.0`` -> "" (no extension)."""
    suffixes = name.split(".")[1:]
    while suffixes and suffixes[-1].lower() in _COMPRESSED:
        suffixes.pop()
    last = suffixes[-1].lower() if suffixes else ""
    return last if last.isalpha() else ""


class FileWriterParams(Params):
    """``parameter`` of ``filewriter``."""

    path: str = Field(description="Target folder.")
    file_type: Literal["parquet", "csv", "json", "jsonl"] = Field(
        default="parquet", validation_alias=AliasChoices("fileType", "format", "file_type")
    )
    file_name: str = Field(default="part", description="Prefix of the part files.")
    write_mode: Literal["append", "overwrite"] = Field(
        default="append",
        validation_alias=AliasChoices("writeMode", "mode", "write_mode"),
        description=OVERWRITE_DESCRIPTION,
    )
    overwrite_all: bool = Field(default=False, description=OVERWRITE_ALL_DESCRIPTION)
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
    row_group_size: Annotated[int, Field(gt=0)] = Field(
        default=128 * 1024,
        description="Parquet: rows per row group (and at most 16 MiB of in-memory data).",
    )
    enable_dictionary: bool = Field(
        default=True,
        description="Parquet/ORC: dictionary encoding for the columns whose values repeat.",
    )

    @model_validator(mode="after")
    def _overwrite_where_safe(self) -> FileWriterParams:
        why = overwrite_refusal(self.path) if self.write_mode == "overwrite" else None
        if why:
            error = PydanticCustomError("filewriter", "{reason}", {"reason": why})
            detail = InitErrorDetails(type=error, loc=("path",), input=self.path)
            raise ValidationError.from_exception_data(type(self).__name__, [detail])
        return self


# -- staging and commit rules ------------------------------------------------------------------


@dataclass(frozen=True)
class StagedHandle(State):
    """What a checkpoint prepared: ``groups``, each one target file ``{"id", "dir", "final",
    "segments", "closed", "size"}`` (``dir`` a partition folder or ``""``), and ``new``, the
    segments this checkpoint staged (what ``abort`` deletes).

    Version 1 is also the plain object stored before handles were typed (the same keys), and
    ``files`` (``[[staged, final], ...]``) the shape before groups existed.
    """

    groups: list[dict[str, Any]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    files: list[list[str]] = field(default_factory=list)


class StagedFiles:
    """The staging layout and the commit/abort/restore rules (:class:`StagedHandle`), for any
    :class:`FileSystem`."""

    def __init__(
        self,
        fs: FileSystem,
        folder: str,
        job: str,
        file_format: FileFormat | None = None,
        options: dict[str, object] | None = None,
    ) -> None:
        self.fs = fs
        self.folder = folder
        self.staging = fs.join(folder, STAGING, job)
        self.format = file_format
        self.options = dict(options or {})
        self.shrink = 1.0
        """Merged file size / sum of its segments' sizes, as last seen (re-encoding may shrink)."""

    def commit(self, handle: StagedHandle) -> None:
        """Make the handle's closed groups visible; already-published groups are skipped."""
        for staged, final in handle.files:
            self._commit_file(staged, final)
        for group in handle.groups:
            if group["closed"]:
                self.publish(group)

    def _commit_file(self, staged: str, final: str, *, strict: bool = True) -> None:
        source = self.fs.join(self.staging, staged)
        target = self.fs.join(self.folder, final)
        if self.fs.exists(source):
            if self.fs.exists(target):
                msg = f"cannot commit {source}: {target} exists already"
                raise RuntimeError(msg)
            self.fs.rename(source, target)
        elif not self.fs.exists(target):
            if not strict:
                log.warning("%s of the last run is gone (removed since?); not committed", target)
                return
            msg = f"cannot commit {target}: its staged file {source} is gone"
            raise RuntimeError(msg)

    def target(self, group: dict[str, Any]) -> str:
        """The visible path of a group's file."""
        return self.fs.join(self.folder, group["dir"], group["final"])

    def publish(self, group: dict[str, Any], *, strict: bool = True) -> None:
        """Make one group visible: rename its single segment, or merge its segments into a
        hidden file and rename that. Idempotent: a group whose file exists is done (and
        segments a crash left behind after the rename are deleted). Not ``strict``: a group
        whose staged files and target are all gone is skipped (removed since it was done)."""
        target = self.target(group)
        segments = [self.fs.join(self.staging, name) for name in group["segments"]]
        if self.fs.exists(target):
            for segment in segments:
                self.fs.delete(segment)
            return
        missing = [s for s in segments if not self.fs.exists(s)]
        if missing and not strict and len(missing) == len(segments):
            log.warning("%s of the last run is gone (removed since?); not committed", target)
            return
        if missing:
            msg = f"cannot commit {target}: its staged file(s) {', '.join(missing)} are gone"
            raise RuntimeError(msg)
        if len(segments) == 1:
            self.fs.rename(segments[0], target)
            return
        if self.format is None:
            msg = f"cannot merge {len(segments)} staged files into {target}: no format given"
            raise RuntimeError(msg)
        merged = self.fs.join(self.staging, f".{group['final']}.{uuid.uuid4().hex[:8]}.merging")
        fs = self.fs
        openers: list[Opener] = [functools.partial(fs.open_read, path) for path in segments]
        try:
            self.format.merge(openers, fs.open_write(merged), self.options)
            if group.get("size"):
                self.shrink = max(0.2, min(1.0, fs.size(merged) / group["size"]))
            fs.rename(merged, target)
        except FileExistsError:
            log.info("%s was published concurrently", target)
        finally:
            if fs.exists(merged):
                fs.delete(merged)
        for segment in segments:
            fs.delete(segment)

    def abort(self, handle: StagedHandle) -> None:
        """Delete what a handle's checkpoint prepared."""
        for staged, _final in handle.files:
            self.fs.delete(self.fs.join(self.staging, staged))
        for name in handle.new:
            self.fs.delete(self.fs.join(self.staging, name))

    def recover(self, handles: list[StagedHandle], *, strict: bool = True) -> None:
        """Commit ``handles`` (every group, open ones too), then delete every other staged file
        of the job. A group can appear in several handles (a group grows across checkpoints):
        its latest version, the one with the most segments, is the one committed.

        ``strict=False`` is for the handles of an earlier, completed run (handed over in case
        its last commit did not finish): output removed since then is not an error."""
        keep: set[str] = set()
        groups: dict[str, dict[str, Any]] = {}
        for handle in handles:
            for staged, final in handle.files:
                self._commit_file(staged, final, strict=strict)
                keep.add(staged)
            for group in handle.groups:
                known = groups.get(group["id"])
                if known is None or len(group["segments"]) > len(known["segments"]):
                    groups[group["id"]] = group
        for group in groups.values():
            self.publish(group, strict=strict)
        for entry in self.fs.listdir(self.staging):
            if entry.path.rsplit("/", 1)[-1] not in keep:
                self.fs.delete(entry.path, recursive=entry.is_dir)

    def remove_if_empty(self) -> None:
        """Remove the job's staging folder, then ``.syncx-staging`` itself, where empty: after a
        successful job nothing is left there, and empty hidden folders puzzle people listing
        the target (Hive and Spark skip them). Another job's files keep them; a job creating
        its own meanwhile makes the delete fail, which is fine."""
        for folder in (self.staging, self.fs.join(self.folder, STAGING)):
            try:
                if self.fs.listdir(folder):
                    return
                self.fs.delete(folder)
            except (OSError, SyncxError) as exc:  # cosmetic: never fail a finished job for it
                log.debug("staging folder %s stays: %s", folder, exc)
                return

    def clear_for_overwrite(self, *, everything: bool, where: str) -> None:
        """``overwrite``: delete the folder's data files and partition folders (hidden names such
        as the staging folder and ``_SUCCESS`` stay). Anything else found, the run is refused
        before anything is deleted, naming it; ``everything`` (``overwriteAll``) deletes all."""
        entries = [e for e in self.fs.listdir(self.folder) if not is_hidden(_name(e.path))]
        foreign: list[str] = []
        if not everything:
            for entry in entries:
                self._collect_foreign(entry, foreign)
        if foreign:
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            extension = self.format.extension if self.format else ""
            kind = {"txt": "text", "jsonl": "JSON lines"}.get(extension, extension)
            msg = (
                f"{where}.writeMode: overwrite deletes only {kind} data files and partition "
                f"folders of {self.folder}, and it also holds {shown}; move them away, or set "
                "overwriteAll: true to delete everything in the folder"
            )
            raise FatalError(msg)
        for entry in entries:
            self.fs.delete(entry.path, recursive=entry.is_dir)

    def _collect_foreign(self, entry: FileInfo, foreign: list[str]) -> None:
        """Add to ``foreign`` what under ``entry`` is neither a data file of the format nor a
        partition folder (``key=value``) holding only such (hidden names are not looked at)."""
        name = _name(entry.path)
        if entry.is_dir:
            if name.find("=") <= 0:
                foreign.append(f"the folder {entry.path}")
                return
            for child in self.fs.listdir(entry.path):
                if not is_hidden(_name(child.path)):
                    self._collect_foreign(child, foreign)
        elif not self._is_data_file(entry, name):
            foreign.append(entry.path)

    def _is_data_file(self, entry: FileInfo, name: str) -> bool:
        """A file named with one of the format's extensions, or with none (Hive's ``000000_0``)
        and starting as the format does (text: no NUL byte, or compressed)."""
        if self.format is None:
            return True
        extension = _extension(name)
        if extension:
            return extension in _DATA_EXTENSIONS.get(self.format.extension, set())
        if entry.size == 0:
            return True
        with self.fs.open_read(entry.path) as stream:
            head = stream.read(512)
        if not self.format.matches(head):
            return False
        binary = self.format.extension in ("parquet", "orc")
        return binary or b"\0" not in head or head.startswith(_COMPRESSED_MAGIC)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# -- Hive partition folders --------------------------------------------------------------------

_ESCAPED = {chr(c) for c in range(1, 32)} | set("\"#%'*/:=?\\\x7f{[]^")


def _escape_partition(value: str) -> str:
    """Hive's ``FileUtils.escapePathName``: special characters as ``%XX``."""
    if value == "":
        return HIVE_DEFAULT_PARTITION
    return "".join(f"%{ord(ch):02X}" if ch in _ESCAPED else ch for ch in value)


def _partition_text(column: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        text = pc.cast(column.cast(pa.timestamp(column.type.unit)), pa.string())
        text = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+$", r"\1")
        return pc.replace_substring_regex(text, r"\.0+$", "")
    return pc.cast(column, pa.string())


def hive_partition_dirs(
    batch: pa.RecordBatch, columns: list[str]
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Split ``batch`` by the values of ``columns`` into (``a=1/b=x`` folder, rows without the
    partition columns), as Hive lays out partitions (NULL: ``__HIVE_DEFAULT_PARTITION__``)."""
    null = "\x00null\x00"
    texts = [pc.fill_null(_partition_text(batch.column(name)), null) for name in columns]
    keys = pc.binary_join_element_wise(*texts, "\x00/") if len(texts) > 1 else texts[0]
    data = batch.drop_columns(columns)
    for key in pc.unique(keys).to_pylist():
        values = key.split("\x00/") if len(texts) > 1 else [key]
        folder = "/".join(
            f"{name}={HIVE_DEFAULT_PARTITION if value == null else _escape_partition(value)}"
            for name, value in zip(columns, values, strict=True)
        )
        yield folder, data.filter(pc.equal(keys, key))


# -- the writer and its subtasks ---------------------------------------------------------------


class StagedFileWriter(Writer[P]):
    """A writer of files staged and renamed through :class:`StagedFiles` (local or HDFS).

    Subclasses say where (:attr:`folder`, :meth:`make_filesystem`), in which format and with
    which options, and how input batches become the file's columns (:meth:`shaper`).
    """

    handle_type = StagedHandle
    compact: bool = False
    """Keep a file group open across checkpoints up to ``max_file_size`` (merge on commit)."""

    folder: str
    format: FileFormat
    part_prefix: str = "part-"
    max_file_size: int = 512 * 1024 * 1024
    partition: tuple[str, ...] = ()

    def __init__(self, params: P, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self._fs: FileSystem | None = None
        self._staged: StagedFiles | None = None
        self._lock = threading.Lock()
        self._open_groups: dict[str, dict[str, Any]] = {}
        """Committed groups still open (kept across checkpoints), published by ``finish``."""

    def make_filesystem(self) -> FileSystem:
        """The filesystem the folder is on (created on first use: no I/O in constructors)."""
        return LocalFileSystem()

    @property
    def fs(self) -> FileSystem:
        """The filesystem, created on first use."""
        if self._fs is None:
            self._fs = self.make_filesystem()
        return self._fs

    @property
    def staged(self) -> StagedFiles:
        """The staging rules for this job's folder."""
        if self._staged is None:
            self._staged = StagedFiles(
                self.fs, self.folder, self.ctx.job_name, self.format, self.format_options()
            )
        return self._staged

    def format_options(self) -> dict[str, object]:
        """Options of the format writer (compression, row groups, delimiters)."""
        return {}

    def shaper(self, schema: pa.Schema | None) -> Shaper:
        """A function turning input batches into the file's columns (one per subtask)."""
        del schema

        def shape(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
            return batch, []

        return shape

    @override
    def begin(self, handles: list[StagedHandle], *, fresh: bool) -> None:
        self.staged.recover(handles, strict=not fresh)
        if fresh and getattr(self.params, "write_mode", "append") == "overwrite":
            self.staged.clear_for_overwrite(
                everything=getattr(self.params, "overwrite_all", False), where=WHERE
            )

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        return StagedWriterTask(self, subtask, self.shaper(schema))

    def note_committed(self, groups: list[dict[str, Any]]) -> None:
        """A task committed these groups: remember the open ones, forget the published ones."""
        with self._lock:
            for group in groups:
                if group["closed"]:
                    self._open_groups.pop(group["id"], None)
                else:
                    self._open_groups[group["id"]] = group

    def publish_open_groups(self, ids: set[str] | None = None) -> None:
        """Publish committed open groups (all, or those in ``ids``), merging them in parallel."""
        with self._lock:
            chosen = [g for k, g in self._open_groups.items() if ids is None or k in ids]

        def publish(group: dict[str, Any]) -> None:
            self.staged.publish(group)
            with self._lock:
                self._open_groups.pop(group["id"], None)

        if len(chosen) <= 1:
            for group in chosen:
                publish(group)
            return
        with ThreadPoolExecutor(max_workers=min(4, len(chosen))) as pool:
            for future in [pool.submit(publish, group) for group in chosen]:
                future.result()

    def release(self) -> None:
        """Let go of what the run holds in the staging folder (``hdfswriter``'s folder lock)."""

    @override
    def finish(self) -> None:
        self.publish_open_groups()
        self.release()
        self.staged.remove_if_empty()


class FileWriter(StagedFileWriter[FileWriterParams]):
    """Part files in a local folder."""

    Parameters = FileWriterParams

    def __init__(self, params: FileWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.format = format_named(params.file_type)
        self.folder = params.path
        self.part_prefix = f"{params.file_name}-"
        self.max_file_size = params.max_file_size

    @override
    def read_back(
        self, table: str | None = None, columns: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]] | None:
        """The folder's part files through ``filereader`` (a CDC job's are a changelog)."""
        del columns
        return None if table is not None else ("filereader", {})

    @override
    def check(self) -> None:
        if self.fs.exists(self.params.path) and not self.fs.is_dir(self.params.path):
            msg = (
                f"job.content[0].writer.parameter.path: {self.params.path} is a file, not a folder"
            )
            raise ValueError(msg)
        self.fs.makedirs(self.staged.staging)

    @override
    def format_options(self) -> dict[str, object]:
        params = self.params
        return {
            "compress": None if params.compress == "none" else params.compress,
            "rowGroupSize": params.row_group_size,
            "enableDictionary": params.enable_dictionary,
            "fieldDelimiter": params.field_delimiter,
            "header": params.header,
        }

    @override
    def shaper(self, schema: pa.Schema | None) -> Shaper:
        columns = _target_columns(self.params.column)
        resolved: list[pa.Schema] = []

        def shape(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[DirtyRecord]]:
            if not resolved:
                if not columns:
                    resolved.append(batch.schema)
                else:
                    fields = [
                        pa.field(name, kind or batch.schema.field(i).type)
                        for i, (name, kind) in enumerate(columns[: batch.num_columns])
                    ]
                    resolved.append(pa.schema(fields))
            return conform(batch, resolved[0])

        return shape


def _target_columns(columns: list[WriterColumn | str]) -> list[tuple[str, pa.DataType | None]]:
    out: list[tuple[str, pa.DataType | None]] = []
    for column in columns:
        if isinstance(column, str):
            out.append((column, None))
        else:
            out.append((column.name, arrow_type(column.type) if column.type else None))
    return out


@dataclass
class _Group:
    """One future target file: its prepared segments and the segment being written."""

    id: str
    dir: str
    final: str
    segments: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    size: int = 0
    writer: FormatWriter | None = None
    writing: str | None = None
    sequence: int = 0
    closed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dir": self.dir,
            "final": self.final,
            "segments": list(self.segments),
            "closed": self.closed,
            "size": self.size,
        }


class StagedWriterTask(WriterTask):
    """One writer subtask of a :class:`StagedFileWriter`."""

    def __init__(self, writer: StagedFileWriter[Any], subtask: int, shaper: Shaper) -> None:
        self._writer = writer
        self._shape = shaper
        self._subtask = subtask
        self._fs = writer.fs
        self._staged = writer.staged
        self._format = writer.format
        self._options = writer.format_options()
        self._extension = self._format.file_extension(self._options)
        self._token = uuid.uuid4().hex[:8]
        self._groups: dict[str, _Group] = {}
        self._full: list[_Group] = []
        self._numbers = 0
        self._committed: set[str] = set()
        self._discarded = False
        self._buffered = 0
        """Bytes the open files hold in memory (:data:`BUFFER_BUDGET`)."""

    # -- writing -----------------------------------------------------------------------------

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        shaped, dirty = self._shape(batch)
        if shaped.num_rows:
            if self._writer.partition:
                for folder, part in hive_partition_dirs(shaped, list(self._writer.partition)):
                    self._append(self._group(folder), part)
            else:
                self._append(self._group(""), shaped)
        return dirty

    def _group(self, folder: str) -> _Group:
        group = self._groups.get(folder)
        if group is None:
            ident = (
                f"{self._writer.ctx.run_id}-{self._subtask:03d}-{self._token}-{self._numbers:04d}"
            )
            self._numbers += 1
            final = f"{self._writer.part_prefix}{ident}.{self._extension}"
            group = self._groups[folder] = _Group(ident, folder, final)
        return group

    def _append(self, group: _Group, batch: pa.RecordBatch) -> None:
        if group.writer is None:
            group.writing = f"{group.id}-{group.sequence:05d}.{self._extension}.inprogress"
            stream = self._fs.open_write(self._fs.join(self._staged.staging, group.writing))
            group.writer = self._format.writer(stream, batch.schema, self._options)
        held = group.writer.buffered()
        group.writer.write(batch)
        self._buffered += group.writer.buffered() - held
        if self._buffered > BUFFER_BUDGET:
            self._flush_largest()
        # a group of several segments is merged into a file smaller than their sum
        limit = self._writer.max_file_size / (self._staged.shrink if group.size else 1.0)
        if group.size + group.writer.size() >= limit:
            self._flush(group.writer)
            if group.size + group.writer.size() >= limit:
                self._close_segment(group)
                group.closed = True
                self._full.append(group)
                del self._groups[group.dir]

    def _flush_largest(self) -> None:
        """Write out the largest buffered row groups until the subtask is within its budget."""
        writers = sorted(
            (g.writer for g in self._groups.values() if g.writer is not None),
            key=lambda w: w.buffered(),
            reverse=True,
        )
        for writer in writers:
            if self._buffered <= BUFFER_BUDGET // 2:
                break
            self._flush(writer)

    def _flush(self, writer: FormatWriter) -> None:
        self._buffered -= writer.buffered()
        writer.flush()

    def _close_segment(self, group: _Group) -> None:
        if group.writer is None or group.writing is None:
            return
        writer, name = group.writer, group.writing
        self._buffered -= writer.buffered()
        group.writer, group.writing = None, None
        ratio = writer.size_ratio
        try:
            writer.close()
        except BaseException:
            # Not closed (a full disk): its rows are in no handle yet, so they are read again
            # after a restore; delete it now rather than leave it unnamed until then.
            with contextlib.suppress(Exception):
                self._fs.delete(self._fs.join(self._staged.staging, name))
            raise
        if ratio is not None:
            self._options["sizeRatio"] = ratio
        group.size += self._fs.size(self._fs.join(self._staged.staging, name))
        group.pending.append(name)
        group.sequence += 1

    # -- two phases --------------------------------------------------------------------------

    @override
    def prepare(self, checkpoint_id: int) -> StagedHandle | None:
        prepared: list[str] = []
        for group in [*self._full, *self._groups.values()]:
            self._close_segment(group)
            for name in group.pending:
                base = name.removesuffix(f".{self._extension}.inprogress")
                final = f"{base}-c{checkpoint_id}.{self._extension}"
                self._fs.rename(
                    self._fs.join(self._staged.staging, name),
                    self._fs.join(self._staged.staging, final),
                )
                group.segments.append(final)
                prepared.append(final)
            group.pending = []
        if not self._writer.compact:
            for group in self._groups.values():
                if group.segments:
                    group.closed = True
                    self._full.append(group)
            self._groups = {k: g for k, g in self._groups.items() if not g.closed}
        groups = [g.to_json() for g in self._full]
        groups += [g.to_json() for g in self._groups.values() if g.segments]
        self._full = []
        if not groups:
            return None
        return StagedHandle(groups=groups, new=prepared)

    @override
    def commit(self, handle: StagedHandle) -> None:
        self._staged.commit(handle)
        self._writer.note_committed(handle.groups)
        self._committed.update(g["id"] for g in handle.groups)

    @override
    def abort(self, handle: StagedHandle) -> None:
        self._staged.abort(handle)

    @override
    def discard(self) -> None:
        self._discarded = True
        for group in [*self._full, *self._groups.values()]:
            names = list(group.pending)
            if group.writer is not None and group.writing is not None:
                writer, name = group.writer, group.writing
                group.writer, group.writing = None, None
                names.append(name)
                try:
                    writer.close()
                except Exception:
                    log.debug("closing a discarded staged file failed", exc_info=True)
            for name in names:
                self._fs.delete(self._fs.join(self._staged.staging, name))
            group.pending = []
        self._buffered = 0

    @property
    def discarded(self) -> bool:
        """Whether the task ended by :meth:`discard` (a failure or a stop), not by a final commit."""
        return self._discarded

    @override
    def close(self) -> None:
        if self._discarded:
            # Stopping or failing: what was committed but kept open becomes visible now
            # (best effort: the next run's restore publishes it otherwise).
            self._writer.publish_open_groups(self._committed)
