"""The state backend: checkpoints, the incremental job state, and the run lock of one job.

Layout of a state directory (default ``.syncx/state/<job name>``)::

    LOCK                       held (flock) by the running process; says pid, host, start time
    checkpoints/chk-0000000042.json   one file per completed checkpoint (temp + fsync + rename)
    job-state.json             what a scheduled job's next run starts from (a watermark)
    dirty/                     dirty records, unless setting.dirty.path says otherwise
    tmp/                       plugins' temporary files (a binlog reader's spill; unlinked)

Every file carries ``format`` (see :data:`FORMAT`); older formats are migrated step by step on
load. A checkpoint that cannot be read is skipped with a warning and the one before it is used,
unless its output may already be committed (its ``.committing`` marker, written after the
checkpoint and before any writer commits, exists): restoring the one before would then duplicate
that output, so the restore is refused unless forced.

``--state-dir`` takes a path (this machine only), ``file:///path`` (a mount every node shares) or
a URL of shared storage (``webhdfs://``, ``hdfs://``: a filesystem from the ``syncx.filesystems``
entry points, see :class:`StateFileSystem`), so that every node of a Ray cluster and a driver
restarted elsewhere find the same checkpoints. The same rules hold on each: atomic writes (temp
file, rename), retention, the ``.committing`` markers, the run lock, the job's fingerprint.

A full disk while writing any of these is a :class:`~sync.errors.DiskFullError` naming the file
and the space left. A write that fails leaves no file a restore would read: the temp file of a
checkpoint (``.chk-….json.tmp-<pid>``, a name :meth:`StateDir.checkpoint_paths` never lists) is
deleted on the way out, and one a killed run left is removed by the next run once it holds the
lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from sync.contract import Handle, Split, State, decode, encode
from sync.errors import (
    DiskFullError,
    JobFailedError,
    JobFileError,
    SyncxError,
    disk_full_as,
    is_disk_full,
)

__all__ = [
    "FORMAT",
    "Checkpoint",
    "SplitState",
    "StateDir",
    "StateFileSystem",
    "StateLockedError",
    "commit_order",
    "open_state_filesystem",
    "process_alive",
]

log = logging.getLogger(__name__)

FORMAT = 2
"""Version of the checkpoint and job-state files written by this code."""


def _handles_with_checkpoint_ids(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 listed each subtask's handles, oldest first, without the checkpoints that
    prepared them: a subtask prepares at most one handle per checkpoint, so count back from the
    checkpoint's own id (exact unless a subtask had nothing to prepare at some checkpoint)."""
    if "handles" in raw:
        newest = int(raw["id"])
        raw["handles"] = {
            subtask: [
                {"checkpoint": newest - (len(handles) - 1 - i), "handle": h}
                for i, h in enumerate(handles)
            ]
            for subtask, handles in raw["handles"].items()
        }
    return {**raw, "format": 2}


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _handles_with_checkpoint_ids
}
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
    handles: dict[int, dict[int, Handle]]
    """Writer subtask → id of the checkpoint that prepared it → uncommitted handle."""
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
                str(subtask): [{"checkpoint": c, "handle": encode(h)} for c, h in value.items()]
                for subtask, value in self.handles.items()
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
            handles={
                int(subtask): {int(item["checkpoint"]): item["handle"] for item in value}
                for subtask, value in raw["handles"].items()
            },
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
        """Every writer subtask's handles, in commit order (:func:`commit_order`)."""
        return [handle for _, handle in commit_order(self.handles)]


def commit_order(handles: dict[int, dict[int, Handle]]) -> list[tuple[int, Handle]]:
    """``(subtask, handle)`` in the order of the checkpoints that prepared them, then by subtask.

    A restore must not commit checkpoint n+1 of one subtask before n of another: n may hold an
    older version of a row that n+1 changed.
    """
    prepared = [
        (checkpoint_id, subtask, handle)
        for subtask, by_checkpoint in handles.items()
        for checkpoint_id, handle in by_checkpoint.items()
    ]
    prepared.sort(key=lambda item: item[:2])
    return [(subtask, handle) for _, subtask, handle in prepared]


class StateLockedError(JobFailedError):
    """Another process runs the same job on the same state directory."""


