"""The kinds of error syncx acts on differently (config, fatal, retriable, dirty record).

The runtime decides by kind: a job-file error stops before any I/O (exit 2), a fatal error stops
the job (exit 1), a retriable error restarts it from its last checkpoint under
``setting.restart``, and a bad record becomes dirty data that counts against ``errorLimit``.
A full filesystem is a :class:`DiskFullError`: fatal, naming the path and the space left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ConfigIssue",
    "DiskFullError",
    "FatalError",
    "JobFailedError",
    "JobFileError",
    "JobInterruptedError",
    "PluginNotFoundError",
    "RetriableError",
    "SyncxError",
    "disk_full_as",
    "disk_space",
    "is_disk_full",
]


class SyncxError(Exception):
    """Base of every error syncx reports to the user without a traceback."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a job file: where it is (``job.content[0].reader.parameter.x``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class JobFileError(SyncxError):
    """The job file (or the command line) is wrong; nothing has connected anywhere yet."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue] | str, source: str | None = None) -> None:
        self.issues = [ConfigIssue("", issues)] if isinstance(issues, str) else list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.issues) == 1:
            text = f"{head}{self.issues[0]}"
        else:
            lines = "\n".join(f"  - {issue}" for issue in self.issues)
            text = f"{head}{len(self.issues)} problems in the job file:\n{lines}"
        super().__init__(text)


class PluginNotFoundError(JobFileError):
    """A job names a reader or writer that no installed package provides."""


class JobFailedError(SyncxError):
    """The job ran and failed; the message says why and what to do."""


class FatalError(JobFailedError):
    """A failure a restart cannot cure (permission denied, a wrong layout): never retried."""


class DiskFullError(FatalError):
    """A filesystem syncx writes to is full (``ENOSPC``) or over its quota (``EDQUOT``).

    Fatal: a restart would fill it again. The message names the path, the space left and the
    mount; once space is freed, ``--restore latest`` resumes from the last stored checkpoint.
    """

    def __init__(self, path: str | os.PathLike[str], *, what: str = "writing") -> None:
        self.path = str(path)
        self.free, self.total, self.mount = disk_space(self.path)
        space = (
            f"{_size(self.free)} free of {_size(self.total)} on {self.mount}"
            if self.total
            else "free space unknown"
        )
        super().__init__(
            f"no space left on device {what} {self.path} ({space}); free some space there, "
            "then resume the job with --restore latest"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a filesystem is full or over quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def disk_full_as(path: str | os.PathLike[str], *, what: str = "writing") -> Iterator[None]:
    """Turn a full filesystem met inside the block into a :class:`DiskFullError` on ``path``."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path, what=what) from exc
        raise


def disk_space(path: str | os.PathLike[str]) -> tuple[int, int, str]:
    """(bytes free to unprivileged users, total bytes, mount point) of the filesystem holding
    ``path`` or its nearest existing parent; ``(0, 0, "?")`` when none can be asked."""
    current = Path(os.path.abspath(path))  # noqa: PTH100 - no symlinks resolved, no I/O
    while not current.exists() and current != current.parent:
        current = current.parent
    try:
        usage = shutil.disk_usage(current)
    except OSError:
        return 0, 0, "?"
    mount = current
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    return usage.free, usage.total, str(mount)


def _size(count: int) -> str:
    """``0 bytes``, ``512 bytes``, ``8 MiB``, ``7.5 GiB``."""
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"


class JobInterruptedError(SyncxError):
    """The user stopped the job (Ctrl-C, SIGTERM) before it finished."""

    exit_code = 130


class RetriableError(SyncxError):
    """A transient failure (lost connection, standby NameNode): restart from the last checkpoint."""
