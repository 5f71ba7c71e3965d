"""The run history: one row per fire attempt, in SQLite (one scheduler) or PostgreSQL (several).

Two tables. ``syncx_schedule_jobs`` holds each job's schedule, its pause state and its *cursor*
(the last fire already turned into rows). ``syncx_schedule_runs`` holds one row per attempt of a
fire, unique on (job, scheduled time, attempt): two instances that see the same fire insert the
same row once, so a double fire is harmless.

Schedulers that share a PostgreSQL history coordinate only through it (as APScheduler's data
stores do): a job's fires are enumerated and its runs claimed while its job row is locked with
``SELECT ... FOR UPDATE SKIP LOCKED`` (an instance that finds it locked leaves the job to the
other one this tick); a claimed run carries a lease (``instance``, ``lease_until``) that its
instance renews by heartbeat; a running row whose lease expired belongs to a dead instance and is
marked ``abandoned``, with a retry row that resumes from the job's last checkpoint. SQLite takes
no row locks: there, a file lock lets only one scheduler serve a history.

Times are stored as naive UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from sync.errors import JobFileError
from sync.model import Schedule
from sync.schedule.timing import Timing, local_text

__all__ = ["FINAL_STATES", "MAX_BACKLOG", "Fire", "Store", "StoreError", "naive", "utc"]

log = logging.getLogger(__name__)

MAX_BACKLOG = 1000
"""Fires of one downtime that are recorded (missed or caught up); older ones are dropped."""

FINAL_STATES = ("succeeded", "failed", "skipped", "missed", "cancelled", "abandoned")

metadata = MetaData()

jobs_table = Table(
    "syncx_schedule_jobs",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("path", Text, nullable=False),
    Column("file_hash", String(64)),
    Column("spec", Text),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_by", String(20)),
    Column("pause_reason", Text),
    Column("cursor", DateTime),
    Column("updated", DateTime),
)

runs_table = Table(
    "syncx_schedule_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(200), nullable=False),
    Column("scheduled", DateTime, nullable=False),
    Column("scheduled_local", String(40)),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("window_start", DateTime),
    Column("window_end", DateTime),
    Column("state", String(20), nullable=False),
    Column("not_before", DateTime),
    Column("started", DateTime),
    Column("ended", DateTime),
    Column("rows_read", BigInteger),
    Column("rows_written", BigInteger),
    Column("bytes_read", BigInteger),
    Column("bytes_written", BigInteger),
    Column("checkpoint_id", Integer),
    Column("checkpoint_at", DateTime),
    Column("metrics", Text),
    Column("error", Text),
    Column("instance", String(200)),
    Column("lease_until", DateTime),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("log_path", Text),
    Column("file_hash", String(64)),
    UniqueConstraint("job", "scheduled", "attempt", name="syncx_schedule_runs_fire"),
)


class StoreError(JobFileError):
    """The run history cannot be opened (bad URL, server unreachable): exit 2 at start."""


def utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A stored naive-UTC time as an aware one."""
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


