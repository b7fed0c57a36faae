"""When to retry: the backoff schedule, and the budget that stops retries multiplying an outage."""

from __future__ import annotations

import random
import threading

from resilient.policy.window import SlidingWindow
from resilient.settings import RetrySettings


def backoff_delay(
    settings: RetrySettings, retry_number: int, server_delay: float | None, rand: float
) -> float:
    """Seconds to wait before retry `retry_number` (1 = the first retry).

    Exponential with equal jitter: uniformly in [d/2, d], d = min(cap, base * 2**(n-1)), so
    callers that failed together do not come back together, yet never retry at once. A delay
    the server asked for is a floor: we never come back sooner than told.
    """
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2.0 ** min(retry_number - 1, 62))
    delay = ceiling / 2 + rand * ceiling / 2
    return delay if server_delay is None else max(delay, server_delay)


def jittered_backoff(
    settings: RetrySettings, retry_number: int, server_delay: float | None
) -> float:
    return backoff_delay(settings, retry_number, server_delay, random.random())


class RetryBudget:
    """Retries may add at most `ratio` of recent calls, plus `floor` per window (Finagle-style).

    Every call deposits; every retry withdraws. In an outage each call gets its first attempt
    but the provider sees at most (1 + ratio) times the traffic, not `attempts` times.
    """

    __slots__ = ("_floor", "_lock", "_ratio", "_window")

    def __init__(self, settings: RetrySettings) -> None:
        self._ratio = settings.budget_ratio
        self._floor = settings.budget_floor
        self._window = SlidingWindow(settings.budget_window)  # calls + retries; retries as failures
        self._lock = threading.Lock()

    def record_call(self, now: float) -> None:
        with self._lock:
            self._window.add(now, failed=False)

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            events, retries = self._window.counts(now)
            if retries + 1 > self._floor + self._ratio * (events - retries):
                return False
            self._window.add(now, failed=True)
            return True
