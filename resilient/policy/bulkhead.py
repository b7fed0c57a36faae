"""A cap on concurrent in-flight calls per provider, so one slow provider cannot take every
worker thread or connection. Full means "try the next provider", never "queue and wait"."""

from __future__ import annotations

import threading


class Bulkhead:
    __slots__ = ("_in_flight", "_limit", "_lock")

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        with self._lock:
            if self._limit is not None and self._in_flight >= self._limit:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