class StateFileSystem(Protocol):
    """The file operations the state backend needs; paths are strings in the store's syntax.

    ``libs.fs.FileSystem`` (and so the WebHDFS client) has this shape; the engine names it here so
    that it needs no connector library. A store for ``--state-dir SCHEME://...`` comes from the
    ``syncx.filesystems`` entry point group: ``SCHEME = "module:factory"``, the factory taking
    the URL and returning ``(filesystem, path inside it)``.
    """

    def open_write(self, path: str) -> BinaryIO:
        """A new file (parents created); ``close`` makes it durable."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file; :class:`FileNotFoundError` when missing."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Move ``source`` to ``target`` (which must not exist), atomically."""
        ...

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file; a missing one is not an error."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        ...

    def listdir(self, path: str) -> list[Any]:
        """Entries (with a ``path`` attribute) of a folder; empty when it does not exist."""
        ...

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents."""
        ...

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; False when it did."""
        ...


@dataclass(frozen=True)
class _Entry:
    path: str


class _LocalFileSystem:
    """The local disk (or a shared mount): fsync before rename, fsync of the folder after."""

    def open_write(self, path: str) -> BinaryIO:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Path(path).open("wb")

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def rename(self, source: str, target: str) -> None:
        Path(source).replace(target)
        fd = os.open(Path(target).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        del recursive
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def listdir(self, path: str) -> list[Any]:
        folder = Path(path)
        return [_Entry(str(p)) for p in sorted(folder.iterdir())] if folder.is_dir() else []

    def makedirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        return True


def open_state_filesystem(location: str | Path) -> tuple[StateFileSystem | None, str, bool]:
    """``--state-dir``: (a filesystem for a URL or ``None`` for the local disk, the path in it,
    whether every node of a cluster sees it).

    A plain path is local to this machine; ``file:///path`` says it is a shared mount;
    ``webhdfs://``/``hdfs://`` (and any scheme a package registers under ``syncx.filesystems``)
    is shared storage.
    """
    text = str(location)
    parts = urlsplit(text)
    if len(parts.scheme) <= 1:  # a path (or a Windows drive letter)
        return None, text, False
    if parts.scheme == "file":
        return None, parts.path or "/", True
    found = {ep.name: ep for ep in entry_points(group="syncx.filesystems")}
    entry = found.get(parts.scheme)
    if entry is None:
        known = ", ".join(["file", *sorted(found)])
        msg = f"--state-dir {text}: no filesystem for '{parts.scheme}://' (known: {known})"
        raise JobFileError(msg)
    factory = entry.load()
    fs, path = factory(text)
    return fs, path, True


class StateDir:
    """The state directory of one job, on the local disk or on shared storage (a URL)."""

    def __init__(self, root: Path | str) -> None:
        fs, path, shared = open_state_filesystem(root)
        self.shared = shared
        """Whether every node of a cluster (and a driver on another machine) can reach it."""
        self.url: str | None = str(root) if fs is not None else None
        self._remote = fs is not None
        self.fs: StateFileSystem = fs if fs is not None else _LocalFileSystem()
        self.path = path.rstrip("/") or "/"
        self.root: Path = Path(path) if fs is None else Path(".syncx") / "remote-state"
        """Where local things of the job go (the dirty records by default)."""
        self.checkpoints = self._join("checkpoints")
        self._lock_file: IO[str] | None = None
        self._lock_token: str | None = None

    def __str__(self) -> str:
        return self.url or self.path

    @property
    def temp(self) -> Path:
        """Where the run's plugins put temporary files (:attr:`JobContext.temp_dir`): ``tmp/``
        here when this folder is on this machine only (its disk, chosen for the job, rather than
        a system temp dir that may be memory), else the system temp dir (shared storage may be
        remote or slow, and a node of a cluster writes its own)."""
        if self.shared:
            return Path(tempfile.gettempdir())
        return Path(self.path) / "tmp"

    @property
    def identity_path(self) -> Path:
        """What names the job's state in :func:`sync.contract.job_identity` (stable anywhere)."""
        if self.url is None:
            return Path(self.path)
        parts = urlsplit(self.url)
        return Path("/", f"{parts.scheme}:", parts.netloc, parts.path.lstrip("/"))

    def _join(self, *names: str) -> str:
        return "/".join([self.path.rstrip("/"), *names])

    def prepare(self) -> None:
        """Create the folders and prove they are writable, before anything is read."""
        probe = self._join(f".probe-{os.getpid()}")
        try:
            self.fs.makedirs(self.checkpoints)
            with self.fs.open_write(probe) as stream:
                stream.write(b"ok")
            self.fs.delete(probe)
        except (OSError, SyncxError) as exc:
            self._discard(probe)
            if is_disk_full(exc) or isinstance(exc, DiskFullError):
                what = "writing to the state directory"
                raise DiskFullError(self.path, what=what) from exc
            reason = getattr(exc, "strerror", None) or exc
            msg = f"state directory {self} is not writable ({reason}); pass --state-dir DIR"
            raise JobFailedError(msg) from exc

    def lock(self) -> None:
        """Take the run lock, or refuse naming the process that holds it.

        Local: ``flock`` (released by the kernel when the process dies). Shared storage: a
        ``LOCK`` file created exclusively; one left by a dead process of this host is taken over,
        one of another host must be removed by hand (the message says so).
        """
        if self._remote:
            self._lock_remote()
            self._remove_stale_temps()
            return
        handle = Path(self._join("LOCK")).open("a+", encoding="utf-8")  # noqa: SIM115 - held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StateLockedError(self._locked_message(holder)) from exc
        try:
            with disk_full_as(self._join("LOCK")):
                handle.seek(0)
                handle.truncate()
                handle.write(_holder() + "\n")
                handle.flush()
        except BaseException:
            handle.close()  # the lock goes with it
            raise
        self._lock_file = handle
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """Delete the temp files of checkpoint writes a killed run left (never read as
        checkpoints; removed only while holding the lock, so no live run's)."""
        for entry in self._list():
            name = str(entry.path).rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".chk-") and ".json.tmp-" in name:
                self._discard(self._join("checkpoints", name))

    def _discard(self, path: str) -> None:
        """Delete ``path`` if it is there, ignoring failures (cleaning up after a failure)."""
        with contextlib.suppress(Exception):
            self.fs.delete(path)

    def _locked_message(self, holder: str) -> str:
        return (
            f"the job's state directory {self} is in use by {holder}; two runs of one "
            "job must not share a state directory (wait for it, or pass another --state-dir)"
        )

    def _lock_remote(self) -> None:
        path = self._join("LOCK")
        token = uuid.uuid4().hex
        for _ in range(3):
            if self.fs.create_exclusive(path, f"{_holder()} token {token}\n".encode()):
                self._lock_token = token
                return
            try:
                holder = self.fs.read_bytes(path).decode("utf-8", "replace").strip()
            except FileNotFoundError:
                continue
            words = holder.split()
            if (
                len(words) > 4
                and words[4] == socket.gethostname()
                and not process_alive(int(words[1]))
            ):
                self.fs.delete(path)
                continue
            msg = self._locked_message(holder.rsplit(" token ", 1)[0])
            raise StateLockedError(f"{msg}. If that process is gone, delete {path}")
        raise StateLockedError(self._locked_message("another process"))

    def unlock(self) -> None:
        """Release the run lock."""
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
        if self._lock_token is not None:
            path = self._join("LOCK")
            with contextlib.suppress(FileNotFoundError, OSError, SyncxError):
                if self._lock_token in self.fs.read_bytes(path).decode("utf-8", "replace"):
                    self.fs.delete(path)
            self._lock_token = None

    def checkpoint_paths(self) -> list[str]:
        """Stored checkpoint files, oldest first."""
        names = (str(entry.path).rstrip("/").rsplit("/", 1)[-1] for entry in self._list())
        found = sorted(n for n in names if n.startswith("chk-") and n.endswith(".json"))
        return [self._join("checkpoints", name) for name in found]

    def _list(self) -> list[Any]:
        return self.fs.listdir(self.checkpoints)

    def next_id(self) -> int:
        """A checkpoint id above every stored one (ids never repeat within a state dir)."""
        ids = [_id_of(path) for path in self.checkpoint_paths()]
        return max(ids, default=0) + 1

    def write_checkpoint(self, checkpoint: Checkpoint, retain: int) -> str:
        """Store a checkpoint atomically, then drop all but the newest ``retain``."""
        path = self.find(checkpoint.id)
        self._atomic_write(path, checkpoint.to_json())
        for old in self.checkpoint_paths()[:-retain]:
            for stale in (old, _committing(old)):
                self.fs.delete(stale)
        return path

    def mark_committing(self, checkpoint_id: int) -> None:
        """Record that writers may now commit checkpoint ``checkpoint_id``'s output."""
        marker = _committing(self.find(checkpoint_id))
        with disk_full_as(marker), self.fs.open_write(marker):
            pass

    def load(self, path: str | Path) -> Checkpoint:
        """Read one checkpoint file; a bad one raises :class:`JobFileError`."""
        try:
            return Checkpoint.from_json(json.loads(self.fs.read_bytes(str(path))))
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
                if self.fs.exists(_committing(path)) and not force:
                    msg = (
                        f"{exc}, and its output may already be committed: restoring an older "
                        "checkpoint could write that output twice. Repair or remove the file, or "
                        "pass --force-restore to use the checkpoint before it anyway"
                    )
                    raise JobFileError(msg) from exc
                log.warning("skipping %s; using the checkpoint before it", exc)
        return None

    def committed(self) -> Checkpoint | None:
        """The newest checkpoint whose output every writer has surely committed, while its
        job may still be running: the newest when it is final (a bounded run ends only after
        committing it), else the one before it of the same run (checkpoint n + 1 is stored
        only once every writer acknowledged it, and a writer commits n before it takes barrier
        n + 1), else the newest."""
        for _ in range(3):
            latest = self.latest()
            if latest is None or latest.final:
                return latest
            older = [p for p in self.checkpoint_paths() if _id_of(p) < latest.id]
            if not older:
                return latest
            try:
                before = self.load(older[-1])
            except JobFileError:
                continue  # the running job removed it meanwhile (retention): look again
            return before if before.run_id == latest.run_id else latest
        return self.latest()

    def find(self, checkpoint_id: int) -> str:
        """The file of checkpoint ``checkpoint_id``."""
        return self._join("checkpoints", f"chk-{checkpoint_id:010d}.json")

    def read_job_state(self) -> dict[str, Any]:
        """The incremental state the last successful run left (empty when none)."""
        path = self._join("job-state.json")
        try:
            raw = _migrate(json.loads(self.fs.read_bytes(path)))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            msg = f"job state {path} is unreadable ({exc}); remove it to start the increment anew"
            raise JobFailedError(msg) from exc
        return dict(raw.get("state") or {})

    def write_job_state(self, state: dict[str, Any]) -> None:
        """Store the incremental state for the next run, atomically."""
        self._atomic_write(self._join("job-state.json"), {"format": FORMAT, "state": state})

    def _atomic_write(self, path: str, payload: dict[str, Any]) -> None:
        """Temp file made durable, then renamed: a reader sees the old file or the new.

        A store whose rename refuses an existing target (HDFS) has the old file removed first;
        only ``job-state.json`` is ever replaced, and a lost one means a full re-read, not a
        wrong one.
        """
        folder, _, name = path.rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{os.getpid()}"
        data = json.dumps(payload, default=str, indent=1).encode()
        try:
            with disk_full_as(path):
                with self.fs.open_write(tmp) as stream:
                    stream.write(data)
                    stream.flush()
                    if not self._remote:
                        os.fsync(stream.fileno())
                if self._remote and self.fs.exists(path):
                    self.fs.delete(path)
                self.fs.rename(tmp, path)
        except BaseException:
            self._discard(tmp)  # half written: never left for a restore (or a full disk)
            raise


def _committing(path: str) -> str:
    return path.removesuffix(".json") + ".committing"


def _holder() -> str:
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()} since {started}"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts): a lock whose
    holder is gone may be taken over."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _id_of(path: str) -> int:
    return int(path.rsplit("/", 1)[-1].removesuffix(".json").split("-", 1)[1])


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = int(raw.get("format", 0))
    if version > FORMAT:
        msg = f"state written by a newer syncx (format {version}, this one reads {FORMAT})"
        raise ValueError(msg)
    while version < FORMAT:
        raw = _MIGRATIONS[version](raw)
        version += 1
    return raw
