"""The few filesystem operations file-based plugins need, so one writer serves every store.

The file writer stages, renames and deletes through a :class:`FileSystem`; the local one is here,
a WebHDFS one implements the same methods. Renames are the commit step, so a store must rename
atomically within one folder tree (POSIX and HDFS both do). A full local disk raises
:class:`~sync.errors.DiskFullError` naming the file and the space left, never a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import io
import mmap
import os
import shutil
import typing
from abc import ABC, abstractmethod
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from typing_extensions import Buffer

from sync.errors import disk_full_as

__all__ = [
    "DurableFile",
    "FileInfo",
    "FileSystem",
    "LocalFileSystem",
    "expand_paths",
    "is_hidden",
]


@dataclass(frozen=True)
class FileInfo:
    """A listed entry."""

    path: str
    size: int
    is_dir: bool


class FileSystem(ABC):
    """Paths are strings in the store's own syntax (``/a/b`` on HDFS, a local path here)."""

    @abstractmethod
    def open_write(self, path: str) -> BinaryIO:
        """A new file for writing (parents created); ``close`` makes it durable."""

    @abstractmethod
    def open_read(self, path: str) -> BinaryIO:
        """A file for reading."""

    @abstractmethod
    def rename(self, source: str, target: str) -> None:
        """Move ``source`` to ``target`` (which must not exist)."""

    @abstractmethod
    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file (or a folder with ``recursive``); a missing path is not an error."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""

    @abstractmethod
    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a folder."""

    @abstractmethod
    def listdir(self, path: str) -> list[FileInfo]:
        """Entries of a folder (empty when it does not exist)."""

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Create a folder and its parents."""

    def join(self, *parts: str) -> str:
        """Join path parts with ``/``."""
        return "/".join(p.rstrip("/") if i == 0 else p.strip("/") for i, p in enumerate(parts) if p)

    def size(self, path: str) -> int:
        """The size of a file in bytes."""
        parent, _, name = path.rstrip("/").rpartition("/")
        for entry in self.listdir(parent or "/"):
            if entry.path.rsplit("/", 1)[-1] == name:
                return entry.size
        raise FileNotFoundError(path)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; False when it did.

        Stores with an atomic create-if-absent (``O_EXCL``, HDFS ``CREATE`` without overwrite)
        override this; the default checks first, which two racing writers can both pass.
        """
        if self.exists(path):
            return False
        with self.open_write(path) as stream:
            stream.write(data)
        return True

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file."""
        with self.open_read(path) as stream:
            return stream.read()


