"""The serve loop: watch job files, turn fires into runs, run each as a child ``syncx run``.

Each run is ``syncx run JOB --restore latest-or-new`` in its own process with its own log file,
so a crashing job never takes the scheduler down, and a retry or the next fire resumes from the
job's last checkpoint and incremental state. The child serves its live metrics on a loopback
port (``--metrics-port``); the heartbeat copies them into the run row with the lease renewal.
A child dies with the scheduler (``PR_SET_PDEATHSIG``): a scheduler killed with SIGKILL leaves
no run behind holding the job's state lock, and the next scheduler marks the run abandoned and
retries it from the checkpoint. SIGTERM stops the scheduler gently: each running child takes its
final checkpoint, and its run is queued again to resume from there.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from sync.errors import ConfigIssue, JobFileError
from sync.job import default_state_dir
from sync.jobfile import LoadedJob, load_job
from sync.model import Schedule
from sync.schedule.notify import notify
from sync.schedule.store import Fire, Store, naive

__all__ = ["WINDOW_PARAMS", "JobEntry", "Scheduler", "discover", "file_hash", "window_params"]

log = logging.getLogger(__name__)

WINDOW_PARAMS = ("window_start", "window_end", "window_start_utc", "window_end_utc")
"""Placeholders a scheduled run fills: its window (previous fire, this fire)."""

_JOB_SUFFIXES = (".yaml", ".yml", ".json")
_PR_SET_PDEATHSIG = 1


def window_params(start: dt.datetime | None, end: dt.datetime, zone: str) -> dict[str, str]:
    """``window_start``/``window_end`` as local ``YYYY-MM-DD HH:MM:SS`` in the schedule's time
    zone (what a SQL ``where`` compares with a DATETIME), and ``..._utc`` in ISO 8601."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    begin = start or end
    tz = ZoneInfo(zone)
    return {
        "window_start": begin.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "window_end": end.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "window_start_utc": begin.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window_end_utc": end.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def discover(paths: list[Path]) -> list[Path]:
    """The job files named, and the ``.yaml``/``.yml``/``.json`` files in the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in _JOB_SUFFIXES))
        else:
            found.append(path)
    return found


def file_hash(path: Path) -> str:
    """sha256 of a job file's bytes, recorded with each run."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_scheduled(path: Path, params: dict[str, str]) -> LoadedJob:
    """Load a job file as the scheduler does: window placeholders filled with a sample window."""
    sample = window_params(None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC), "UTC")
    return load_job(path, {**sample, **params})


@dataclass
class JobEntry:
    """A job file the scheduler watches; ``spec`` is None while the file does not validate."""

    path: Path
    name: str
    stamp: tuple[float, int]
    spec: Schedule | None = None
    file_hash: str = ""
    state_dir: Path = field(default_factory=Path)


@dataclass
class _Child:
    """A running ``syncx run`` process and its run row."""

    fire: Fire
    entry: JobEntry
    spec: Schedule
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_file: Path
    port: int
    started: float
    reason: str | None = None
    kill_at: float | None = None


