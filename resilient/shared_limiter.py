"""A rate limit shared by every process through Redis: GCRA in one Lua script, leased in batches.

Each lease books `batch` consecutive slots on Redis's clock; the process then hands them out
locally with no further round trip. A slot is used at its instant or up to LATE of the period
after it, never earlier and never later (past that it is skipped), and slots are spaced over
the period plus that allowance: the calls of any window of one period used slots from a span of
period + LATE, which holds at most `count` of them, across all processes (a lease nobody uses is
capacity lost, never capacity exceeded). The allowance lets a caller sparser than the slots take
many calls from one lease, instead of one lease per call. Batches hold about
0.1 s of the rate, which keeps Redis round trips far below one per call. While Redis is
unreachable, a local limiter at the full rate takes over, and leasing resumes when it answers.

Each process turns Redis's instants into its own clock with a small, varying lag (at most one
round trip), so slots are spaced over the period plus a guard of 1 % (at least 5 ms): blocks
shifted by different lags still never put more than `count` in one period.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from resilient.policy.ratelimit import RateLimiter
from resilient.units import Rate

_LEASE = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = math.max(tat, now + tonumber(ARGV[4]))
-- instants round up to the microsecond: a rounded slot is never earlier than its true instant
local function up(x) return string.format('%.6f', math.ceil(x * 1000000) / 1000000) end
redis.call('SET', KEYS[1], up(start + tonumber(ARGV[1]) * tonumber(ARGV[2])), 'PX', ARGV[3])
return up(start - now)
"""

LEASE_SECONDS = 0.1  # how much of the rate one lease books
MAX_BATCH = 1000
LATE = 0.05  # share of the period a slot stays usable after its instant (capacity given for it)
RETRY_REDIS = 1.0  # seconds on the local limiter before leasing is tried again
GUARD, MIN_GUARD = 0.01, 0.005  # share of the period (and floor, seconds) for clock transfer


class SharedRateLimiter:
    """Drop-in for RateLimiter (reserve, pause_until, paused_for, headroom, rate)."""

    def __init__(
        self,
        client: Any,
        name: str,
        rate: Rate,
        *,
        namespace: str = "resilient:limit",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self.rate = rate
        self._lease = client.register_script(_LEASE)
        self._clock = clock  # the caller's clock: read after a lease returns
        self._key = f"{namespace}:{name}"
        self._late = LATE * rate.period
        guard = max(MIN_GUARD, GUARD * rate.period)
        self._interval = (rate.period + self._late + guard) / rate.count
        self._batch = max(1, min(MAX_BATCH, int(rate.per_second * LEASE_SECONDS)))
        self._ttl_ms = int(max(rate.period, self._batch * self._interval) * 2000) + 1000
        self._errors = (redis.RedisError, OSError)
        self._local = RateLimiter(rate)  # also holds the pause (a 429's Retry-After)
        self._lock = threading.Lock()
        self._next = 0.0  # instant of the next leased slot, on this process's clock
        self._left = 0  # leased slots not yet handed out
        self._redis_back_at = float("-inf")
        self.round_trips = 0

    def reserve(self, now: float, max_wait: float) -> float | None:
        with self._lock:
            if now < self._redis_back_at:
                return self._local.reserve(now, max_wait)
            paused = self._local.paused_for(now)
            ready = now + paused  # the earliest a call may leave
            self._skip_before(ready - self._late)
            if not self._left:
                try:
                    offset = float(
                        self._lease(
                            keys=[self._key],
                            args=[self._batch, self._interval, self._ttl_ms, paused],
                        )
                    )
                except self._errors:
                    self._redis_back_at = now + RETRY_REDIS
                    return self._local.reserve(now, max_wait)
                self.round_trips += 1
                # Read after the reply: the block lands at most one round trip late, never early;
                # and the wait runs from the reply, not from before the lease's round trip.
                replied = self._clock()
                self._next, self._left = replied + offset, self._batch
                max_wait -= replied - now
                now = replied
            wait = max(self._next, ready) - now
            if wait > max_wait:
                return None
            self._next += self._interval
            self._left -= 1
            return wait

    def _skip_before(self, earliest: float) -> None:
        """Drop leased slots whose instant is before `earliest`: too late to use."""
        if self._left and self._next < earliest:
            skipped = min(self._left, math.ceil((earliest - self._next) / self._interval))
            self._left -= skipped
            self._next += skipped * self._interval

    def pause_until(self, until: float) -> None:
        self._local.pause_until(until)

    def paused_for(self, now: float) -> float:
        return self._local.paused_for(now)

    def headroom(self, now: float) -> float:
        with self._lock:
            return max(0.0, (self._next - now) if self._left else 0.0, self._local.paused_for(now))