class LocalFileSystem(FileSystem):
    """The local disk; ``close`` of a written file fsyncs it."""

    def open_write(self, path: str) -> BinaryIO:
        with disk_full_as(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return typing.cast(BinaryIO, io.BufferedWriter(DurableFile(path), 1 << 16))

    def open_read(self, path: str) -> BinaryIO:
        return Path(path).open("rb")

    def rename(self, source: str, target: str) -> None:
        with disk_full_as(target, what="renaming into"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)  # noqa: PTH104 - atomic rename is the point

    def delete(self, path: str, *, recursive: bool = False) -> None:
        target = Path(path)
        with contextlib.suppress(FileNotFoundError):
            if target.is_dir() and not target.is_symlink():
                if recursive:
                    shutil.rmtree(target)
                else:
                    target.rmdir()
            else:
                target.unlink()

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def is_dir(self, path: str) -> bool:
        return Path(path).is_dir()

    def listdir(self, path: str) -> list[FileInfo]:
        folder = Path(path)
        if not folder.is_dir():
            return []
        return [
            FileInfo(str(entry), entry.stat().st_size if entry.is_file() else 0, entry.is_dir())
            for entry in sorted(folder.iterdir())
        ]

    def makedirs(self, path: str) -> None:
        with disk_full_as(path, what="creating"):
            Path(path).mkdir(parents=True, exist_ok=True)

    def size(self, path: str) -> int:
        return Path(path).stat().st_size

    def create_exclusive(self, path: str, data: bytes) -> bool:
        with disk_full_as(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
            except BaseException:
                Path(path).unlink(missing_ok=True)  # a half-written marker must not count
                raise
        return True


def is_hidden(name: str) -> bool:
    """Whether Hive, Spark and the file readers skip a file or folder name (``.x``, ``_x``)."""
    return name.startswith((".", "_"))


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_paths(fs: FileSystem, patterns: list[str]) -> list[FileInfo]:
    """The files that ``patterns`` name, in order: files, folders (their visible files, recursively)
    and globs (``*``, ``?``, ``[...]`` in any path component).

    Hidden names (starting with ``.`` or ``_``) below a named folder are skipped, as Hive does, and
    a glob matches them only when its component starts with ``.`` or ``_`` itself.
    """
    found: list[FileInfo] = []
    seen: set[str] = set()
    for pattern in patterns:
        for entry in _glob(fs, pattern):
            files = _walk(fs, entry.path) if entry.is_dir else [entry]
            for info in files:
                if info.path not in seen:
                    seen.add(info.path)
                    found.append(info)
    return found


def _glob(fs: FileSystem, pattern: str) -> list[FileInfo]:
    if not _has_magic(pattern):
        if not fs.exists(pattern):
            return []
        if fs.is_dir(pattern):
            return [FileInfo(pattern, 0, True)]
        return [FileInfo(pattern, fs.size(pattern), False)]
    absolute = pattern.startswith("/")
    parts = [part for part in pattern.split("/") if part]
    fixed = next(i for i, part in enumerate(parts) if _has_magic(part))
    base = ("/" if absolute else "") + "/".join(parts[:fixed])
    current = [FileInfo(base or ".", 0, True)]
    for index in range(fixed, len(parts)):
        part = parts[index]
        last = index == len(parts) - 1
        following: list[FileInfo] = []
        for folder in current:
            if not folder.is_dir:
                continue
            if not _has_magic(part):
                path = fs.join(folder.path, part)
                if fs.exists(path):
                    is_dir = fs.is_dir(path)
                    following.append(FileInfo(path, 0 if is_dir else fs.size(path), is_dir))
                continue
            for entry in fs.listdir(folder.path):
                name = entry.path.rstrip("/").rsplit("/", 1)[-1]
                if is_hidden(name) and not is_hidden(part):
                    continue
                if fnmatch.fnmatchcase(name, part) and (last or entry.is_dir):
                    following.append(entry)
        current = sorted(following, key=lambda info: info.path)
    return current


def _walk(fs: FileSystem, folder: str) -> list[FileInfo]:
    files: list[FileInfo] = []
    for entry in sorted(fs.listdir(folder), key=lambda info: info.path):
        if is_hidden(entry.path.rstrip("/").rsplit("/", 1)[-1]):
            continue
        if entry.is_dir:
            files.extend(_walk(fs, entry.path))
        else:
            files.append(entry)
    return files


_BLOCK = 4096
"""The alignment of direct I/O: offsets, lengths and memory (a multiple of 512 and of 4 KiB
logical blocks)."""
_CHUNK = 1 << 20
"""Bytes a :class:`DurableFile` hands to the device at once (1 MiB wrote as fast as 4 MiB)."""
_SYNC_EVERY = 32 * _CHUNK
"""Bytes a :class:`DurableFile` hands to the device between two background ``fdatasync`` s."""
_device = ThreadPoolExecutor(1, thread_name_prefix="durable-write")
"""Writes the chunks of every :class:`DurableFile` in the background: the writing thread fills
the next chunk meanwhile."""
_flusher = ThreadPoolExecutor(1, thread_name_prefix="durable-sync")
"""Runs the background ``fdatasync`` s, apart from the chunk writes, which go on meanwhile."""
_remover = ThreadPoolExecutor(1, thread_name_prefix="remove")
"""Deletes the files handed to :func:`remove_later`."""


def _executors_after_fork() -> None:
    """A forked child has no thread behind its parent's executors (its files would wait for a
    write that never runs): it gets its own."""
    global _device, _flusher, _remover
    _device = ThreadPoolExecutor(1, thread_name_prefix="durable-write")
    _flusher = ThreadPoolExecutor(1, thread_name_prefix="durable-sync")
    _remover = ThreadPoolExecutor(1, thread_name_prefix="remove")


def remove_later(path: Path) -> Future[None]:
    """Delete ``path`` (if it is there) from a background thread; the future says when.

    Where the filesystem discards freed blocks as they are freed (ext4 mounted with
    ``discard``, as on the project's machine) a delete waits for the device: ~1 ms a MB, 0.25 s
    for a 260 MB Kafka spool, which the thread that no longer needs the file should not wait
    for."""
    return _remover.submit(path.unlink, missing_ok=True)


os.register_at_fork(after_in_child=_executors_after_fork)


class DurableFile(io.RawIOBase):
    """A new local file whose ``close`` makes it durable, written without the page cache where
    the system allows it.

    Why: on the project's machine (ext4 on a virtual disk), fsync of 520 MB written through the
    page cache cost 1.3-1.5 s of kernel CPU whenever the filesystem gave the file blocks it had
    not used lately (the first large file of a run, every run of the benchmarks), and 0.14 s when
    it reused blocks just freed; the same bytes written with ``O_DIRECT`` cost 0.05-0.14 s either
    way. So the bytes are staged in two aligned 1 MiB buffers and written a chunk at a time
    (``O_DIRECT``) by a background thread while the caller fills the other buffer; ``close``
    writes the tail padded to a block, truncates the padding and fsyncs (the file's size, and
    the device's cache). Where ``O_DIRECT`` is missing (macOS) or the filesystem refuses it, the
    same chunks go through the page cache. Sequential only: ``tell`` works, ``seek`` does not.
    A full disk is a :class:`~sync.errors.DiskFullError` naming the file.

    What an fsync still costs is the device flushing what it took since its last flush: on a
    virtual disk, the host writing its cache out (0.36-0.42 s for 260 MB on the project's
    machine on some days, direct or not). Every :data:`_SYNC_EVERY` bytes a second background
    thread runs ``fdatasync`` while the chunks go on, so that cost is paid while the data flows
    and ``close`` flushes only the last stretch (~10 ms). Its error is raised by the next write
    or by ``close``: the kernel reports a failed writeback once, so it is never dropped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.name = str(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        direct = getattr(os, "O_DIRECT", 0)
        with disk_full_as(self.name):
            try:
                self._fd = os.open(path, flags | direct, 0o644)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                self._fd, direct = os.open(path, flags, 0o644), 0
        self._direct = bool(direct)
        self._buffers = [mmap.mmap(-1, _CHUNK), mmap.mmap(-1, _CHUNK)]
        self._filled = 0
        self._written = 0
        self._pending: Future[None] | None = None
        self._handed = 0
        """Bytes handed to the device thread."""
        self._synced = 0
        """``_handed`` when the last background ``fdatasync`` was asked for."""
        self._sync: Future[None] | None = None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Buffer, /) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            take = min(_CHUNK - self._filled, len(view) - done)
            self._buffers[0][self._filled : self._filled + take] = view[done : done + take]
            self._filled += take
            done += take
            if self._filled == _CHUNK:
                self._wait()
                self._pending = _device.submit(self._write_out, self._buffers[0], _CHUNK)
                self._buffers.reverse()
                self._filled = 0
                self._handed += _CHUNK
                if self._handed - self._synced >= _SYNC_EVERY and (
                    self._sync is None or self._sync.done()
                ):
                    self._wait_sync()  # the last one's error is this write's
                    self._sync = _flusher.submit(os.fdatasync, self._fd)
                    self._synced = self._handed
        self._written += done
        return done

    def _wait_sync(self) -> None:
        """Wait for the background ``fdatasync``; its error is the caller's."""
        sync, self._sync = self._sync, None
        if sync is not None:
            with disk_full_as(self.name):
                sync.result()

    def _write_out(self, buffer: mmap.mmap, length: int) -> None:
        view = memoryview(buffer)[:length]
        try:
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except OSError as exc:  # a device whose blocks are larger than _BLOCK
                    if not self._direct or exc.errno != errno.EINVAL:
                        raise
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, os.O_WRONLY)
                    self._direct = False
        finally:
            view.release()

    def _wait(self) -> None:
        """Wait for the chunk being written (its error, a full disk, is the caller's)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with disk_full_as(self.name):
                pending.result()

    def close(self) -> None:
        """Write the tail and fsync; the file is then durable."""
        if self.closed:
            return
        try:
            self._wait()
            if self._filled:
                padded = -(-self._filled // _BLOCK) * _BLOCK if self._direct else self._filled
                self._buffers[0][self._filled : padded] = bytes(padded - self._filled)
                with disk_full_as(self.name):
                    self._write_out(self._buffers[0], padded)
                    if padded != self._filled:
                        os.ftruncate(self._fd, self._written)
            self._wait_sync()
            with disk_full_as(self.name):
                os.fsync(self._fd)
        finally:
            self._release()

    def abandon(self) -> None:
        """Close without writing the tail or syncing: the file is about to be deleted."""
        if not self.closed:
            with contextlib.suppress(Exception):
                self._wait()
            self._release()

    def _release(self) -> None:
        if self._sync is not None:  # never close the descriptor under a running fdatasync
            futures.wait([self._sync])
        os.close(self._fd)
        for buffer in self._buffers:
            buffer.close()
        super().close()
