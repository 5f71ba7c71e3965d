"""``syncx schedule``: fire times across daylight saving, the run history's catch-up and overlap
rules (SQLite and PostgreSQL), bad input, and the serve loop end to end with stream jobs:
a job file that stops validating while served, notifications, the status page in a real
headless browser (Debian's chromium), and two instances sharing one PostgreSQL history.

The MySQL tier (a minute of incremental runs, SIGKILL mid-run) is in test_schedule_mysql.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from sync.model import Schedule, ScheduleNotify
from sync.schedule.notify import notify
from sync.schedule.store import Store, runs_table
from sync.schedule.timing import Timing, local_text
from tests.conftest import RunCli, syncx_command

NY = "America/New_York"
PG = "postgresql://root@127.0.0.1:5432"
UTC = dt.UTC


def _day(spec: Schedule, year: int, month: int, day: int) -> list[str]:
    """Local times of the fires on one local day."""
    timing = Timing(spec)
    start = dt.datetime(year, month, day, tzinfo=timing.zone).astimezone(UTC)
    end = (dt.datetime(year, month, day, tzinfo=timing.zone) + dt.timedelta(days=1)).astimezone(UTC)
    fires = timing.between(start - dt.timedelta(microseconds=1), end - dt.timedelta(seconds=1))
    return [local_text(f, spec.timezone)[11:] for f in fires]


# -- fire times ---------------------------------------------------------------------------------


def test_daily_job_runs_once_on_both_daylight_saving_days_in_new_york() -> None:
    at_130 = Schedule(cron="30 1 * * *", timezone=NY)
    at_230 = Schedule(cron="30 2 * * *", timezone=NY)
    # 2026-11-01: 01:30 happens twice (EDT, then EST): the job runs once, at the first
    assert _day(at_130, 2026, 11, 1) == ["01:30:00 EDT"]
    assert _day(at_230, 2026, 11, 1) == ["02:30:00 EST"]
    # 2026-03-08: 02:30 does not exist: the job runs at the next existing time, 03:00
    assert _day(at_230, 2026, 3, 8) == ["03:00:00 EDT"]
    assert _day(at_130, 2026, 3, 8) == ["01:30:00 EST"]
    # the days around keep their times
    assert _day(at_230, 2026, 3, 9) == ["02:30:00 EDT"]
    assert _day(at_130, 2026, 11, 2) == ["01:30:00 EST"]


def test_hourly_job_keeps_its_hours_across_daylight_saving() -> None:
    hourly = Schedule(cron="0 * * * *", timezone=NY)
    fall = _day(hourly, 2026, 11, 1)
    assert len(fall) == 25 and fall[1:3] == ["01:00:00 EDT", "01:00:00 EST"]
    spring = _day(hourly, 2026, 3, 8)
    assert len(spring) == 23 and spring[1:3] == ["01:00:00 EST", "03:00:00 EDT"]
    # every fire one real hour after the one before
    timing = Timing(hourly)
    fires = timing.between(
        dt.datetime(2026, 10, 31, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC)
    )
    assert {b - a for a, b in itertools.pairwise(fires)} == {dt.timedelta(hours=1)}


def test_every_fires_at_multiples_of_its_period_and_windows_chain() -> None:
    timing = Timing(Schedule(every="15m"))
    moment = dt.datetime(2026, 5, 1, 10, 7, tzinfo=UTC)
    assert timing.after(moment) == dt.datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    assert timing.before(timing.after(moment)) == dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    cron = Timing(Schedule(cron="15 2 * * *", timezone="Asia/Shanghai"))
    fire = cron.after(moment)
    assert local_text(fire, "Asia/Shanghai") == "2026-05-02 02:15:00 CST"
    assert cron.before(fire) == fire - dt.timedelta(days=1)


def test_next_shows_daylight_saving_shifts(tmp_path: Path, run_cli: RunCli, write_job: Any) -> None:
    path = write_job(_stream_job({"cron": "30 1 * * *", "timezone": NY}), "ny.yaml")
    done = run_cli("schedule", "next", path, "-n", "200")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 200 and all(" 01:30:00 E" in line for line in lines)
    shifts = [line for line in lines if "daylight saving" in line]
    assert len(shifts) == 1, lines  # at most 200 days: one of the two changes
    assert ("EDT (-04:00)" in shifts[0]) != ("EST (-05:00)" in shifts[0])


# -- the job file -------------------------------------------------------------------------------


def _stream_job(
    schedule: dict[str, Any] | None,
    rows: int = 100,
    writer: dict[str, Any] | None = None,
    setting: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job": {
            "content": [
                {
                    "reader": {
                        "name": "streamreader",
                        "parameter": {
                            "column": [{"name": "id", "type": "id"}],
                            "sliceRecordCount": [rows],
                        },
                    },
                    "writer": writer or {"name": "streamwriter", "parameter": {"print": False}},
                }
            ],
            "setting": setting or {},
        }
    }
    if schedule is not None:
        job["schedule"] = schedule
    if name is not None:
        job["name"] = name
    return job


def test_bad_schedule_blocks_name_every_field_at_once(run_cli: RunCli, write_job: Any) -> None:
    path = write_job(
        _stream_job(
            {
                "cron": "61 * * * *",
                "timezone": "Mars/Olympus",
                "overlap": "sometimes",
                "retries": {"attempts": 0, "delay": "5 parsecs"},
                "jiter": "3s",
            }
        ),
        "bad.yaml",
    )
    done = run_cli("validate", path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for expected in (
        "schedule.cron: not a valid cron expression",
        "schedule.timezone: unknown time zone",
        "schedule.overlap: must be one of",
        "schedule.retries.attempts: must be >= 1",
        "schedule.retries.delay: not a duration",
        "schedule.jiter: unknown key (did you mean 'jitter'?)",
    ):
        assert expected in done.stderr, done.stderr
    served = run_cli("schedule", "serve", path, "--db", f"sqlite:///{path.parent / 'h.db'}")
    assert served.returncode == 2 and "schedule.timezone: unknown time zone" in served.stderr
    neither = write_job(_stream_job({"timezone": "UTC"}), "neither.yaml")
    done = run_cli("validate", neither)
    assert (
        done.returncode == 2 and "schedule: give exactly one of 'cron' and 'every'" in done.stderr
    )
    short = write_job(_stream_job({"cron": "1 2 3"}), "short.json")
    done = run_cli("validate", short)
    assert (
        done.returncode == 2 and "schedule.cron: a cron expression has five fields" in done.stderr
    )


def test_chunjun_json_takes_the_block_under_job_setting(run_cli: RunCli, write_job: Any) -> None:
    job = _stream_job(None, setting={"schedule": {"every": "90s", "catchup": "all"}})
    path = write_job(job, "chunjun.json")
    done = run_cli("schedule", "next", path, "-n", "2")
    assert done.returncode == 0, done.stderr
    first, second = (
        dt.datetime.fromisoformat(line.split()[-1]) for line in done.stdout.splitlines()
    )
    assert (second - first).total_seconds() == 90
    job["schedule"] = {"every": "1m"}
    both = write_job(job, "both.json")
    done = run_cli("validate", both)
    assert done.returncode == 2
    assert "give either 'schedule' or 'job.setting.schedule', not both" in done.stderr


def test_unreachable_history_database_is_a_clear_error(
    run_cli: RunCli, write_job: Any, tmp_path: Path
) -> None:
    path = write_job(_stream_job({"every": "1m"}), "job.yaml")
    port = _free_port()
    done = run_cli(
        "schedule", "serve", path, "--db", f"postgresql://root:s3cret@127.0.0.1:{port}/x"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot open the run history postgresql://root:***@127.0.0.1:{port}/x" in done.stderr
    assert "s3cret" not in done.stderr
    done = run_cli("schedule", "list", "--db", "not a url")
    assert done.returncode == 2 and "--db: not a database URL" in done.stderr


# -- the run history: catch-up and overlap (SQLite and PostgreSQL) ------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    with _pg_database() as url:
        yield url


def _admin(statement: str) -> None:
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(statement)


class _pg_database:
    """A fresh PostgreSQL database for one test (dropped after)."""

    def __enter__(self) -> str:
        self.name = f"syncx_sched_{uuid.uuid4().hex[:10]}"
        _admin(f"CREATE DATABASE {self.name}")
        return f"{PG}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        _admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _states(store: Store, job: str) -> list[tuple[str, str, int]]:
    """(scheduled HH:MM, state, attempt), oldest first."""
    return [
        (f"{row.scheduled:%H:%M}", row.state, row.attempt) for row in reversed(store.history(job))
    ]


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("none", ["missed"] * 5),
        ("latest", ["missed"] * 4 + ["running"]),
        ("all", ["running"] + ["queued"] * 4),
    ],
)
def test_fires_missed_during_a_downtime_follow_catchup(
    store_url: str, catchup: str, expected: list[str]
) -> None:
    store = Store(store_url)
    spec = Schedule(every="10m", catchup=catchup)
    store.register("j", "j.yaml", "h", spec)
    assert store.tick("j", spec, T0, "a", 30, "h").start == []  # a new job starts now
    # down from 12:00 to 12:55: fires 12:10 ... 12:50 are late
    result = store.tick("j", spec, T0 + dt.timedelta(minutes=55), "a", 30, "h")
    assert [s for _, s, _ in _states(store, "j")] == expected
    assert len(result.missed) == expected.count("missed")
    # the next on-time fire runs (when nothing else does)
    if result.start:
        store.finish(result.start[0].id, "succeeded", {})
    later = store.tick("j", spec, T0 + dt.timedelta(minutes=60, seconds=2), "a", 30, "h")
    if catchup == "all":
        assert later.start and later.start[0].scheduled == T0 + dt.timedelta(minutes=20)
    else:
        assert later.start and later.start[0].scheduled == T0 + dt.timedelta(minutes=60)
        assert later.start[0].window_start == T0 + dt.timedelta(minutes=50)
    store.close()


@pytest.mark.parametrize("overlap", ["skip", "queue", "cancel"])
def test_a_fire_while_the_previous_run_runs_follows_overlap(store_url: str, overlap: str) -> None:
    store = Store(store_url)
    spec = Schedule(every="1m", overlap=overlap)
    store.register("j", "j.yaml", "h", spec)
    store.tick("j", spec, T0, "a", 30, "h")
    first = store.tick("j", spec, T0 + dt.timedelta(minutes=1, seconds=1), "a", 30, "h").start
    assert len(first) == 1
    second = store.tick("j", spec, T0 + dt.timedelta(minutes=2, seconds=1), "a", 30, "h")
    assert second.start == []
    states = [s for _, s, _ in _states(store, "j")]
    assert states == [
        "running",
        {"skip": "skipped", "queue": "queued", "cancel": "queued"}[overlap],
    ]
    cancel = store.heartbeat("a", 30, {})
    assert cancel == ({first[0].id} if overlap == "cancel" else set())
    store.finish(first[0].id, "cancelled" if overlap == "cancel" else "succeeded", {})
    third = store.tick("j", spec, T0 + dt.timedelta(minutes=2, seconds=2), "a", 30, "h")
    assert len(third.start) == (0 if overlap == "skip" else 1)
    store.close()


def test_a_double_fire_is_harmless_and_an_expired_lease_is_abandoned(store_url: str) -> None:
    store = Store(store_url)
    spec = Schedule(every="1m")
    store.register("j", "j.yaml", "h", spec)
    store.tick("j", spec, T0, "a", 30, "h")
    fire = T0 + dt.timedelta(minutes=1)
    for _ in range(2):  # a second instance recording the same fire inserts nothing
        store.add_run("j", spec, fire, "cron", "h", not_before=fire)
    assert len(store.history("j")) == 1
    claimed = store.tick("j", spec, fire + dt.timedelta(seconds=1), "a", 5, "h").start
    assert len(claimed) == 1
    assert store.tick("j", spec, fire + dt.timedelta(seconds=2), "b", 5, "h").start == []
    assert store.reap(fire + dt.timedelta(seconds=3)) == []  # lease still valid
    later = dt.datetime.now(UTC) + dt.timedelta(seconds=60)
    stale = store.reap(later)
    assert [row.id for row in stale] == [claimed[0].id]
    assert _states(store, "j") == [("12:01", "abandoned", 1), ("12:01", "queued", 2)]
    retry = store.tick("j", spec, later, "b", 5, "h").start
    assert [(r.scheduled, r.attempt) for r in retry] == [(fire, 2)]
    store.close()


# -- serving ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A ``syncx schedule serve`` process in ``cwd``."""

    def __init__(self, cwd: Path, *args: str | Path, http: bool = True) -> None:
        self.cwd = cwd
        self.port = _free_port() if http else None
        extra = ["--http", f"127.0.0.1:{self.port}"] if http else []
        self.log = (cwd / f"serve-{uuid.uuid4().hex[:6]}.log").open("w")
        self.process = subprocess.Popen(
            syncx_command("schedule", "serve", *map(str, args), *extra),
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        wait_for(
            lambda: self.process.poll() is not None or " job(s) with history " in self.output(),
            60,
            self.output,
        )
        assert self.process.poll() is None, self.output()
        if http:
            assert self.get("/metrics") is not None, self.output()

    def get(self, route: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(encoding="utf-8")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.log.close()
        return code


def wait_for(predicate: Callable[[], Any], timeout: float, context: Callable[[], str]) -> Any:
    """Poll ``predicate`` until it is truthy (returns it) or fail with ``context()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout}s\n{context()}")


def _history(url: str, job: str) -> list[Any]:
    store = Store(url)
    try:
        return list(reversed(store.history(job, 500)))
    finally:
        store.close()


def test_serve_keeps_others_running_when_a_file_stops_validating_and_shows_it_all(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """Three jobs served from a folder: one succeeds every second, one fails (and notifies),
    one's file is broken while served (paused with the message) and repaired (resumed). The
    status page is checked in headless chromium: DOM and screenshot pixels."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    db = f"sqlite:///{tmp_path / 'history.db'}"
    good = _stream_job(
        {"every": "1s"}, name="good", writer={"name": "streamwriter", "parameter": {"print": True}}
    )
    window = {"name": "w", "type": "string", "value": "${window_start_utc}/${window_end_utc}"}
    good["job"]["content"][0]["reader"]["parameter"]["column"].append(window)
    (jobs / "good.yaml").write_text(yaml.safe_dump(good))
    failing = _stream_job(
        {
            "every": "2s",
            "retries": {"attempts": 2, "delay": "1s"},
            "notify": {
                "on": ["failure"],
                "command": f"echo $SYNCX_JOB $SYNCX_ATTEMPT >> {tmp_path}/notified",
            },
        },
        writer={
            "name": "filewriter",
            "parameter": {"path": "/proc/self/nope/out", "fileType": "csv"},
        },
        name="failing",
    )
    (jobs / "failing.yaml").write_text(yaml.safe_dump(failing))
    editable = jobs / "edited.yaml"
    editable.write_text(yaml.safe_dump(_stream_job({"every": "1s"}, name="edited")))
    (jobs / "notes.json").write_text('{"job": {"content": []}, "note": "not a scheduled job"}')
    served = None
    try:
        # a folder with an invalid file at start: exit 2, every problem listed
        done = run_cli("schedule", "serve", jobs, "--db", db)
        assert done.returncode == 2 and "notes.json" in done.stderr, done.stderr
        (jobs / "notes.json").unlink()
        served = Served(tmp_path, jobs, "--db", db)
        wait_for(
            lambda: sum(r.state == "succeeded" for r in _history(db, "edited")) >= 2,
            60,
            served.output,
        )
        editable.write_text(editable.read_text().replace("every: 1s", "cron: 0 25 * * *"))
        wait_for(
            lambda: "paused" in run_cli("schedule", "list", "--db", db).stdout, 30, served.output
        )
        listing = run_cli("schedule", "list", "--db", db).stdout
        edited_line = next(line for line in listing.splitlines() if line.startswith("edited "))
        assert (
            "paused (" in edited_line
            and "schedule.cron: not a valid cron expression" in edited_line
        )
        good_before = sum(r.state == "succeeded" for r in _history(db, "good"))
        wait_for(
            lambda: sum(r.state == "succeeded" for r in _history(db, "good")) >= good_before + 2,
            60,
            served.output,
        )
        wait_for(
            lambda: (
                [r.attempt for r in _history(db, "failing") if r.state == "failed"][:2] == [1, 2]
            ),
            60,
            served.output,
        )
        failed = next(r for r in _history(db, "failing") if r.state == "failed")
        assert "No such file or directory" in failed.error and Path(failed.log_path).exists()
        assert "failing 1" in wait_for(
            lambda: (tmp_path / "notified").exists() and (tmp_path / "notified").read_text(),
            30,
            served.output,
        )
        page = served.get("/")
        assert page is not None and "schedule.cron: not a valid cron expression" in page
        _check_page_in_chromium(served, tmp_path)
        # repaired: resumed by itself
        editable.write_text(editable.read_text().replace("cron: 0 25 * * *", "every: 1s"))
        count = sum(r.state == "succeeded" for r in _history(db, "edited"))
        wait_for(
            lambda: sum(r.state == "succeeded" for r in _history(db, "edited")) > count,
            60,
            served.output,
        )
        # each run got its window: the fire before it, and its own
        ran = next(r for r in _history(db, "good") if r.state == "succeeded")
        start, end = (f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in (ran.window_start, ran.scheduled))
        assert ran.window_start == ran.scheduled - dt.timedelta(seconds=1)
        assert f"1,{start}/{end}\n" in Path(ran.log_path).read_text()
        metrics = served.get("/metrics") or ""
        assert 'syncx_numWrite{job="good"} 100' in metrics
        assert 'syncx_schedule_runs_total{job="failing",outcome="failed"}' in metrics
        assert 'syncx_schedule_last_success_timestamp_seconds{job="good"}' in metrics
        history = run_cli("schedule", "history", "good", "--db", db, "-n", "30")
        assert history.returncode == 0 and "succeeded  read 100 wrote 100" in history.stdout
        assert served.stop() == 0
    finally:
        if served is not None and served.process.poll() is None:
            served.stop(signal.SIGKILL)


def _check_page_in_chromium(served: Served, tmp_path: Path) -> None:
    """Open the page in Debian's headless chromium; assert on its DOM and its screenshot."""
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver missing: scripts/setup.sh dev installs chromium-driver"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"http://127.0.0.1:{served.port}/")
        assert browser.title == "syncx scheduler"
        good = browser.find_element(By.CSS_SELECTOR, 'tr.job[data-job="good"]')
        assert "every 1s" in good.text and "active" in good.text
        edited = browser.find_element(By.CSS_SELECTOR, 'tr.job[data-job="edited"]')
        assert "paused" in edited.text
        green = good.find_elements(By.CSS_SELECTOR, ".dot.s-succeeded")
        red = browser.find_elements(By.CSS_SELECTOR, 'tr.job[data-job="failing"] .dot.s-failed')
        assert green and red
        badge = edited.find_element(By.CSS_SELECTOR, ".paused")
        good.find_element(By.CSS_SELECTOR, "svg.spark polyline")
        spark = good.find_element(By.CSS_SELECTOR, "svg.spark")
        shot = tmp_path / "status.png"
        browser.save_screenshot(str(shot))
        keep = os.environ.get("SYNCX_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
        ratio = browser.execute_script("return window.devicePixelRatio")
        image = Image.open(shot).convert("RGB")

        def centre(element: Any) -> tuple[int, int, int]:
            rect = element.rect
            x = int((rect["x"] + rect["width"] / 2) * ratio)
            y = int((rect["y"] + rect["height"] / 2) * ratio)
            return image.getpixel((x, y))

        def region(element: Any) -> list[tuple[int, int, int]]:
            rect = element.rect
            box = [
                int(v * ratio)
                for v in (
                    rect["x"],
                    rect["y"],
                    rect["x"] + rect["width"],
                    rect["y"] + rect["height"],
                )
            ]
            return list(image.crop(box).get_flattened_data())

        def near(pixel: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
            return all(abs(a - b) <= 24 for a, b in zip(pixel, want, strict=True))

        # succeeded dots are green (#2e7d32), failed ones red (#c62828), the paused badge orange
        assert all(near(centre(dot), (0x2E, 0x7D, 0x32)) for dot in green), centre(green[0])
        assert near(centre(red[0]), (0xC6, 0x28, 0x28)), centre(red[0])
        assert sum(near(p, (0xEF, 0x6C, 0x00)) for p in region(badge)) > 20
        # the sparkline is drawn: a blue (#1565c0) line inside its 120x24 box, white around it
        line = region(spark)
        assert sum(near(p, (0x15, 0x65, 0xC0)) for p in line) > 30
        assert sum(near(p, (0xFF, 0xFF, 0xFF)) for p in line) > len(line) / 3
    finally:
        browser.quit()


def test_two_instances_on_one_postgresql_history_run_each_fire_once(tmp_path: Path) -> None:
    """Two schedulers share the history: every fire has one run; one instance killed mid-run
    leaves its run to the other after the lease expires (abandoned, retried from a checkpoint)."""
    slow = _stream_job(
        {"every": "1h"},
        rows=40_000,
        setting={
            "speed": {"record": 8_000},
            "restore": {"isRestore": True, "checkpointInterval": 0.5},
        },
        name="slow",
    )
    (tmp_path / "tick.yaml").write_text(yaml.safe_dump(_stream_job({"every": "2s"}, name="tick")))
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(slow))
    with _pg_database() as db:
        a = Served(
            tmp_path, "tick.yaml", "slow.yaml", "--db", db, "--instance", "a", "--lease", "3"
        )
        b = Served(
            tmp_path, "tick.yaml", "slow.yaml", "--db", db, "--instance", "b", "--lease", "3"
        )
        try:
            wait_for(
                lambda: len([r for r in _history(db, "tick") if r.state == "succeeded"]) >= 5,
                90,
                lambda: a.output() + b.output(),
            )
            done = subprocess.run(
                syncx_command("schedule", "trigger", "slow", "--db", db),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            running = wait_for(
                lambda: [
                    r for r in _history(db, "slow") if r.state == "running" and r.checkpoint_id
                ],
                60,
                lambda: a.output() + b.output(),
            )
            victim, survivor = (a, b) if running[0].instance == "a" else (b, a)
            other = "b" if running[0].instance == "a" else "a"
            victim.stop(signal.SIGKILL)
            wait_for(
                lambda: [r.state for r in _history(db, "slow")] == ["abandoned", "succeeded"],
                90,
                survivor.output,
            )
            runs = _history(db, "slow")
            assert (
                runs[0].error == f"scheduler instance {running[0].instance} stopped during the run"
            )
            assert runs[1].instance == other and runs[1].attempt == 2
            assert "restored from checkpoint" in Path(runs[1].log_path).read_text()
            assert survivor.stop() == 0
        finally:
            for served in (a, b):
                if served.process.poll() is None:
                    served.stop(signal.SIGKILL)
        ticks = _history(db, "tick")
        firsts = [r.scheduled for r in ticks if r.attempt == 1]
        assert len(firsts) == len(set(firsts))  # one row per fire
        ran = [r.scheduled for r in ticks if r.state in ("succeeded", "running")]
        assert len(ran) == len(set(ran)) and len(ran) >= 5
        assert {r.instance for r in ticks if r.state == "succeeded"} <= {"a", "b"}
        store = Store(db)
        with store.engine.begin() as conn:
            total = conn.execute(runs_table.select()).all()
        store.close()
        assert all(r.state != "failed" for r in total), [(r.job, r.state, r.error) for r in total]


def test_pause_resume_trigger_and_backfill_commands(tmp_path: Path, run_cli: RunCli) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    path = tmp_path / "daily.yaml"
    job = _stream_job({"cron": "30 2 * * *", "timezone": NY}, name="daily")
    path.write_text(yaml.safe_dump(job))
    done = run_cli("schedule", "pause", path, "--db", db)
    assert done.returncode == 2 and "not in the run history" in done.stderr
    store = Store(db)
    store.register("daily", str(path), "h", Schedule.model_validate(job["schedule"]))
    store.close()
    assert run_cli("schedule", "pause", "daily", "--db", db).stdout.strip() == "daily paused"
    assert "paused (paused by the user)" in run_cli("schedule", "list", "--db", db).stdout
    assert run_cli("schedule", "resume", path, "--db", db).stdout.strip() == "daily resumed"
    assert "  active  never ran" in run_cli("schedule", "list", "--db", db).stdout
    week = ("--from", "2026-03-06", "--to", "2026-03-09T02:30")
    dry = run_cli("schedule", "backfill", "daily", *week, "--dry-run", "--db", db)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would queue 2026-03-06 02:30:00 EST  2026-03-06T07:30:00Z",
        "would queue 2026-03-07 02:30:00 EST  2026-03-07T07:30:00Z",
        "would queue 2026-03-08 03:00:00 EDT  2026-03-08T07:00:00Z",
        "would queue 2026-03-09 02:30:00 EDT  2026-03-09T06:30:00Z",
    ]
    assert "no runs of daily yet" in run_cli("schedule", "history", "daily", "--db", db).stdout
    done = run_cli("schedule", "backfill", "daily", *week, "--db", db)
    assert done.returncode == 0 and done.stdout.count("queued ") == 4
    assert run_cli("schedule", "trigger", "daily", "--db", db).returncode == 0
    runs = _history(db, "daily")
    assert [(r.kind, r.state) for r in runs] == [("backfill", "queued")] * 4 + [
        ("manual", "queued")
    ]
    # each backfilled fire carries its own window: the fire before it, to it
    assert runs[2].window_start == runs[1].scheduled and runs[2].window_end == runs[2].scheduled
    bad = run_cli("schedule", "backfill", "daily", "--from", "yesterday", "--to", "x", "--db", db)
    assert bad.returncode == 2 and "--from: not a date/time" in bad.stderr


def test_a_run_past_its_timeout_stops_at_a_checkpoint_and_fails(tmp_path: Path) -> None:
    job = _stream_job(
        {"every": "1h", "timeout": "8s"},
        rows=1_000_000,
        setting={
            "speed": {"record": 5_000},
            "restore": {"isRestore": True, "checkpointInterval": 0.5},
        },
        name="slow",
    )
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(job))
    db = f"sqlite:///{tmp_path / 'history.db'}"
    served = Served(tmp_path, "slow.yaml", "--db", db, http=False)
    try:
        done = subprocess.run(
            syncx_command("schedule", "trigger", "slow", "--db", db),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        second = subprocess.run(
            syncx_command("schedule", "serve", "slow.yaml", "--db", db),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert "the history is served by pid " in second.stderr
        failed = wait_for(
            lambda: [r for r in _history(db, "slow") if r.state == "failed"], 60, served.output
        )
        assert failed[0].error == "timed out after 8s (stopped at a checkpoint)"
        assert [r.state for r in _history(db, "slow")] == ["failed"]  # retries: 1 attempt
        # (on a loaded machine the child may not have started copying within 8 s)
        if failed[0].rows_read:
            assert failed[0].rows_read < 1_000_000
            assert "final checkpoint" in Path(failed[0].log_path).read_text()
        assert served.stop() == 0
    finally:
        if served.process.poll() is None:
            served.stop(signal.SIGKILL)


def test_run_serves_prometheus_metrics_while_it_runs(tmp_path: Path, write_job: Any) -> None:
    path = write_job(_stream_job(None, rows=30_000, setting={"speed": {"record": 5_000}}))
    port = _free_port()
    run = subprocess.Popen(
        syncx_command("run", str(path), "--metrics-port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = re.search(r'^syncx_numRead\{job="job"\} (\d+)$', text, re.MULTILINE)
        return text if found and 0 < int(found.group(1)) < 30_000 else None

    try:
        text = wait_for(scrape, 60, lambda: run.stderr.read() if run.stderr else "")
        assert "# TYPE syncx_numRead counter" in text and "# TYPE syncx_cdcLag gauge" in text
    finally:
        run.wait(60)
    assert run.returncode == 0


def test_notify_posts_json_to_the_webhook_and_runs_the_command(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = ScheduleNotify.model_validate(
            {
                "on": ["failure"],
                "webhook": f"http://127.0.0.1:{server.server_address[1]}/hook",
                "command": f'echo "$SYNCX_EVENT $SYNCX_JOB $SYNCX_ERROR" > {tmp_path}/out',
            }
        )
        notify(spec, "success", {"job": "j"})  # not asked for: nothing happens
        notify(spec, "failure", {"job": "j", "error": "boom", "attempt": 2})
        wait_for(lambda: received and (tmp_path / "out").exists(), 30, lambda: str(received))
        assert received == [{"event": "failure", "job": "j", "error": "boom", "attempt": 2}]
        assert (tmp_path / "out").read_text() == "failure j boom\n"
    finally:
        server.shutdown()
        server.server_close()
