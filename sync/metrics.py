"""Job metrics under ChunJun's names, a live progress line, and the final JSON summary."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TextIO

__all__ = ["Metric", "Metrics", "ProgressLine"]


class Metric(StrEnum):
    """Counter names as ChunJun reports them."""

    NUM_READ = "numRead"
    NUM_WRITE = "numWrite"
    BYTE_READ = "byteRead"
    BYTE_WRITE = "byteWrite"
    N_ERRORS = "nErrors"
    CONVERSION_ERRORS = "conversionErrors"
    NULL_ERRORS = "nullErrors"
    DUPLICATE_ERRORS = "duplicateErrors"
    OTHER_ERRORS = "otherErrors"
    READ_DURATION = "readDuration"
    WRITE_DURATION = "writeDuration"
    CHECKPOINTS = "numCheckpoints"
    CDC_LAG = "cdcLag"


_DIRTY_METRIC = {
    "conversion": Metric.CONVERSION_ERRORS,
    "null": Metric.NULL_ERRORS,
    "duplicate": Metric.DUPLICATE_ERRORS,
    "other": Metric.OTHER_ERRORS,
}


class Metrics:
    """Thread-safe counters. Durations are milliseconds summed over subtasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(Metric, 0)
        self.started = time.monotonic()

    def add(self, metric: Metric, amount: float) -> None:
        """Add to a counter."""
        with self._lock:
            self._values[metric] += amount

    def set(self, metric: Metric, value: float) -> None:
        """Set a gauge (cdcLag)."""
        with self._lock:
            self._values[metric] = value

    def dirty(self, kind: str) -> None:
        """Count one dirty record under its kind and in nErrors."""
        with self._lock:
            self._values[_DIRTY_METRIC.get(kind, Metric.OTHER_ERRORS)] += 1
            self._values[Metric.N_ERRORS] += 1

    def get(self, metric: Metric) -> float:
        """One counter's value."""
        with self._lock:
            return self._values[metric]

    @contextmanager
    def timed(self, metric: Metric) -> Iterator[None]:
        """Add the block's wall time (ms) to a duration metric."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(metric, (time.perf_counter() - start) * 1000)

    def snapshot(self) -> dict[str, float | int]:
        """All counters, integers where they are counts."""
        with self._lock:
            values = dict(self._values)
        out: dict[str, float | int] = {k: int(v) for k, v in values.items()}
        out[Metric.CDC_LAG] = round(values[Metric.CDC_LAG], 3)
        out["elapsedSeconds"] = round(time.monotonic() - self.started, 3)
        return out

    def restore(self, values: dict[str, float]) -> None:
        """Continue counting from a checkpoint's counters (zero for those it lacks)."""
        with self._lock:
            for key in self._values:
                self._values[key] = 0.0 if key == Metric.CDC_LAG else float(values.get(key, 0))


class ProgressLine:
    """Rewrites one stderr line with rows, rows/s and bytes while a job runs (terminals only)."""

    def __init__(
        self, metrics: Metrics, stream: TextIO | None = None, interval: float = 0.5
    ) -> None:
        self.metrics = metrics
        self.stream = stream or sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> ProgressLine:
        if self.stream.isatty():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _loop(self) -> None:
        last_rows, last_time = 0.0, time.monotonic()
        while not self._stop.wait(self.interval):
            rows = self.metrics.get(Metric.NUM_WRITE)
            now = time.monotonic()
            rate = (rows - last_rows) / max(now - last_time, 1e-9)
            last_rows, last_time = rows, now
            read = self.metrics.get(Metric.NUM_READ)
            nbytes = self.metrics.get(Metric.BYTE_READ)
            errors = self.metrics.get(Metric.N_ERRORS)
            line = (
                f"\rread {int(read):,} rows  written {int(rows):,}  {rate:,.0f} rows/s  "
                f"{nbytes / 1e6:,.1f} MB  errors {int(errors)}"
            )
            self.stream.write(line + "\033[K")
            self.stream.flush()
