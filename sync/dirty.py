"""Dirty data: rejected records go, with their error, to a JSON-lines file; errorLimit decides.

``errorLimit.record`` fails the job as soon as more records than that are dirty.
``errorLimit.percentage`` (a ratio 0-1 of records read) is judged once enough records have been
read for the ratio to mean something (:data:`MIN_RECORDS_FOR_RATIO`), and always at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import IO, Any

from sync.contract import DirtyRecord
from sync.errors import FatalError, disk_full_as
from sync.metrics import Metric, Metrics
from sync.model import ErrorLimit

__all__ = ["MIN_RECORDS_FOR_RATIO", "DirtySink", "ErrorLimitExceededError"]

MIN_RECORDS_FOR_RATIO = 1000


class ErrorLimitExceededError(FatalError):
    """More dirty records than ``setting.errorLimit`` allows (not retried)."""


class DirtySink:
    """Appends dirty records to ``<folder>/<job>-<run>.jsonl`` and enforces the error limit."""

    def __init__(
        self, folder: Path, job_name: str, run_id: str, limit: ErrorLimit, metrics: Metrics
    ) -> None:
        self.path = folder / f"{job_name}-{run_id}.jsonl"
        self.limit = limit
        self.metrics = metrics
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def report(self, record: DirtyRecord) -> None:
        """Store one dirty record, count it, and fail the job past ``errorLimit.record``."""
        line = json.dumps(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(),
                "kind": record.kind,
                "field": record.field,
                "error": record.error,
                "row": record.row,
            },
            default=_json_default,
            ensure_ascii=False,
        )
        with self._lock, disk_full_as(self.path, what="writing dirty records to"):
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()
            self.metrics.dirty(record.kind)
        self.check(final=False)

    def check(self, *, final: bool) -> None:
        """Raise :class:`ErrorLimitExceededError` when a limit is exceeded."""
        errors = int(self.metrics.get(Metric.N_ERRORS))
        if not errors:
            return
        read = int(self.metrics.get(Metric.NUM_READ))
        if self.limit.record is not None and errors > self.limit.record:
            msg = (
                f"{errors} dirty records exceed setting.errorLimit.record = {self.limit.record}; "
                f"the dirty records are in {self.path}"
            )
            raise ErrorLimitExceededError(msg)
        ratio_limit = self.limit.ratio
        if ratio_limit is not None and read and (final or read >= MIN_RECORDS_FOR_RATIO):
            ratio = errors / read
            if ratio > ratio_limit:
                msg = (
                    f"{errors} dirty of {read} records read ({ratio:.2%}) exceed "
                    f"setting.errorLimit.percentage = {self.limit.percentage}; the dirty records are in "
                    f"{self.path}"
                )
                raise ErrorLimitExceededError(msg)

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
