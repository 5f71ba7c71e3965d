"""Telling someone about a run: a JSON POST to ``notify.webhook`` and/or ``notify.command``.

Both run on a background thread and never fail the scheduler: a notification that can not be
delivered is logged. The command gets the event in its environment (``SYNCX_EVENT``,
``SYNCX_JOB``, ``SYNCX_SCHEDULED``, ``SYNCX_ATTEMPT``, ``SYNCX_STATE``, ``SYNCX_ERROR``,
``SYNCX_LOG``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import urllib.request
from typing import Any

from sync.model import ScheduleNotify

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(spec: ScheduleNotify | None, event: str, payload: dict[str, Any]) -> None:
    """Send ``event`` (failure, timeout, missed, abandoned, success) when the job asks for it."""
    if spec is None or event not in spec.on:
        return
    body = {"event": event, **payload}
    threading.Thread(target=_deliver, args=(spec, body), name="notify", daemon=True).start()


def _deliver(spec: ScheduleNotify, body: dict[str, Any]) -> None:
    if spec.webhook:
        request = urllib.request.Request(
            spec.webhook,
            data=json.dumps(body, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except OSError as exc:
            log.warning("notify: webhook for job %s failed: %s", body.get("job"), exc)
    if spec.command:
        env = {**os.environ}
        env.update({f"SYNCX_{key.upper()}": str(value) for key, value in body.items()})
        try:
            subprocess.run(spec.command, shell=True, env=env, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notify: command for job %s failed: %s", body.get("job"), exc)
