"""Job metrics under ChunJun's names, a job's progress (share done, ETA), the live progress line.

A bounded job's reader says how much it expects to read (:class:`sync.contract.Estimate`);
:class:`Progress` measures the rows read (or the source bytes its splits report) against it and
extrapolates the time left from the average speed since reading began. :class:`ProgressLine`
shows it on a terminal (a rich live line) or logs it every few seconds elsewhere.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TextIO

from sync.contract import Estimate

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

__all__ = [
    "Metric",
    "Metrics",
    "MetricsServer",
    "Progress",
    "ProgressLine",
    "Sample",
    "Status",
    "format_duration",
    "job_samples",
    "prometheus_text",
]

log = logging.getLogger(__name__)

MAX_SHARE_RUNNING = 0.99
"""The share done shown while the job runs: an estimate may be short of what is there."""


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
        self.progress = Progress(self)
        """How far the job is (set up by the engine once its reader gave an estimate)."""

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


class Progress:
    """A bounded job's share done and time left, from its reader's estimate.

    :meth:`begin` is called once per attempt, before reading, with the estimate of what that
    attempt reads; from then on the share done is the source bytes the split readers reported
    (:meth:`consumed`) over ``Estimate.bytes``, or else the rows read since over
    ``Estimate.rows``; the time left is the time since :meth:`begin` times the share still to do
    over the share done (the average speed so far, which a steady copy keeps).
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self.estimate: Estimate | None = None
        self._rows_base = 0.0
        self._bytes: dict[str, int] = {}
        self._began = time.monotonic()

    def begin(self, estimate: Estimate | None, now: float | None = None) -> None:
        """Measure from here against ``estimate`` (``None``: no share, no ETA)."""
        with self._lock:
            self.estimate = estimate
            self._rows_base = self._metrics.get(Metric.NUM_READ)
            self._bytes = {}
            self._began = time.monotonic() if now is None else now

    def consumed(self, split_id: str, nbytes: int) -> None:
        """Split ``split_id`` has consumed ``nbytes`` source bytes since it was opened."""
        with self._lock:
            self._bytes[split_id] = nbytes

    def share(self) -> float | None:
        """The share done, 0 to :data:`MAX_SHARE_RUNNING`; ``None`` without an estimate."""
        with self._lock:
            estimate = self.estimate
            consumed = sum(self._bytes.values())
            rows_base = self._rows_base
        if estimate is None:
            return None
        if estimate.bytes:
            done = consumed / estimate.bytes
        elif estimate.rows:
            done = (self._metrics.get(Metric.NUM_READ) - rows_base) / estimate.rows
        else:
            return None
        return max(0.0, min(done, MAX_SHARE_RUNNING))

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the average speed since :meth:`begin`; ``None`` before any progress."""
        share = self.share()
        if not share:
            return None
        elapsed = (time.monotonic() if now is None else now) - self._began
        return elapsed * (1 - share) / share


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m``: short enough for one line."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class Status:
    """One reading of a running job, as the progress line shows it."""

    share: float | None
    eta: float | None
    rows_read: int
    rows_written: int
    rows_per_second: float
    bytes_per_second: float
    dirty: int
    checkpoint_age: float | None
    """Seconds since the last checkpoint of this run (``None``: none yet)."""

    def text(self) -> str:
        """``42% ETA 1m15s | read 840,000 rows 95,000 rows/s 32.1 MB/s | ...``."""
        parts = []
        if self.share is not None:
            eta = format_duration(self.eta) if self.eta is not None else "?"
            parts.append(f"{self.share:.0%} ETA {eta}")
        parts.append(
            f"read {self.rows_read:,} rows {self.rows_per_second:,.0f} rows/s "
            f"{self.bytes_per_second / 1e6:,.1f} MB/s"
        )
        parts.append(f"written {self.rows_written:,}")
        parts.append(f"dirty {self.dirty:,}")
        if self.checkpoint_age is not None:
            parts.append(f"checkpoint {format_duration(self.checkpoint_age)} ago")
        return " | ".join(parts)


class ProgressLine:
    """A running job's progress on stderr: on a terminal a live rich line (a bar when the share
    is known) refreshed every ``interval`` seconds; elsewhere a log line every ``log_interval``
    seconds (0: none). Rates are over the last few seconds."""

    RATE_WINDOW = 5.0

    def __init__(
        self,
        metrics: Metrics,
        stream: TextIO | None = None,
        interval: float = 0.5,
        log_interval: float = 30.0,
    ) -> None:
        self.metrics = metrics
        self.stream = stream or sys.stderr
        self.interval = interval
        self.log_interval = log_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._live: RichProgress | None = None
        self._task: TaskID | None = None
        self._samples: deque[tuple[float, float, float]] = deque()
        self._checkpoints = metrics.get(Metric.CHECKPOINTS)
        self._checkpointed: float | None = None

    def __enter__(self) -> ProgressLine:
        if self.stream.isatty():
            self._live = _live_display(self.stream)
            self._task = self._live.add_task("job", total=None, status="starting")
            self._live.start()
            self._thread.start()
        elif self.log_interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._live is not None:
            self._live.stop()

    def status(self, now: float | None = None) -> Status:
        """The job's status now (and a rate sample for the next one)."""
        now = time.monotonic() if now is None else now
        metrics, progress = self.metrics, self.metrics.progress
        rows = metrics.get(Metric.NUM_READ)
        nbytes = metrics.get(Metric.BYTE_READ)
        samples = self._samples
        samples.append((now, rows, nbytes))
        while len(samples) > 2 and now - samples[1][0] >= self.RATE_WINDOW:
            samples.popleft()
        first = samples[0]
        span = now - first[0]
        checkpoints = metrics.get(Metric.CHECKPOINTS)
        if checkpoints != self._checkpoints:
            self._checkpoints, self._checkpointed = checkpoints, now
        return Status(
            share=progress.share(),
            eta=progress.eta(now),
            rows_read=int(rows),
            rows_written=int(metrics.get(Metric.NUM_WRITE)),
            rows_per_second=(rows - first[1]) / span if span > 0 else 0.0,
            bytes_per_second=(nbytes - first[2]) / span if span > 0 else 0.0,
            dirty=int(metrics.get(Metric.N_ERRORS)),
            checkpoint_age=None if self._checkpointed is None else now - self._checkpointed,
        )

    def _loop(self) -> None:
        live = self._live
        next_log = time.monotonic() + self.log_interval
        while not self._stop.wait(self.interval):
            status = self.status()
            if live is not None and self._task is not None:
                total = None if status.share is None else 1.0
                live.update(
                    self._task, total=total, completed=status.share or 0, status=status.text()
                )
                live.refresh()
            elif time.monotonic() >= next_log:
                next_log += self.log_interval
                log.info("progress: %s", status.text())


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


def _live_display(stream: TextIO) -> RichProgress:
    """rich's live progress: a bar and the status text on one line (imported only on a
    terminal, to keep the start of every other run fast)."""
    from rich.console import Console  # noqa: PLC0415 - terminals only
    from rich.progress import BarColumn, TextColumn  # noqa: PLC0415
    from rich.progress import Progress as RichProgress  # noqa: PLC0415
    from rich.table import Column  # noqa: PLC0415

    return RichProgress(
        BarColumn(bar_width=20, table_column=Column(width=20, no_wrap=True)),
        TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
        console=Console(file=stream, highlight=False),
        auto_refresh=False,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=True,
    )
