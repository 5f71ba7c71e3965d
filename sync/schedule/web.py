"""The read-only status page (``/``) and Prometheus ``/metrics`` of ``syncx schedule serve --http``.

Built on the standard library's HTTP server with server-side HTML, inline CSS and an inline SVG
sparkline: no front-end build step, no JavaScript, nothing fetched from elsewhere. Everything
shown comes from the run history, so any instance sharing a PostgreSQL history shows all of them
(and which instance holds each running run's lease).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.metrics import Sample, job_samples, prometheus_text
from sync.schedule.store import Store, spec_of, utc
from sync.schedule.timing import Timing, local_text, utc_text

__all__ = ["StatusServer", "metrics_text", "status_html"]

_RECENT = 30
"""Runs per job the page and the metrics look at."""

_RAN = ("succeeded", "failed", "cancelled", "abandoned")
"""States of runs that ran (not skipped or missed): the last of them is the job's last outcome."""


class StatusServer:
    """Serves the page and ``/metrics`` on a thread until closed."""

    def __init__(self, store: Store, host: str, port: int, instance: str) -> None:
        self.store = store
        self.instance = instance
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = self.path.split("?")[0]
                if route == "/":
                    body, kind = (
                        status_html(owner.store, owner.instance),
                        "text/html; charset=utf-8",
                    )
                elif route == "/metrics":
                    body, kind = metrics_text(owner.store), "text/plain; version=0.0.4"
                else:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.http = ThreadingHTTPServer((host, port), Handler)
        self.http.daemon_threads = True
        self.address = f"http://{host}:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, name="status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.http.shutdown()
        self.http.server_close()


def _duration(row: Any) -> float | None:
    if row.started is None or row.ended is None:
        return None
    return float((row.ended - row.started).total_seconds())


def _next_fire(row: Any, now: dt.datetime) -> tuple[str, str, Any]:
    """(local text, UTC text, Timing) of a job row's next fire; blanks for a bad stored spec."""
    if not row.spec:
        return "", "", None
    timing = Timing(spec_of(row))
    fire = timing.after(now)
    return local_text(fire, timing.spec.timezone), utc_text(fire), timing


def _sparkline(values: list[float]) -> str:
    """An inline SVG polyline of run durations (oldest left)."""
    width, height = 120, 24
    if len(values) < 2:
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/></svg>'
    )


def _age(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return ""
    seconds = max((now - moment).total_seconds(), 0)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def status_html(store: Store, instance: str) -> str:
    """The whole page."""
    now = dt.datetime.now(dt.UTC)
    esc = html.escape
    job_rows: list[str] = []
    for job in store.jobs():
        runs = store.history(job.name, _RECENT)
        local, utc_next, timing = _next_fire(job, now)
        if job.paused:
            local, utc_next = "paused", ""
        finished = [r for r in reversed(runs) if r.state not in ("queued", "running")]
        dots = "".join(
            f'<span class="dot s-{esc(r.state)}" title="{esc(str(r.scheduled_local))} '
            f'attempt {r.attempt}: {esc(r.state)}"></span>'
            for r in [r for r in finished if r.state in (*_RAN, "missed")][-12:]
        )
        ran = [r for r in finished if r.state in _RAN]
        last = ran[-1] if ran else None
        durations = [d for d in (_duration(r) for r in finished if r.state == "succeeded") if d]
        if job.paused:
            status = f'<span class="paused">paused</span> {esc(job.pause_reason or "")}'
        else:
            status = '<span class="active">active</span>'
        job_rows.append(
            f'<tr class="job" data-job="{esc(job.name)}"><td>{esc(job.name)}</td>'
            f"<td>{esc(timing.describe() if timing else '')}</td>"
            f"<td>{esc(local)}<br><small>{esc(utc_next)}</small></td>"
            f"<td>{status}</td><td class='dots'>{dots}</td>"
            f"<td>{esc(last.state if last else '')}</td>"
            f"<td class='num'>{'' if last is None or last.rows_written is None else f'{last.rows_written:,}'}</td>"
            f"<td class='num'>{'' if last is None or _duration(last) is None else f'{_duration(last):.1f}s'}</td>"
            f"<td>{_sparkline(durations[-20:])}</td></tr>"
        )
    running_rows: list[str] = []
    for run in store.running():
        started = utc(run.started)
        elapsed = max((now - started).total_seconds(), 1e-9) if started else 0
        snapshot = json.loads(run.metrics) if run.metrics else {}
        seconds = float(snapshot.get("elapsedSeconds") or elapsed or 1)
        rate = int(snapshot.get("numRead", 0)) / max(seconds, 1e-9)
        lease = utc(run.lease_until)
        running_rows.append(
            f'<tr class="running" data-job="{esc(run.job)}"><td>{esc(run.job)}</td>'
            f"<td>{esc(str(run.scheduled_local))}</td><td class='num'>{run.attempt}</td>"
            f"<td>{esc(run.instance or '')}<br><small>lease until "
            f"{esc(utc_text(lease) if lease else '')}</small></td>"
            f"<td>{esc(_age(started, now))}</td>"
            f"<td class='num'>{int(run.rows_read or 0):,}</td><td class='num'>{rate:,.0f}</td>"
            f"<td>{'' if run.checkpoint_id is None else run.checkpoint_id} "
            f"<small>{esc(_age(utc(run.checkpoint_at), now))}</small></td></tr>"
        )
    recent_rows = [
        f'<tr class="run s-{esc(r.state)}"><td>{esc(r.job)}</td><td>{esc(str(r.scheduled_local))}</td>'
        f"<td class='num'>{r.attempt}</td><td>{esc(r.kind)}</td>"
        f'<td><span class="badge s-{esc(r.state)}">{esc(r.state)}</span></td>'
        f"<td class='num'>{'' if r.rows_written is None else f'{r.rows_written:,}'}</td>"
        f"<td class='num'>{'' if _duration(r) is None else f'{_duration(r):.1f}s'}</td>"
        f"<td>{esc(r.instance or '')}</td><td class='err'>{esc((r.error or '')[:200])}</td></tr>"
        for r in store.history(None, 20)
    ]
    empty = "<tr><td colspan='9' class='none'>none</td></tr>"
    return _PAGE.format(
        instance=esc(instance),
        now=esc(utc_text(now)),
        jobs="".join(job_rows) or empty,
        running="".join(running_rows) or empty,
        recent="".join(recent_rows) or empty,
    )


def metrics_text(store: Store) -> str:
    """``/metrics``: each job's last (or running) run under ChunJun's names, and the scheduler's
    own counters: runs by outcome, run seconds, last success time, missed fires, paused, running."""
    samples: list[Sample] = []
    now = dt.datetime.now(dt.UTC)
    running = {run.job for run in store.running()}
    for job in store.jobs():
        latest = next((r for r in store.history(job.name, _RECENT) if r.metrics), None)
        if latest is not None:
            samples.extend(job_samples(job.name, json.loads(latest.metrics)))
        labels = {"job": job.name}
        samples.append(
            Sample("syncx_schedule_paused", float(job.paused), labels, "gauge", "1 while paused")
        )
        samples.append(
            Sample(
                "syncx_schedule_running",
                float(job.name in running),
                labels,
                "gauge",
                "1 while a run of the job runs",
            )
        )
        _, _, timing = _next_fire(job, now)
        if timing is not None:
            samples.append(
                Sample(
                    "syncx_schedule_next_fire_timestamp_seconds",
                    timing.after(now).timestamp(),
                    labels,
                    "gauge",
                    "Unix time of the next fire",
                )
            )
    for name, moment in store.last_success().items():
        samples.append(
            Sample(
                "syncx_schedule_last_success_timestamp_seconds",
                moment.timestamp(),
                {"job": name},
                "gauge",
                "Unix time the last successful run ended",
            )
        )
    counts = store.outcome_counts()
    for name, outcome, count, _ in counts:
        samples.append(
            Sample(
                "syncx_schedule_runs_total",
                count,
                {"job": name, "outcome": outcome},
                "counter",
                "Finished runs (and recorded fires) by outcome",
            )
        )
    for name, outcome, _, seconds in counts:
        samples.append(
            Sample(
                "syncx_schedule_run_seconds_total",
                seconds,
                {"job": name, "outcome": outcome},
                "counter",
                "Seconds spent in runs, by outcome",
            )
        )
    for name, outcome, count, _ in counts:
        if outcome == "missed":
            samples.append(
                Sample(
                    "syncx_schedule_missed_fires_total",
                    count,
                    {"job": name},
                    "counter",
                    "Fires missed while no scheduler ran",
                )
            )
    return prometheus_text(samples)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>syncx scheduler</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212121; background: #fff; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 24px 0 8px; }}
.meta {{ color: #616161; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 6px 10px; border-bottom: 1px solid #e0e0e0; vertical-align: top; }}
th {{ background: #f5f5f5; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.err {{ color: #b71c1c; max-width: 420px; }} td.none {{ color: #9e9e9e; }}
small {{ color: #757575; }}
.dot {{ display: inline-block; width: 14px; height: 14px; margin-right: 3px; border-radius: 2px; }}
.badge {{ padding: 1px 8px; border-radius: 9px; color: #fff; }}
.s-succeeded {{ background: #2e7d32; }} .s-failed {{ background: #c62828; }}
.s-missed {{ background: #ef6c00; }} .s-skipped {{ background: #9e9e9e; }}
.s-cancelled {{ background: #616161; }} .s-abandoned {{ background: #6a1b9a; }}
.s-running {{ background: #1565c0; }} .s-queued {{ background: #90caf9; }}
tr.run {{ background: none; }}
.paused {{ color: #fff; background: #ef6c00; padding: 1px 8px; border-radius: 9px; }}
.active {{ color: #2e7d32; font-weight: 600; }}
</style></head><body>
<h1>syncx scheduler</h1>
<div class="meta">instance {instance} · {now}</div>
<h2>Jobs</h2>
<table id="jobs"><tr><th>Job</th><th>Schedule</th><th>Next fire (local / UTC)</th><th>State</th>
<th>Last runs</th><th>Last outcome</th><th>Rows</th><th>Duration</th><th>Run times</th></tr>
{jobs}</table>
<h2>Running</h2>
<table id="running"><tr><th>Job</th><th>Fire</th><th>Attempt</th><th>Lease</th><th>Started</th>
<th>Rows read</th><th>Rows/s</th><th>Checkpoint</th></tr>
{running}</table>
<h2>Recent runs</h2>
<table id="recent"><tr><th>Job</th><th>Fire</th><th>Attempt</th><th>Kind</th><th>Outcome</th>
<th>Rows</th><th>Duration</th><th>Instance</th><th>Error</th></tr>
{recent}</table>
</body></html>
"""
