"""Per-provider rate limiting: a reservation-based GCRA that tells callers how long to wait.

One limiter serves every caller of a provider: sync threads and any number of event loops. It
never sleeps itself (sans-I/O): `reserve()` books the earliest free slot and returns the wait,
and the executor sleeps. That is why it is not aiolimiter: an aiolimiter is bound to one event
loop, so a gateway used from threads and a loop would get one budget each and together exceed
the provider's limit. Slots are spaced `period / count` apart, so no half-open window of length
`period` ever holds more than `count` admissions.
"""

from __future__ import annotations

import threading

from resilient.units import Rate


class RateLimiter:
    """Admissions at most `rate`; `pause_until()` stops every caller (a 429's Retry-After)."""

    __slots__ = ("_interval", "_lock", "_next_free", "_paused_until", "rate")

    def __init__(self, rate: Rate | None) -> None:
        self.rate = rate
        self._interval = rate.period / rate.count if rate else 0.0
        self._next_free = float("-inf")  # earliest instant the next slot may start
        self._paused_until = float("-inf")
        self._lock = threading.Lock()

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Book a slot: the seconds to wait before sending, or None if that exceeds `max_wait`.

        A None books nothing, so a caller that gives up costs the provider no capacity.
        """
        if self._interval == 0.0 and self._paused_until <= now:
            return 0.0  # unlimited and not paused: the hot path takes no lock
        with self._lock:
            start = max(now, self._next_free, self._paused_until)
            wait = start - now
            if wait > max_wait:
                return None
            if self._interval:
                self._next_free = start + self._interval
            return wait

    def pause_until(self, until: float) -> None:
        """Hold every caller until `until` (the provider said so, e.g. a 429 with Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def paused_for(self, now: float) -> float:
        return max(0.0, self._paused_until - now)

    def headroom(self, now: float) -> float:
        """Seconds until a new caller could start (0: one could start now)."""
        return max(0.0, self._next_free - now, self._paused_until - now)
