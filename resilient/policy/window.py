"""A sliding time window of (calls, failures) counts, in buckets: O(1) to add, O(1) to read."""

from __future__ import annotations


class SlidingWindow:
    """Counts over the last `span` seconds, kept in `buckets` slices that expire as time moves.

    The window covers between span - span/buckets and span seconds: close enough for rates,
    and it never scans old events. Not thread-safe: owners hold their own lock.
    """

    __slots__ = ("_calls", "_failures", "_index", "_slots", "_sum_calls", "_sum_failures", "_width")

    def __init__(self, span: float, buckets: int = 10) -> None:
        if span <= 0 or buckets < 1:
            raise ValueError("a window needs a positive span and at least one bucket")
        self._width = span / buckets
        self._slots = buckets
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        self._sum_calls = 0
        self._sum_failures = 0
        self._index = 0

    def add(self, now: float, failed: bool) -> None:
        slot = self._advance(now)
        self._calls[slot] += 1
        self._sum_calls += 1
        if failed:
            self._failures[slot] += 1
            self._sum_failures += 1

    def amend(self, now: float) -> None:
        """Turn the latest success still in the window into a failure: a call that looked
        healthy when recorded failed later (a stream cut after its start). With no success
        left to amend, count it as one more failed call."""
        current = self._advance(now)
        for back in range(self._slots):
            slot = (current - back) % self._slots
            if self._calls[slot] > self._failures[slot]:
                self._failures[slot] += 1
                self._sum_failures += 1
                return
        self.add(now, failed=True)

    def counts(self, now: float) -> tuple[int, int]:
        """(calls, failures) in the window ending at `now`."""
        self._advance(now)
        return self._sum_calls, self._sum_failures

    def clear(self) -> None:
        self._calls = [0] * self._slots
        self._failures = [0] * self._slots
        self._sum_calls = self._sum_failures = 0

    def _advance(self, now: float) -> int:
        index = int(now / self._width)
        steps = index - self._index
        if steps:
            if steps >= self._slots or steps < 0:
                self.clear()
            else:
                for i in range(self._index + 1, index + 1):
                    slot = i % self._slots
                    self._sum_calls -= self._calls[slot]
                    self._sum_failures -= self._failures[slot]
                    self._calls[slot] = self._failures[slot] = 0
            self._index = index
        return index % self._slots
