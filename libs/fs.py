"""The few filesystem operations file-based plugins need, so one writer serves every store.

The file writer stages, renames and deletes through a :class:`FileSystem`; the local one is here,
a WebHDFS one implements the same methods. Renames are the commit step, so a store must rename
atomically within one folder tree (POSIX and HDFS both do). A full local disk raises
:class:`~sync.errors.DiskFullError` naming the file and the space left, never a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import shutil
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from typing_extensions import Buffer

from sync.errors import disk_full_as

__all__ = ["FileInfo", "FileSystem", "LocalFileSystem", "expand_paths", "is_hidden"]


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
            return typing.cast(BinaryIO, io.BufferedWriter(_SyncedRaw(path, "wb"), 1 << 20))

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


class _SyncedRaw(io.FileIO):
    """A raw file whose ``close`` fsyncs: prepare must leave staged data durable. A full disk
    (on ``write``, or on the ``fsync`` of a filesystem that allocates late) is a
    :class:`~sync.errors.DiskFullError` naming the file."""

    def write(self, data: Buffer, /) -> int:
        with disk_full_as(str(self.name)):
            return super().write(data)

    def close(self) -> None:
        try:
            with disk_full_as(str(self.name)):
                if not self.closed:
                    os.fsync(self.fileno())
        finally:
            super().close()
