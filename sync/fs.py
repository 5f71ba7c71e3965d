"""The few filesystem operations file-based plugins need, so one writer serves every store.

The file writer stages, renames and deletes through a :class:`FileSystem`; the local one is here,
a WebHDFS one implements the same methods. Renames are the commit step, so a store must rename
atomically within one folder tree (POSIX and HDFS both do).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileInfo", "FileSystem", "LocalFileSystem"]


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


class LocalFileSystem(FileSystem):
    """The local disk; ``close`` of a written file fsyncs it."""

    def open_write(self, path: str) -> BinaryIO:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return typing.cast(BinaryIO, io.BufferedWriter(_SyncedRaw(path, "wb"), 1 << 20))

    def open_read(self, path: str) -> BinaryIO:
        return Path(path).open("rb")

    def rename(self, source: str, target: str) -> None:
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
        Path(path).mkdir(parents=True, exist_ok=True)


class _SyncedRaw(io.FileIO):
    """A raw file whose ``close`` fsyncs: prepare must leave staged data durable."""

    def close(self) -> None:
        if not self.closed:
            os.fsync(self.fileno())
        super().close()
