"""The state backend: checkpoints, the incremental job state, and the run lock of one job.

Layout of a state directory (default ``.syncx/state/<job name>``)::

    LOCK                       held (flock) by the running process; says pid, host, start time
    checkpoints/chk-0000000042.json   one file per completed checkpoint (temp + fsync + rename)
    job-state.json             what a scheduled job's next run starts from (a watermark)
    dirty/                     dirty records, unless setting.dirty.path says otherwise

Every file carries ``format`` (see :data:`FORMAT`); older formats are migrated step by step on
load. A checkpoint that cannot be read is skipped with a warning and the one before it is used,
unless its output may already be committed (its ``.committing`` marker, written after the
checkpoint and before any writer commits, exists): restoring the one before would then duplicate
that output, so the restore is refused unless forced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sync.contract import Handle, Split, State, decode, encode
from sync.errors import JobFailedError, JobFileError

__all__ = ["FORMAT", "Checkpoint", "SplitState", "StateDir", "StateLockedError"]

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the checkpoint and job-state files written by this code."""

_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``format n`` → function turning an n file into an n+1 file."""


@dataclass
class SplitState:
    """Where a split stands in a checkpoint: its position, or done."""

    position: Any = None
    done: bool = False


@dataclass
class Checkpoint:
    """One completed checkpoint: reader positions, writer handles, metrics, fingerprint."""

    id: int
    run_id: str
    created: str
    final: bool
    fingerprint: dict[str, Any]
    splits: list[Split]
    positions: dict[str, SplitState]
    handles: dict[int, list[Handle]]
    metrics: dict[str, float] = field(default_factory=dict)
    job_state: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "format": FORMAT,
            "id": self.id,
            "runId": self.run_id,
            "created": self.created,
            "final": self.final,
            "fingerprint": self.fingerprint,
            "splits": [split.to_json() for split in self.splits],
            "positions": {
                key: {"position": encode(state.position), "done": state.done}
                for key, state in self.positions.items()
            },
            "handles": {
                str(key): [encode(h) for h in value] for key, value in self.handles.items()
            },
            "metrics": self.metrics,
            "jobState": self.job_state,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Checkpoint:
        """Load a stored checkpoint, migrating older formats.

        Positions, handles and split data stay in their JSON form here; the engine rebuilds
        them with the plugins' declared types (:meth:`typed`).
        """
        raw = _migrate(raw)
        return cls(
            id=int(raw["id"]),
            run_id=str(raw["runId"]),
            created=str(raw["created"]),
            final=bool(raw["final"]),
            fingerprint=dict(raw["fingerprint"]),
            splits=[Split.from_json(item) for item in raw["splits"]],
            positions={k: SplitState(**v) for k, v in raw["positions"].items()},
            handles={int(k): list(v) for k, v in raw["handles"].items()},
            metrics=dict(raw.get("metrics") or {}),
            job_state=raw.get("jobState"),
        )

    def typed(
        self,
        position_type: type[State] | None,
        split_type: type[State] | None,
    ) -> tuple[list[Split], dict[str, SplitState]]:
        """The splits and positions rebuilt as a reader's declared types."""
        splits = [Split(s.id, decode(split_type, s.data)) for s in self.splits]
        positions = {
            k: SplitState(decode(position_type, v.position), v.done)
            for k, v in self.positions.items()
        }
        return splits, positions

    def all_handles(self) -> list[Handle]:
        """Every writer subtask's handles, in subtask order."""
        return [h for key in sorted(self.handles) for h in self.handles[key]]


class StateLockedError(JobFailedError):
    """Another process runs the same job on the same state directory."""


class StateDir:
    """The state directory of one job."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self._lock_file: IO[str] | None = None

    def prepare(self) -> None:
        """Create the folders and prove they are writable, before anything is read."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_text("ok", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            msg = f"state directory {self.root} is not writable ({exc.strerror or exc}); pass --state-dir DIR"
            raise JobFailedError(msg) from exc

    def lock(self) -> None:
        """Take the run lock, or refuse naming the process that holds it."""
        handle = (self.root / "LOCK").open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            msg = (
                f"the job's state directory {self.root} is in use by {holder}; two runs of one "
                "job must not share a state directory (wait for it, or pass another --state-dir)"
            )
            raise StateLockedError(msg) from exc
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()} since {started}\n")
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        """Release the run lock."""
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def checkpoint_paths(self) -> list[Path]:
        """Stored checkpoint files, oldest first."""
        return sorted(self.checkpoints.glob("chk-*.json"))

    def next_id(self) -> int:
        """A checkpoint id above every stored one (ids never repeat within a state dir)."""
        ids = [_id_of(path) for path in self.checkpoint_paths()]
        return max(ids, default=0) + 1

    def write_checkpoint(self, checkpoint: Checkpoint, retain: int) -> Path:
        """Store a checkpoint atomically, then drop all but the newest ``retain``."""
        path = self.find(checkpoint.id)
        _atomic_write(path, checkpoint.to_json())
        for old in self.checkpoint_paths()[:-retain]:
            for stale in (old, old.with_suffix(".committing")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        return path

    def mark_committing(self, checkpoint_id: int) -> None:
        """Record that writers may now commit checkpoint ``checkpoint_id``'s output."""
        self.find(checkpoint_id).with_suffix(".committing").touch()

    def load(self, path: Path) -> Checkpoint:
        """Read one checkpoint file; a bad one raises :class:`JobFileError`."""
        try:
            return Checkpoint.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise JobFileError(f"checkpoint not found: {path}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JobFileError(f"checkpoint {path} is corrupt or truncated: {exc}") from exc

    def latest(self, *, force: bool = False) -> Checkpoint | None:
        """The newest readable checkpoint; unreadable newer ones are skipped with a warning.

        An unreadable one whose output may be committed already is not skipped (that would
        duplicate its output) unless ``force``.
        """
        for path in reversed(self.checkpoint_paths()):
            try:
                return self.load(path)
            except JobFileError as exc:
                if path.with_suffix(".committing").exists() and not force:
                    msg = (
                        f"{exc}, and its output may already be committed: restoring an older "
                        "checkpoint could write that output twice. Repair or remove the file, or "
                        "pass --force-restore to use the checkpoint before it anyway"
                    )
                    raise JobFileError(msg) from exc
                log.warning("skipping %s; using the checkpoint before it", exc)
        return None

    def find(self, checkpoint_id: int) -> Path:
        """The file of checkpoint ``checkpoint_id``."""
        return self.checkpoints / f"chk-{checkpoint_id:010d}.json"

    def read_job_state(self) -> dict[str, Any]:
        """The incremental state the last successful run left (empty when none)."""
        path = self.root / "job-state.json"
        if not path.exists():
            return {}
        try:
            raw = _migrate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            msg = f"job state {path} is unreadable ({exc}); remove it to start the increment anew"
            raise JobFailedError(msg) from exc
        return dict(raw.get("state") or {})

    def write_job_state(self, state: dict[str, Any]) -> None:
        """Store the incremental state for the next run, atomically."""
        _atomic_write(self.root / "job-state.json", {"format": FORMAT, "state": state})


def _id_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = int(raw.get("format", 0))
    if version > FORMAT:
        msg = f"state written by a newer syncx (format {version}, this one reads {FORMAT})"
        raise ValueError(msg)
    while version < FORMAT:
        raw = _MIGRATIONS[version](raw)
        version += 1
    return raw


def _atomic_write(path: Path, payload: dict[str, Any]) -> None:
    """temp file, fsync, rename, fsync of the folder: a reader sees the old file or the new."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, default=str, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
