"""Breaker state shared through Redis, read at most once per `refresh` seconds.

A pybreaker storage: the state and the instant it opened live in Redis, so one process seeing a
provider fail protects every process; each process still counts its own window. The hot path
reads a local copy refreshed in the background of calls (at most one Redis GET per `refresh`
per provider); writes go through at once. If Redis is unreachable, the local copy serves and
the next write or refresh reconciles.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pybreaker

REFRESH = 0.5  # seconds between reads of the shared state: "within a second" with room to spare


class SharedBreakerStorage(pybreaker.CircuitBreakerStorage):
    def __init__(
        self,
        client: Any,
        name: str,
        *,
        namespace: str = "resilient:breaker",
        refresh: float = REFRESH,
        clock: Any = time.monotonic,
    ) -> None:
        import redis

        super().__init__(name)
        self._redis = client
        self._key = f"{namespace}:{name}"
        self._refresh = refresh
        self._clock = clock
        self._errors = (redis.RedisError, OSError)
        self._lock = threading.Lock()
        self._state = pybreaker.STATE_CLOSED
        self._opened_at: float | None = None
        self._read_at = float("-inf")
        self._failures = 0
        self._successes = 0

    def _sync(self) -> None:
        """Take the shared state if the local copy is older than `refresh`."""
        now = self._clock()
        if now - self._read_at < self._refresh:
            return
        with self._lock:
            if now - self._read_at < self._refresh:
                return
            self._read_at = now
            try:
                state, opened_at = self._redis.hmget(self._key, "state", "opened_at")
            except self._errors:
                return  # Redis away: keep serving on the local copy
            if state is not None:
                self._state = state.decode()
                self._opened_at = float(opened_at) if opened_at else None

    def _write(self, **fields: str) -> None:
        with contextlib.suppress(*self._errors):  # kept locally; shared by the next write
            self._redis.hset(self._key, mapping=fields)

    @property
    def state(self) -> str:
        self._sync()
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state
        fields = {"state": state}
        if self._opened_at is not None:
            fields["opened_at"] = repr(self._opened_at)
        self._write(**fields)

    @property
    def opened_at(self) -> datetime | None:
        self._sync()
        if self._opened_at is None:
            return None
        return datetime.fromtimestamp(self._opened_at, timezone.utc)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_at = value.timestamp()

    # Consecutive-failure counters are pybreaker's own rule, which we do not use: kept local.
    def increment_counter(self) -> None:
        self._failures += 1

    def reset_counter(self) -> None:
        self._failures = 0

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes
