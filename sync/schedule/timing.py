"""When a schedule fires: cron in an IANA time zone (Debian cron's daylight-saving rule) or ``every``.

Cron expressions are evaluated by ``cronsim`` in the schedule's time zone. It follows Debian
cron: on the day clocks go back a daily job whose time occurs twice runs once, on the day they go
forward a time that does not exist runs at the next existing time, and a job with a wildcard
hour (hourly, every minute) keeps running every real hour. (croniter 7 runs a ``30 1 * * *``
job twice on the fall-back day; cronsim does not — measured.) ``every`` fires at whole multiples
of the period since the Unix epoch, so every scheduler instance computes the same fire times.

All times handed out are aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from sync.model import Schedule

__all__ = ["Timing", "check_cron", "local_text", "utc_text"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _cronsim() -> type:
    try:
        from cronsim import CronSim  # noqa: PLC0415 - the optional 'schedule' extra
    except ImportError as exc:
        msg = "cron schedules need the 'schedule' extra: pip install 'syncx[schedule]'"
        raise ValueError(msg) from exc
    return CronSim  # type: ignore[no-any-return]


def check_cron(expression: str) -> None:
    """Raise ``ValueError`` naming what is wrong with a five-field cron expression."""
    if len(expression.split()) != 5:
        msg = "a cron expression has five fields: minute hour day-of-month month day-of-week"
        raise ValueError(msg)
    cron_sim = _cronsim()
    from cronsim import CronSimError  # noqa: PLC0415 - present: _cronsim() imported it

    try:
        cron_sim(expression, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        msg = f"not a valid cron expression: {exc}"
        raise ValueError(msg) from exc


class Timing:
    """The fire times of one schedule block."""

    def __init__(self, spec: Schedule) -> None:
        self.spec = spec
        self.zone = ZoneInfo(spec.timezone)

    def after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire strictly after ``moment``."""
        return next(self._forward(moment))

    def before(self, moment: dt.datetime) -> dt.datetime:
        """The last fire strictly before ``moment`` (the start of a fire's window)."""
        if self.spec.every is not None:
            period = self.spec.every
            steps = math.ceil((moment - _EPOCH).total_seconds() / period) - 1
            return _EPOCH + dt.timedelta(seconds=steps * period)
        local = moment.astimezone(self.zone)
        found = next(iter(_cronsim()(str(self.spec.cron), local, reverse=True)))
        return _utc(found)

    def between(
        self, start: dt.datetime, end: dt.datetime, limit: int = 100_000
    ) -> list[dt.datetime]:
        """Fires in ``(start, end]``, oldest first (at most ``limit``)."""
        fires: list[dt.datetime] = []
        for fire in self._forward(start):
            if fire > end or len(fires) >= limit:
                break
            fires.append(fire)
        return fires

    def upcoming(self, moment: dt.datetime, count: int) -> list[dt.datetime]:
        """The next ``count`` fires after ``moment``."""
        fires = self._forward(moment)
        return [next(fires) for _ in range(count)]

    def period_at(self, fire: dt.datetime) -> float:
        """Seconds from ``fire`` to the next fire (how late a fire may start and count on time)."""
        return (self.after(fire) - fire).total_seconds()

    def describe(self) -> str:
        """``cron 15 2 * * * (Asia/Shanghai)`` or ``every 15m``."""
        if self.spec.every is not None:
            return f"every {_seconds_text(self.spec.every)}"
        return f"cron {self.spec.cron} ({self.spec.timezone})"

    def _forward(self, moment: dt.datetime) -> Iterator[dt.datetime]:
        if self.spec.every is not None:
            period = self.spec.every
            step = math.floor((moment - _EPOCH).total_seconds() / period) + 1
            while True:
                yield _EPOCH + dt.timedelta(seconds=step * period)
                step += 1
        local = moment.astimezone(self.zone)
        for found in _cronsim()(str(self.spec.cron), local):
            fire = _utc(found)
            if fire > moment:
                yield fire


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def local_text(moment: dt.datetime, zone: str) -> str:
    """``2026-11-01 01:30:00 EDT``: a fire time as a person in ``zone`` reads it."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def utc_text(moment: dt.datetime) -> str:
    """``2026-11-01T05:30:00Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
