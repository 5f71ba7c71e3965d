"""The kinds of error syncx acts on differently (config, fatal, retriable, dirty record).

The runtime decides by kind: a job-file error stops before any I/O (exit 2), a fatal error stops
the job (exit 1), a retriable error restarts it from its last checkpoint under
``setting.restart``, and a bad record becomes dirty data that counts against ``errorLimit``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigIssue",
    "FatalError",
    "JobFailedError",
    "JobFileError",
    "JobInterruptedError",
    "PluginNotFoundError",
    "RetriableError",
    "SyncxError",
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


class JobInterruptedError(SyncxError):
    """The user stopped the job (Ctrl-C, SIGTERM) before it finished."""

    exit_code = 130


class RetriableError(SyncxError):
    """A transient failure (lost connection, standby NameNode): restart from the last checkpoint."""