class Scheduler:
    """One scheduler instance serving a set of job files against a run history."""

    def __init__(
        self,
        paths: list[Path],
        store: Store,
        *,
        instance: str,
        params: dict[str, str] | None = None,
        lease: float = 30.0,
        tick: float = 0.5,
        logs: Path = Path(".syncx/schedule/logs"),
    ) -> None:
        self.paths = paths
        self.store = store
        self.instance = instance
        self.params = params or {}
        self.lease = lease
        self.tick = tick
        self.logs = logs.absolute()
        self.entries: dict[Path, JobEntry] = {}
        self.children: dict[int, _Child] = {}
        self.stop = threading.Event()
        self.hurry = threading.Event()

    # -- job files ----------------------------------------------------------------------------

    def load(self) -> None:
        """Load every job file before serving: any problem stops the start (exit 2), listed."""
        issues: list[ConfigIssue] = []
        files = discover(self.paths)
        for path in files:
            explicit = path in self.paths
            try:
                loaded = load_scheduled(path, self.params)
            except JobFileError as exc:
                issues.extend(
                    ConfigIssue(f"{path}: {i.path}".rstrip(": "), i.message) for i in exc.issues
                )
                continue
            if loaded.file.schedule_spec is None:
                if explicit:
                    issues.append(ConfigIssue(str(path), "has no 'schedule' block"))
                continue
            self._accept(path, loaded)
        if issues:
            raise JobFileError(issues)
        if not self.entries:
            where = ", ".join(map(str, self.paths))
            raise JobFileError(f"no job file with a 'schedule' block in {where}")

    def _accept(self, path: Path, loaded: LoadedJob) -> None:
        spec = loaded.file.schedule_spec
        assert spec is not None
        entry = JobEntry(
            path=path,
            name=loaded.name,
            stamp=_stamp(path),
            spec=spec,
            file_hash=file_hash(path),
            state_dir=default_state_dir(loaded),
        )
        self.entries[path] = entry
        self.store.register(entry.name, str(path), entry.file_hash, spec)

    def rescan(self) -> None:
        """Reload changed job files; one that stops validating (or is gone) pauses its job with
        the message."""
        present = {path for path in discover(self.paths) if path.exists()}
        for path in [p for p in self.entries if p not in present]:
            gone = self.entries.pop(path)
            log.warning("job %s paused: its file %s is gone", gone.name, path)
            self.store.set_invalid(gone.name, str(path), f"{path}: the job file is gone")
        for path in sorted(present):
            old = self.entries.get(path)
            if old is not None and old.stamp == _stamp(path):
                continue
            try:
                loaded = load_scheduled(path, self.params)
            except JobFileError as exc:
                name = old.name if old else path.stem
                self.entries[path] = JobEntry(path, name, _stamp(path))
                if old is None or old.spec is not None:
                    log.warning("job %s paused: its file no longer validates: %s", name, exc)
                self.store.set_invalid(name, str(path), str(exc))
                continue
            if loaded.file.schedule_spec is None:
                self.entries.pop(path, None)
                continue
            if old is not None and old.spec is None:
                log.info("job %s: its file validates again; resumed", loaded.name)
            self._accept(path, loaded)

    # -- the loop -----------------------------------------------------------------------------

    def serve(self, sole: bool) -> None:
        """Run until :attr:`stop` is set, then stop the children gently (``hurry``: at once).

        ``sole``: no other instance can share this history (SQLite), so every row still
        ``running`` at start is left over from a scheduler that died: abandon it now.
        """
        now = _now()
        for row in self.store.reap(now, everything=sole):
            log.warning("run %s of job %s abandoned; retrying from its checkpoint", row.id, row.job)
        next_scan = next_reap = next_beat = time.monotonic()
        while not self.stop.is_set():
            mono = time.monotonic()
            try:
                if mono >= next_scan:
                    self.rescan()
                    next_scan = mono + 2
                if mono >= next_reap:
                    self._reap()
                    next_reap = mono + self.lease / 3
                self._tick_jobs()
                self._poll()
            except SQLAlchemyError as exc:  # the history is away for a moment: keep going
                log.warning("run history unavailable (%s); retrying", str(exc).splitlines()[0])
                self.stop.wait(2)
            if mono >= next_beat:
                self._heartbeat()
                next_beat = mono + min(2.0, self.lease / 3)
            self.stop.wait(self.tick)
        self._shutdown()

    def _tick_jobs(self) -> None:
        now = _now()
        for entry in list(self.entries.values()):
            if entry.spec is None:
                continue
            result = self.store.tick(
                entry.name, entry.spec, now, self.instance, self.lease, entry.file_hash
            )
            if result.missed:
                log.warning(
                    "job %s: %d fire(s) missed, the last %s (catchup: %s)",
                    entry.name,
                    len(result.missed),
                    result.missed[-1],
                    entry.spec.catchup,
                )
                payload = {"scheduled": result.missed[-1], "count": len(result.missed)}
                notify(entry.spec.notify, "missed", {"job": entry.name, **payload})
            for fire in result.skipped:
                log.info("job %s: fire %s skipped, the previous run still runs", entry.name, fire)
            for run in result.start:
                self._start(entry, entry.spec, run)

    def _reap(self) -> None:
        for row in self.store.reap(_now()):
            log.warning(
                "run %s of job %s abandoned by %s; retrying from its checkpoint",
                row.id,
                row.job,
                row.instance,
            )
            entry = self._entry(row.job)
            if entry is not None and entry.spec is not None:
                notify(entry.spec.notify, "abandoned", _payload(row))

    def _entry(self, name: str) -> JobEntry | None:
        return next((e for e in self.entries.values() if e.name == name), None)

    # -- children -----------------------------------------------------------------------------

    def _start(self, entry: JobEntry, spec: Schedule, fire: Fire) -> None:
        stamp = fire.scheduled.strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.logs / entry.name
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{stamp}-{fire.attempt}.log"
        metrics_file = log_path.with_suffix(".json")
        port = _free_port()
        params = {**self.params, **window_params(fire.window_start, fire.scheduled, spec.timezone)}
        command = [
            sys.executable,
            "-c",
            "from sync.cli import main; main()",
            "run",
            str(entry.path),
            "--restore",
            "latest-or-new",
            "--metrics-file",
            str(metrics_file),
            "--metrics-port",
            str(port),
        ]
        # placeholders travel in the environment, not on a command line others can read
        environment = {**os.environ, **params}
        with log_path.open("ab") as out:
            try:
                process = subprocess.Popen(
                    command,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
                )
            except OSError as exc:
                self.store.finish(fire.id, "failed", {"error": f"could not start: {exc}"})
                return
        log.info(
            "job %s: run %s (fire %s, attempt %d) started, log %s",
            entry.name,
            fire.id,
            fire.scheduled,
            fire.attempt,
            log_path,
        )
        self.store.heartbeat(self.instance, self.lease, {fire.id: {"log_path": str(log_path)}})
        child = _Child(fire, entry, spec, process, log_path, metrics_file, port, time.monotonic())
        self.children[fire.id] = child

    def _poll(self) -> None:
        mono = time.monotonic()
        for run_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                timeout = child.spec.timeout
                if child.reason is None and timeout and mono - child.started > timeout:
                    self._terminate(child, "timeout")
                if child.kill_at is not None and mono > child.kill_at:
                    child.process.kill()
                continue
            self._finished(child, code)
            del self.children[run_id]

    def _terminate(self, child: _Child, reason: str) -> None:
        """SIGTERM: the child takes a final checkpoint and stops; SIGKILL a minute later."""
        child.reason = reason
        child.kill_at = time.monotonic() + 60
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)

    def _finished(self, child: _Child, code: int) -> None:
        values = _report_values(child.metrics_file)
        fire, spec = child.fire, child.spec
        if code == 0:
            state, event = "succeeded", "success"
        elif child.reason == "cancel":
            state, event = "cancelled", ""
            values["error"] = "cancelled: a newer fire started (overlap: cancel)"
        elif child.reason == "stopping":
            state, event = "abandoned", ""
            values["error"] = "the scheduler stopped; resumes from the final checkpoint"
        elif child.reason == "timeout":
            state, event = "failed", "timeout"
            values["error"] = f"timed out after {spec.timeout:g}s (stopped at a checkpoint)"
        else:
            state, event = "failed", "failure"
            values["error"] = _last_error(child.log_path, code)
        row = self.store.finish(fire.id, state, values)
        log.info("job %s: run %s %s", child.entry.name, fire.id, state)
        retry_allowed = state == "failed" and fire.attempt < spec.retries.attempts
        if state == "abandoned" or retry_allowed:
            delay = 0.0 if state == "abandoned" else spec.retries.delay_before(fire.attempt + 1)
            self.store.retry(row, _now() + dt.timedelta(seconds=delay))
        if event:
            notify(spec.notify, event, _payload(row))

    def _heartbeat(self) -> None:
        live: dict[int, dict[str, Any]] = {}
        for run_id, child in self.children.items():
            values: dict[str, Any] = {}
            snapshot = _fetch_json(f"http://127.0.0.1:{child.port}/metrics.json")
            if snapshot is not None:
                values.update(_metric_values(snapshot))
            checkpoint = _latest_checkpoint(child.entry.state_dir)
            if checkpoint is not None:
                values["checkpoint_id"], values["checkpoint_at"] = checkpoint
            if values:
                live[run_id] = values
        try:
            cancel = self.store.heartbeat(self.instance, self.lease, live)
        except SQLAlchemyError as exc:
            log.warning(
                "heartbeat failed (%s); leases expire in %ss", str(exc).splitlines()[0], self.lease
            )
            return
        for run_id in cancel:
            asked = self.children.get(run_id)
            if asked is not None and asked.reason is None:
                self._terminate(asked, "cancel")

    def _shutdown(self) -> None:
        """Stop every child gently (final checkpoint), keeping the leases alive meanwhile."""
        for child in self.children.values():
            if child.reason is None:
                self._terminate(child, "stopping")
        while self.children:
            if self.hurry.is_set():
                for child in self.children.values():
                    child.process.kill()
            self._poll()
            self._heartbeat()
            time.sleep(0.2)


