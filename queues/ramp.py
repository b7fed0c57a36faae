"""Replay pacing after a recovery: start slow, double every step, never above the ceiling.

A provider that just came back is fragile; a backlog drained at full speed knocks it over
again. Sans-I/O like the core policies: `reserve()` returns how long to wait. Sends within
`slack` seconds of their slot go at once: an event loop cannot sleep for a fraction of a
millisecond, so pacing every send separately would cap the rate far below the ramp's.
"""

from __future__ import annotations

import math


class Ramp:
    __slots__ = ("_ceiling", "_next_free", "_since", "_slack", "_start", "_step")

    def __init__(
        self, start: float, ceiling: float, step: float = 1.0, slack: float = 0.01
    ) -> None:
        if not 0 < start <= ceiling or step <= 0 or slack < 0:
            raise ValueError("a ramp needs 0 < start <= ceiling, a positive step, slack >= 0")
        self._start, self._ceiling, self._step, self._slack = start, ceiling, step, slack
        self._since: float | None = None  # when the current climb began
        self._next_free = float("-inf")

    def rate(self, now: float) -> float:
        """Requests per second allowed now."""
        if self._since is None:
            return self._start
        doublings = min((now - self._since) / self._step, 64.0)
        return min(self._ceiling, self._start * math.pow(2.0, doublings))

    def reserve(self, now: float) -> float:
        """Book the next send; seconds to wait before it."""
        if self._since is None:
            self._since = now
        start = max(now, self._next_free)
        self._next_free = start + 1.0 / self.rate(start)
        wait = start - now
        return wait if wait > self._slack else 0.0

    def restart(self) -> None:
        """The provider failed again: the next drain climbs from the start rate."""
        self._since = None
        self._next_free = float("-inf")