def naive(moment: dt.datetime) -> dt.datetime:
    """An aware time as stored (naive UTC)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Fire:
    """A run row to start: which fire, which attempt, its window."""

    id: int
    job: str
    scheduled: dt.datetime
    attempt: int
    window_start: dt.datetime | None
    window_end: dt.datetime | None


@dataclass(frozen=True)
class TickResult:
    """What one tick of a job did: runs to start now, fires recorded as missed."""

    start: list[Fire]
    missed: list[dt.datetime]
    skipped: list[dt.datetime]


class Store:
    """The run history behind a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            msg = f"--db: not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB): {exc}"
            raise StoreError(msg) from exc
        self.shown = parsed.render_as_string(hide_password=True)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.drivername.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            msg = f"--db {self.shown}: no driver for it ({exc}); PostgreSQL needs 'syncx[postgres]'"
            raise StoreError(msg) from exc
        self.dialect = self.engine.dialect.name
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(731984)"))
                metadata.create_all(conn)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            msg = f"cannot open the run history {self.shown}: {reason}"
            raise StoreError(msg) from exc

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- jobs ---------------------------------------------------------------------------------

    def register(self, name: str, path: str, file_hash: str, spec: Schedule) -> None:
        """Record a valid job file (its schedule, its hash); lift a pause for an invalid file."""
        now = naive(dt.datetime.now(dt.UTC))
        spec_json = spec.model_dump_json(by_alias=True)
        with self._tx() as conn:
            row = conn.execute(
                select(jobs_table.c.paused_by).where(jobs_table.c.name == name)
            ).first()
            values: dict[str, Any] = {
                "path": path,
                "file_hash": file_hash,
                "spec": spec_json,
                "updated": now,
            }
            if row is None:
                conn.execute(jobs_table.insert().values(name=name, paused=False, **values))
                return
            if row.paused_by == "invalid":
                values.update(paused=False, paused_by=None, pause_reason=None)
            conn.execute(update(jobs_table).where(jobs_table.c.name == name).values(**values))

    def set_invalid(self, name: str, path: str, reason: str) -> None:
        """Pause a job whose file stopped validating, keeping the message for the status page."""
        now = naive(dt.datetime.now(dt.UTC))
        with self._tx() as conn:
            found = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.name == name)
                .values(paused=True, paused_by="invalid", pause_reason=reason, updated=now)
            ).rowcount
            if not found:
                conn.execute(
                    jobs_table.insert().values(
                        name=name,
                        path=path,
                        paused=True,
                        paused_by="invalid",
                        pause_reason=reason,
                        updated=now,
                    )
                )

    def set_paused(self, name: str, paused: bool) -> bool:
        """``syncx schedule pause|resume``; False when no such job is registered."""
        values: dict[str, Any] = (
            {"paused": True, "paused_by": "user", "pause_reason": "paused by the user"}
            if paused
            else {"paused": False, "paused_by": None, "pause_reason": None}
        )
        with self._tx() as conn:
            query = update(jobs_table).where(jobs_table.c.name == name)
            if not paused:
                query = query.where(jobs_table.c.paused_by != "invalid")
            return bool(conn.execute(query.values(**values)).rowcount)

    def jobs(self) -> list[Any]:
        """Every registered job row, by name."""
        with self._tx() as conn:
            return list(conn.execute(select(jobs_table).order_by(jobs_table.c.name)))

    def job(self, name: str) -> Any:
        """One job row, or None."""
        with self._tx() as conn:
            return conn.execute(select(jobs_table).where(jobs_table.c.name == name)).first()

    # -- fires and claims ---------------------------------------------------------------------

    def tick(
        self,
        name: str,
        spec: Schedule,
        now: dt.datetime,
        instance: str,
        lease: float,
        file_hash: str,
    ) -> TickResult:
        """Turn due fires of ``name`` into rows and claim the next runnable one, atomically.

        Runs while the job row is locked (``FOR UPDATE SKIP LOCKED``): another instance holding
        it handles this job this tick. Late fires (more than one period late, or 60 s at most)
        follow ``catchup``; a fire while a run of the job still runs follows ``overlap``.
        """
        timing = Timing(spec)
        missed: list[dt.datetime] = []
        skipped: list[dt.datetime] = []
        with self._tx() as conn:
            job = conn.execute(
                select(jobs_table)
                .where(jobs_table.c.name == name)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return TickResult([], [], [])
            cursor = utc(job.cursor)
            if cursor is None:
                cursor = now  # a new job: its first fire is the next one, nothing to catch up
            horizon = now - dt.timedelta(seconds=MAX_BACKLOG * timing.period_at(timing.before(now)))
            if cursor < horizon:
                log.warning(
                    "job %s: down since %s; only the last %d fires are recorded",
                    name,
                    cursor,
                    MAX_BACKLOG,
                )
                cursor = horizon
            fires = timing.between(cursor, now)
            if fires or job.cursor is None:
                conn.execute(
                    update(jobs_table)
                    .where(jobs_table.c.name == name)
                    .values(cursor=naive(fires[-1] if fires else cursor))
                )
            if not job.paused:
                missed = self._record_fires(conn, name, spec, timing, fires, now, file_hash)
            if job.paused:
                return TickResult([], [], [])
            start, skipped = self._claim(conn, name, spec, now, instance, lease)
        return TickResult(start, missed, skipped)

    def _record_fires(
        self,
        conn: Connection,
        name: str,
        spec: Schedule,
        timing: Timing,
        fires: Sequence[dt.datetime],
        now: dt.datetime,
        file_hash: str,
    ) -> list[dt.datetime]:
        """Insert the fires as queued (on time, or caught up) or missed rows."""
        late = [f for f in fires if (now - f).total_seconds() > min(timing.period_at(f), 60)]
        on_time = [f for f in fires if f not in late]
        run_late: list[dt.datetime] = []
        if spec.catchup == "all":
            run_late = late
        elif spec.catchup == "latest" and late and not on_time:
            run_late = late[-1:]
        missed = [f for f in late if f not in run_late]
        for fire in missed:
            self._insert(conn, name, spec, timing, fire, "cron", "missed", now, file_hash)
        for fire in run_late:
            self._insert(conn, name, spec, timing, fire, "catchup", "queued", now, file_hash)
        for fire in on_time:
            self._insert(conn, name, spec, timing, fire, "cron", "queued", now, file_hash)
        return missed

    def _insert(
        self,
        conn: Connection,
        name: str,
        spec: Schedule,
        timing: Timing,
        fire: dt.datetime,
        kind: str,
        state: str,
        now: dt.datetime,
        file_hash: str | None,
        attempt: int = 1,
        not_before: dt.datetime | None = None,
    ) -> None:
        """One run row; a second insert of the same (job, fire, attempt) does nothing."""
        if not_before is None:
            not_before = fire + dt.timedelta(seconds=_jitter(name, fire, spec.jitter))
        values = {
            "job": name,
            "scheduled": naive(fire),
            "scheduled_local": local_text(fire, spec.timezone),
            "attempt": attempt,
            "kind": kind,
            "window_start": naive(timing.before(fire)),
            "window_end": naive(fire),
            "state": state,
            "not_before": naive(not_before),
            "ended": naive(now) if state in FINAL_STATES else None,
            "error": "missed while no scheduler ran (catchup)" if state == "missed" else None,
            "file_hash": file_hash,
            "cancel_requested": False,
        }
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        conn.execute(dialect.insert(runs_table).values(**values).on_conflict_do_nothing())

    def _claim(
        self,
        conn: Connection,
        name: str,
        spec: Schedule,
        now: dt.datetime,
        instance: str,
        lease: float,
    ) -> tuple[list[Fire], list[dt.datetime]]:
        """Claim the oldest due queued run of the job, unless one still runs (``overlap``)."""
        runs = runs_table.c
        running = conn.execute(
            select(runs.id).where(and_(runs.job == name, runs.state == "running"))
        ).all()
        due = conn.execute(
            select(runs_table)
            .where(and_(runs.job == name, runs.state == "queued", runs.not_before <= naive(now)))
            .order_by(runs.scheduled, runs.attempt)
        ).all()
        if not due:
            return [], []
        if running:
            fresh = [row for row in due if row.kind in ("cron", "catchup")]
            if spec.overlap == "skip" and fresh:
                conn.execute(
                    update(runs_table)
                    .where(runs.id.in_([row.id for row in fresh]))
                    .values(
                        state="skipped",
                        ended=naive(now),
                        error="the previous run was still running (overlap: skip)",
                    )
                )
                return [], [utc(row.scheduled) for row in fresh]  # type: ignore[misc]
            if spec.overlap == "cancel":
                conn.execute(
                    update(runs_table)
                    .where(runs.id.in_([row.id for row in running]))
                    .values(cancel_requested=True)
                )
            return [], []
        row = due[0]
        conn.execute(
            update(runs_table)
            .where(runs.id == row.id)
            .values(
                state="running",
                instance=instance,
                started=naive(now),
                lease_until=naive(now + dt.timedelta(seconds=lease)),
            )
        )
        fire = Fire(
            row.id,
            name,
            utc(row.scheduled),  # type: ignore[arg-type]
            row.attempt,
            utc(row.window_start),
            utc(row.window_end),
        )
        return [fire], []

    def add_run(
        self,
        name: str,
        spec: Schedule,
        fire: dt.datetime,
        kind: str,
        file_hash: str | None,
        *,
        state: str = "queued",
        attempt: int = 1,
        not_before: dt.datetime | None = None,
    ) -> None:
        """A manual trigger, a backfill fire or a retry (state queued unless said)."""
        now = dt.datetime.now(dt.UTC)
        with self._tx() as conn:
            self._insert(
                conn,
                name,
                spec,
                Timing(spec),
                fire,
                kind,
                state,
                now,
                file_hash,
                attempt=attempt,
                not_before=not_before or now,
            )

    # -- running rows -------------------------------------------------------------------------

    def heartbeat(self, instance: str, lease: float, live: dict[int, dict[str, Any]]) -> set[int]:
        """Renew this instance's leases, store live progress; return runs asked to cancel."""
        now = dt.datetime.now(dt.UTC)
        runs = runs_table.c
        with self._tx() as conn:
            conn.execute(
                update(runs_table)
                .where(and_(runs.instance == instance, runs.state == "running"))
                .values(lease_until=naive(now + dt.timedelta(seconds=lease)))
            )
            for run_id, values in live.items():
                conn.execute(update(runs_table).where(runs.id == run_id).values(**values))
            cancel = conn.execute(
                select(runs.id).where(
                    and_(
                        runs.instance == instance,
                        runs.state == "running",
                        runs.cancel_requested.is_(True),
                    )
                )
            ).all()
        return {row.id for row in cancel}

    def finish(self, run_id: int, state: str, values: dict[str, Any]) -> Any:
        """Close a run row; returns it."""
        now = naive(dt.datetime.now(dt.UTC))
        with self._tx() as conn:
            conn.execute(
                update(runs_table)
                .where(runs_table.c.id == run_id)
                .values(state=state, ended=now, lease_until=None, **values)
            )
            return conn.execute(select(runs_table).where(runs_table.c.id == run_id)).first()

    def reap(self, now: dt.datetime, *, everything: bool = False) -> list[Any]:
        """Mark running rows whose lease expired (or all, for a sole SQLite scheduler at start)
        abandoned; each gets a retry row that resumes from the job's last checkpoint."""
        runs = runs_table.c
        condition = runs.state == "running"
        if not everything:
            condition = and_(condition, runs.lease_until < naive(now))
        with self._tx() as conn:
            stale = conn.execute(
                select(runs_table).where(condition).with_for_update(skip_locked=True)
            ).all()
            for row in stale:
                conn.execute(
                    update(runs_table)
                    .where(runs.id == row.id)
                    .values(
                        state="abandoned",
                        ended=naive(now),
                        lease_until=None,
                        error=f"scheduler instance {row.instance} stopped during the run",
                    )
                )
                self._retry(conn, row, now, now)
        return list(stale)

    def retry(self, row: Any, not_before: dt.datetime) -> None:
        """Queue attempt ``row.attempt + 1`` of the same fire."""
        with self._tx() as conn:
            self._retry(conn, row, dt.datetime.now(dt.UTC), not_before)

    def _retry(self, conn: Connection, row: Any, now: dt.datetime, not_before: dt.datetime) -> None:
        values = {
            "job": row.job,
            "scheduled": row.scheduled,
            "scheduled_local": row.scheduled_local,
            "attempt": row.attempt + 1,
            "kind": "retry",
            "window_start": row.window_start,
            "window_end": row.window_end,
            "state": "queued",
            "not_before": naive(max(now, not_before)),
            "file_hash": row.file_hash,
            "cancel_requested": False,
        }
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        conn.execute(dialect.insert(runs_table).values(**values).on_conflict_do_nothing())

    # -- reading ------------------------------------------------------------------------------

    def history(self, name: str | None = None, limit: int = 50) -> list[Any]:
        """The newest run rows (of one job), newest first."""
        query = select(runs_table).order_by(
            runs_table.c.scheduled.desc(), runs_table.c.attempt.desc()
        )
        if name is not None:
            query = query.where(runs_table.c.job == name)
        with self._tx() as conn:
            return list(conn.execute(query.limit(limit)))

    def running(self) -> list[Any]:
        """Rows in state running, oldest first."""
        with self._tx() as conn:
            return list(
                conn.execute(
                    select(runs_table)
                    .where(runs_table.c.state == "running")
                    .order_by(runs_table.c.started)
                )
            )

    def outcome_counts(self) -> list[Any]:
        """(job, state, count, duration sum in seconds over ended runs) for ``/metrics``."""
        runs = runs_table.c
        with self._tx() as conn:
            rows = conn.execute(
                select(runs.job, runs.state, runs.started, runs.ended).where(
                    runs.state.in_(FINAL_STATES)
                )
            ).all()
        totals: dict[tuple[str, str], list[float]] = {}
        for row in rows:
            entry = totals.setdefault((row.job, row.state), [0, 0.0])
            entry[0] += 1
            if row.started is not None and row.ended is not None:
                entry[1] += (row.ended - row.started).total_seconds()
        return [(job, state, int(v[0]), v[1]) for (job, state), v in sorted(totals.items())]

    def last_success(self) -> dict[str, dt.datetime]:
        """Each job's last successful run's end."""
        runs = runs_table.c
        with self._tx() as conn:
            rows = conn.execute(
                select(runs.job, func.max(runs.ended))
                .where(runs.state == "succeeded")
                .group_by(runs.job)
            ).all()
        return {job: utc(ended) for job, ended in rows if ended is not None}  # type: ignore[misc]


def _jitter(name: str, fire: dt.datetime, jitter: float) -> float:
    """Seconds of start delay for a fire: the same on every instance (seeded by job and fire)."""
    if not jitter:
        return 0.0
    seed = hashlib.sha256(f"{name}|{fire.isoformat()}".encode()).hexdigest()
    return random.Random(seed).uniform(0, jitter)


def spec_of(row: Any) -> Schedule:
    """The schedule stored with a job row."""
    return Schedule.model_validate(json.loads(row.spec))
