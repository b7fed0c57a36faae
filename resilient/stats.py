"""What `resilient status`, the health endpoint and metrics show of a provider's recent calls:
latency percentiles over the last attempts, and the slow-call rate over the breaker's window."""

from __future__ import annotations

import threading
from collections import deque

from resilient.policy.window import SlidingWindow

LATENCY_SAMPLES = 1024  # recent attempts kept for percentiles: bounded memory, O(1) per attempt


class AttemptStats:
    __slots__ = ("_latencies", "_lock", "_slow")

    def __init__(self, window: float) -> None:
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._slow = SlidingWindow(window)
        self._lock = threading.Lock()

    def observe(self, latency: float, slow: bool, now: float) -> None:
        self._latencies.append(latency)  # deque.append is atomic: no lock on the hot path
        with self._lock:
            self._slow.add(now, failed=slow)

    def snapshot(self, now: float) -> dict[str, float | int | None]:
        ordered = sorted(self._latencies)
        with self._lock:
            calls, slow = self._slow.counts(now)
        return {
            "latency_p50": _percentile(ordered, 0.50),
            "latency_p95": _percentile(ordered, 0.95),
            "slow_call_rate": slow / calls if calls else 0.0,
            "samples": len(ordered),
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
