"""Named crash and failure points, for the kill and restart tests.

``SYNCX_CRASH_AT=checkpoint-stored@2`` makes the process SIGKILL itself the second time it passes
the ``checkpoint-stored`` point (after the checkpoint file is durable, before any writer commits).
Random-time kills cannot reliably land between two such steps; these can.
``SYNCX_FAIL_AT=writer-write@5`` raises a retriable error (as a lost connection would) the fifth
time a writer subtask writes a batch, once, so that ``setting.restart`` can be seen working;
``writer-acked`` fails a writer right after it acknowledged a checkpoint, before the coordinator
stored it.
Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

from sync.errors import RetriableError

__all__ = ["CRASH_POINTS", "FAIL_POINTS", "crash_point", "fail_point"]

CRASH_POINTS = (
    "barrier-sent",
    "writer-prepared",
    "checkpoint-stored",
    "writer-committed",
    "final-committed",
)
FAIL_POINTS = ("writer-write", "writer-acked", "reader-batch")


def _parse(spec: str, known: tuple[str, ...], variable: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("@")
        if name not in known:
            msg = f"{variable}: unknown point '{name}'; known: {', '.join(known)}"
            raise ValueError(msg)
        points[name] = int(count or 1)
    return points


_ARMED = _parse(os.environ.get("SYNCX_CRASH_AT", ""), CRASH_POINTS, "SYNCX_CRASH_AT")
_FAILING = _parse(os.environ.get("SYNCX_FAIL_AT", ""), FAIL_POINTS, "SYNCX_FAIL_AT")
_HITS: Counter[str] = Counter()
_LOCK = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process when ``name`` is armed and reached its count."""
    if not _ARMED or name not in _ARMED:
        return
    with _LOCK:
        _HITS[name] += 1
        if _HITS[name] >= _ARMED[name]:
            os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str) -> None:
    """Raise a :class:`RetriableError` the one time ``name`` reaches its armed count."""
    if not _FAILING or name not in _FAILING:
        return
    with _LOCK:
        _HITS[name] += 1
        hit = _HITS[name] == _FAILING[name]
    if hit:
        msg = f"injected failure at {name} (SYNCX_FAIL_AT)"
        raise RetriableError(msg)
