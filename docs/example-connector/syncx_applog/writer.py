"""``applogwriter``: records as JSON-lines files in a folder, exactly once (staging + rename).

Each writer subtask appends the rows it receives to a hidden *in-progress* file in the job's
staging folder ``<path>/.applog-staging/<job id>/``. At a checkpoint, ``prepare`` fsyncs and
closes that file and renames it ``<job id>-<run>-<subtask>-c<checkpoint>.jsonl`` inside the
staging folder: durable, not visible. Its handle (:class:`StagedLogs`) names it. ``commit``
renames it into ``path`` as ``<fileName>-<that name>``; a second commit finds it there and
does nothing. ``abort`` deletes it. ``begin`` (every start and every restore) commits the
handles it is given and deletes everything else in this job's staging folder: files of
checkpoints that never completed and the in-progress files of a killed process.
``writeMode: overwrite`` empties the folder's visible files at the start of a fresh run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field
from typing_extensions import override

from sync.contract import DirtyRecord, JobContext, State, Writer, WriterTask
from sync.errors import FatalError, JobFileError
from sync.model import Params

__all__ = ["AppLogWriter", "AppLogWriterParams", "StagedLogs"]

WHERE = "job.content[0].writer.parameter"
STAGING = ".applog-staging"


class AppLogWriterParams(Params):
    """``parameter`` of ``applogwriter``."""

    path: str = Field(description="The target folder.")
    file_name: str = Field(default="log", description="Prefix of the files written.")
    write_mode: Literal["append", "overwrite"] = Field(
        default="append",
        validation_alias=AliasChoices("writeMode", "mode", "write_mode"),
        description="overwrite empties the folder at the start of a fresh run (not a restore).",
    )


@dataclass(frozen=True)
class StagedLogs(State):
    """A handle: the staged files one checkpoint prepared, by name."""

    files: list[str] = field(default_factory=list)


class AppLogWriter(Writer[AppLogWriterParams]):
    """Writes JSON-lines files, staged and renamed at commit."""

    Parameters = AppLogWriterParams
    handle_type = StagedLogs

    def __init__(self, params: AppLogWriterParams, ctx: JobContext) -> None:
        super().__init__(params, ctx)
        self.folder = Path(params.path)
        self.staging = self.folder / STAGING / ctx.job_id

    @override
    def check(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            msg = f"{WHERE}.path: {self.folder} is a file, not a folder"
            raise JobFileError(msg)
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            msg = f"{WHERE}.path: no permission to create {self.staging}"
            raise FatalError(msg) from exc

    @override
    def begin(self, handles: list[StagedLogs], *, fresh: bool) -> None:
        for handle in handles:
            # a fresh run gets the last run's final handles: output removed since is no error
            self.commit(handle, strict=not fresh)
        for leftover in self.staging.iterdir():
            leftover.unlink()
        if fresh and self.params.write_mode == "overwrite":
            for visible in self.folder.iterdir():
                if visible.is_file() and not visible.name.startswith("."):
                    visible.unlink()

    @override
    def open(self, subtask: int, subtasks: int, schema: pa.Schema | None) -> WriterTask:
        return _LogTask(self, subtask)

    def target(self, name: str) -> Path:
        """Where a staged file goes when it is committed."""
        return self.folder / f"{self.params.file_name}-{name}"

    def commit(self, handle: StagedLogs, *, strict: bool = True) -> None:
        """Rename a handle's staged files into the folder; files already there are done."""
        for name in handle.files:
            staged, target = self.staging / name, self.target(name)
            if staged.exists():
                staged.rename(target)
            elif strict and not target.exists():
                msg = f"cannot commit {target}: its staged file {staged} is gone (aborted?)"
                raise FatalError(msg)

    def abort(self, handle: StagedLogs) -> None:
        """Delete a handle's staged files (those still there)."""
        for name in handle.files:
            (self.staging / name).unlink(missing_ok=True)


class _LogTask(WriterTask):
    """One writer subtask: one in-progress file at a time."""

    def __init__(self, writer: AppLogWriter, subtask: int) -> None:
        self._writer = writer
        self._subtask = subtask
        self._prefix = f"{writer.ctx.job_id}-{writer.ctx.run_id}-{subtask:03d}"
        self._file: IO[bytes] | None = None
        self._in_progress = writer.staging / f".{self._prefix}.jsonl.inprogress"

    @override
    def write(self, batch: pa.RecordBatch) -> list[DirtyRecord]:
        if self._file is None:
            self._file = self._in_progress.open("wb")
        lines = [json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist()]
        self._file.write("".join(f"{line}\n" for line in lines).encode())
        return []

    @override
    def prepare(self, checkpoint_id: int) -> StagedLogs | None:
        if self._file is None:
            return None  # nothing written since the last checkpoint
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        name = f"{self._prefix}-c{checkpoint_id}.jsonl"
        self._in_progress.rename(self._writer.staging / name)
        return StagedLogs([name])

    @override
    def commit(self, handle: StagedLogs) -> None:
        self._writer.commit(handle)

    @override
    def abort(self, handle: StagedLogs) -> None:
        self._writer.abort(handle)

    @override
    def discard(self) -> None:
        self.close()
        self._in_progress.unlink(missing_ok=True)

    @override
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
