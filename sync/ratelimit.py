"""The job-wide rate limit (``setting.speed.bytes`` / ``speed.record``) as a shared token bucket."""

from __future__ import annotations

import threading
import time

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """Virtual-scheduling token bucket: ``acquire(n)`` returns when ``n`` more units fit the rate.

    Every caller books its units on one shared timeline, so N reader subtasks together stay at the
    rate. A burst of at most ``burst`` seconds' worth is allowed after idleness.
    """

    def __init__(self, rate: float, burst: float = 0.2) -> None:
        self.rate = rate
        self.burst = burst
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, units: float, stopping: threading.Event | None = None) -> None:
        """Block until ``units`` may pass (or the job is stopping)."""
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self.burst)
            self._next = start + units / self.rate
            wait = self._next - now - self.burst
        if wait > 0:
            if stopping is not None:
                stopping.wait(wait)
            else:
                time.sleep(wait)


class RateLimiter:
    """The two limits of ``setting.speed``; 0 switches one off."""

    def __init__(self, bytes_per_second: int, records_per_second: int) -> None:
        self._bytes = TokenBucket(bytes_per_second) if bytes_per_second > 0 else None
        self._records = TokenBucket(records_per_second) if records_per_second > 0 else None

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self._bytes or self._records)

    def batch_rows(self, default: int) -> int:
        """Rows per batch that keep each acquisition a small part of a second's budget."""
        if self._records is None:
            return default
        return max(1, min(default, int(self._records.rate // 20) or 1))

    def acquire(self, records: int, nbytes: int, stopping: threading.Event | None = None) -> None:
        """Wait until a batch of this size may pass."""
        if self._records is not None:
            self._records.acquire(records, stopping)
        if self._bytes is not None:
            self._bytes.acquire(nbytes, stopping)
