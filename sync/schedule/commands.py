"""What the ``syncx schedule`` commands do; :mod:`sync.cli` only parses their arguments."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from sync.errors import JobFileError
from sync.model import Schedule
from sync.schedule.scheduler import Scheduler, load_scheduled
from sync.schedule.store import Store, spec_of
from sync.schedule.timing import Timing, local_text, utc_text

__all__ = [
    "DEFAULT_ROOT",
    "backfill",
    "default_db",
    "history",
    "job_list",
    "next_fires",
    "open_store",
    "serve",
    "set_paused",
    "trigger",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path(".syncx")
"""The state root: job state folders, the default history and the run logs live under it."""


def default_db() -> str:
    """SQLite in the state root."""
    return f"sqlite:///{DEFAULT_ROOT / 'schedule.db'}"


def open_store(url: str | None) -> Store:
    """The run history at ``url`` (default SQLite in the state root), created when new."""
    if url is None:
        DEFAULT_ROOT.mkdir(parents=True, exist_ok=True)
    return Store(url or default_db())


@contextlib.contextmanager
def _sole_lock(store: Store) -> Iterator[None]:
    """SQLite histories serve one scheduler: hold a file lock beside the database."""
    database = store.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    handle: IO[str] = Path(f"{database}.lock").open("a+", encoding="utf-8")  # noqa: SIM115 - held while serving
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another scheduler"
        handle.close()
        msg = (
            f"--db {store.shown}: the history is served by {holder}; SQLite serves one scheduler "
            "(use PostgreSQL for several)"
        )
        raise JobFileError(msg) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def serve(
    paths: list[Path],
    store: Store,
    *,
    http: str | None,
    instance: str | None,
    params: dict[str, str],
    lease: float,
    on_ready: Callable[[Scheduler], None],
) -> None:
    """Load the job files (exit 2 on any problem), then serve until the scheduler is stopped."""
    name = instance or f"{socket.gethostname()}:{os.getpid()}"
    sole = store.dialect == "sqlite"
    lock = _sole_lock(store) if sole else contextlib.nullcontext()
    with lock:
        scheduler = Scheduler(paths, store, instance=name, params=params, lease=lease)
        scheduler.load()
        server = None
        if http is not None:
            from sync.schedule.web import StatusServer  # noqa: PLC0415

            host, _, port = http.rpartition(":")
            if not port.isdigit():
                msg = f"--http expects HOST:PORT, got '{http}'"
                raise JobFileError(msg)
            try:
                server = StatusServer(store, host or "127.0.0.1", int(port), name)
            except OSError as exc:
                msg = f"--http {http}: cannot listen there ({exc.strerror or exc})"
                raise JobFileError(msg) from exc
            log.info("status page and /metrics on %s", server.address)
        on_ready(scheduler)
        log.info(
            "scheduler %s serving %d job(s) with history %s",
            name,
            len(scheduler.entries),
            store.shown,
        )
        try:
            scheduler.serve(sole)
        finally:
            if server is not None:
                server.close()


def resolve(store: Store, job: str) -> tuple[str, Schedule | None]:
    """A job named on the command line: a job file path, or a name in the history."""
    path = Path(job)
    if path.is_file():
        loaded = load_scheduled(path, {})
        return loaded.name, loaded.file.schedule_spec
    row = store.job(job)
    if row is None:
        known = ", ".join(r.name for r in store.jobs()) or "none yet"
        msg = f"no job '{job}' in the run history {store.shown} (known: {known}); pass a job file"
        raise JobFileError(msg)
    return row.name, spec_of(row) if row.spec else None


def _needs_spec(name: str, spec: Schedule | None) -> Schedule:
    if spec is None:
        msg = f"job '{name}' has no valid 'schedule' block"
        raise JobFileError(msg)
    return spec


def job_list(store: Store) -> list[str]:
    """``syncx schedule list``: one line per job."""
    now = dt.datetime.now(dt.UTC)
    lines = []
    for row in store.jobs():
        last = store.history(row.name, 1)
        state = f"paused ({row.pause_reason})" if row.paused else "active"
        schedule, fire = "", ""
        if row.spec:
            timing = Timing(spec_of(row))
            schedule = timing.describe()
            upcoming = timing.after(now)
            fire = f"next {local_text(upcoming, timing.spec.timezone)} ({utc_text(upcoming)})"
        outcome = f"last {last[0].state}" if last else "never ran"
        lines.append(f"{row.name}  {schedule}  {fire}  {state}  {outcome}  {row.path}")
    return lines or ["no jobs in the run history yet (syncx schedule serve registers them)"]


def history(store: Store, job: str, limit: int) -> list[str]:
    """``syncx schedule history JOB``: newest run first."""
    name, _ = resolve(store, job)
    lines = []
    for row in store.history(name, limit):
        duration = (
            f"{(row.ended - row.started).total_seconds():.1f}s" if row.started and row.ended else ""
        )
        rows = (
            "" if row.rows_written is None else f"read {row.rows_read:,} wrote {row.rows_written:,}"
        )
        lines.append(
            "  ".join(
                part
                for part in (
                    f"{row.scheduled:%Y-%m-%dT%H:%M:%SZ}",
                    str(row.scheduled_local),
                    f"attempt {row.attempt}",
                    row.kind,
                    row.state,
                    rows,
                    duration,
                    f"checkpoint {row.checkpoint_id}" if row.checkpoint_id is not None else "",
                    f"on {row.instance}" if row.instance else "",
                    row.error or "",
                )
                if part
            )
        )
    return lines or [f"no runs of {name} yet"]


def next_fires(store: Store, job: str, count: int) -> list[str]:
    """``syncx schedule next JOB -n N``: local and UTC times, daylight-saving shifts marked."""
    name, spec = resolve(store, job)
    timing = Timing(_needs_spec(name, spec))
    zone = ZoneInfo(timing.spec.timezone)
    lines = []
    previous: dt.timedelta | None = None
    for fire in timing.upcoming(dt.datetime.now(dt.UTC), count):
        offset = fire.astimezone(zone).utcoffset()
        note = ""
        if previous is not None and offset != previous:
            note = f"  <- UTC offset changes to {_offset(offset)} (daylight saving)"
        previous = offset
        lines.append(
            f"{local_text(fire, timing.spec.timezone)} ({_offset(offset)})  {utc_text(fire)}{note}"
        )
    return lines


def _offset(offset: dt.timedelta | None) -> str:
    minutes = int((offset or dt.timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def trigger(store: Store, job: str) -> str:
    """``syncx schedule trigger JOB``: a run now, picked up by the serving scheduler."""
    name, spec = resolve(store, job)
    now = dt.datetime.now(dt.UTC)
    store.add_run(name, _needs_spec(name, spec), now, "manual", None)
    return f"queued a run of {name} at {utc_text(now)}"


def set_paused(store: Store, job: str, paused: bool) -> str:
    """``pause`` / ``resume``."""
    name, _ = resolve(store, job)
    row = store.job(name)
    if row is None:
        msg = f"job {name} is not in the run history {store.shown} yet: serve its file first"
        raise JobFileError(msg)
    if not store.set_paused(name, paused):
        msg = f"job {name} stays paused: {row.pause_reason}"
        raise JobFileError(msg)
    return f"{name} {'paused' if paused else 'resumed'}"


def _moment(text: str, zone: str, option: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{option}: not a date/time (ISO 8601, e.g. 2026-03-01 or 2026-03-01T02:00)"
        raise JobFileError(msg) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(dt.UTC)


def backfill(store: Store, job: str, start: str, end: str, dry_run: bool) -> list[str]:
    """``syncx schedule backfill JOB --from T --to T``: queue every fire in [from, to]."""
    name, spec = resolve(store, job)
    spec = _needs_spec(name, spec)
    timing = Timing(spec)
    first = _moment(start, spec.timezone, "--from")
    last = _moment(end, spec.timezone, "--to")
    if last < first:
        msg = "--to is before --from"
        raise JobFileError(msg)
    fires = timing.between(first - dt.timedelta(microseconds=1), last)
    lines: list[Any] = []
    for fire in fires:
        if not dry_run:
            store.add_run(name, spec, fire, "backfill", None)
        lines.append(
            f"{'would queue' if dry_run else 'queued'} {local_text(fire, spec.timezone)}  {utc_text(fire)}"
        )
    return lines or [f"no fires of {name} between {start} and {end}"]


def stop_on_signals(scheduler: Scheduler) -> Callable[[int], None]:
    """A signal handler: the first SIGTERM/SIGINT stops gently, the second at once."""

    def handle(signum: int) -> None:
        if scheduler.stop.is_set():
            scheduler.hurry.set()
        scheduler.stop.set()
        log.warning("signal %d: stopping after the running jobs take a final checkpoint", signum)

    return handle