def _stamp(path: Path) -> tuple[float, int]:
    try:
        info = path.stat()
    except OSError:
        return (0.0, -1)
    return (info.st_mtime, info.st_size)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the scheduler dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fetch_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return None


def _metric_values(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows_read": int(snapshot.get("numRead", 0)),
        "rows_written": int(snapshot.get("numWrite", 0)),
        "bytes_read": int(snapshot.get("byteRead", 0)),
        "bytes_written": int(snapshot.get("byteWrite", 0)),
        "metrics": json.dumps(snapshot),
    }


def _report_values(path: Path) -> dict[str, Any]:
    """Rows, bytes, metrics and checkpoint of a finished run, from its ``--metrics-file``."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    values = _metric_values(report.get("metrics") or {})
    if report.get("last_checkpoint") is not None:
        values["checkpoint_id"] = int(report["last_checkpoint"])
    return values


def _latest_checkpoint(state_dir: Path) -> tuple[int, dt.datetime] | None:
    files = sorted((state_dir / "checkpoints").glob("chk-*.json"))
    if not files:
        return None
    try:
        mtime = files[-1].stat().st_mtime
    except OSError:
        return None
    moment = dt.datetime.fromtimestamp(mtime, dt.UTC)
    return int(files[-1].stem.split("-", 1)[1]), naive(moment)


def _last_error(log_path: Path, code: int) -> str:
    """The child's own one-line error (``syncx: ...``), else its exit code."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("syncx: ") and " succeeded:" not in line:
            return line.removeprefix("syncx: ")[:2000]
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _payload(row: Any) -> dict[str, Any]:
    return {
        "job": row.job,
        "scheduled": row.scheduled,
        "attempt": row.attempt,
        "state": row.state,
        "error": row.error or "",
        "log": row.log_path or "",
        "pid": os.getpid(),
    }
