"""Job metrics under ChunJun's names, a live progress line, and the final JSON summary."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

__all__ = [
    "Metric",
    "Metrics",
    "MetricsServer",
    "ProgressLine",
    "Sample",
    "job_samples",
    "prometheus_text",
]


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


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample: ``name{labels} value``, with its family's type and help."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "gauge"
    help: str = ""


_GAUGES = {Metric.CDC_LAG}
_HELP = {
    Metric.NUM_READ: "Records read",
    Metric.NUM_WRITE: "Records written",
    Metric.BYTE_READ: "Bytes read",
    Metric.BYTE_WRITE: "Bytes written",
    Metric.N_ERRORS: "Dirty records",
    Metric.CDC_LAG: "Seconds between a change and its reading (CDC)",
}


def job_samples(job: str, snapshot: Mapping[str, float | int]) -> list[Sample]:
    """A run's counters as samples named as ChunJun names them: ``syncx_numRead{job="..."}``."""
    return [
        Sample(
            f"syncx_{metric.value}",
            float(snapshot.get(metric.value, 0)),
            {"job": job},
            "gauge" if metric in _GAUGES else "counter",
            _HELP.get(metric, f"ChunJun's {metric.value}"),
        )
        for metric in Metric
    ]


def prometheus_text(samples: Iterable[Sample]) -> str:
    """Samples in Prometheus' text exposition format (one HELP/TYPE per family)."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, members in families.items():
        base = members[0]
        if base.help:
            lines.append(f"# HELP {name} {base.help}")
        lines.append(f"# TYPE {name} {base.kind}")
        for sample in members:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            value = _number(sample.value)
            lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Integers without a fraction, other values exactly (``repr``); timestamps keep seconds."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/metrics.json`` of one run (``--metrics-port``)."""

    def __init__(self, job: str, metrics: Metrics, host: str, port: int) -> None:
        # imported here: most runs serve no metrics, and every run pays for its imports
        from http.server import (  # noqa: PLC0415
            BaseHTTPRequestHandler,
            ThreadingHTTPServer,
        )

        self.job = job
        self.metrics = metrics
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                snapshot = server.metrics.snapshot()
                if self.path.split("?")[0] == "/metrics":
                    body = prometheus_text(job_samples(server.job, snapshot)).encode()
                    kind = "text/plain; version=0.0.4"
                elif self.path.split("?")[0] == "/metrics.json":
                    body, kind = json.dumps(snapshot).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.http: ThreadingHTTPServer = ThreadingHTTPServer((host, port), Handler)
        self.http.daemon_threads = True
        self._thread = threading.Thread(target=self.http.serve_forever, name="metrics", daemon=True)

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
