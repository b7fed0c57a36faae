"""Attempt deadlines on an event loop, for a fraction of what asyncio.timeout costs.

asyncio.timeout creates a context object and schedules, then cancels, a loop timer for every
attempt: about 7 µs here, once most of the pipeline's own async cost. Attempts nearly always
end long before their deadline, so one watch per loop keeps every in-flight attempt in a heap
and arms a single loop timer for the earliest deadline; an attempt that ends only marks its
entry. At expiry the attempt's task is cancelled exactly as asyncio.timeout cancels it, and
`end()` tells the executor to turn that cancellation into TimeoutError, unless someone else
cancelled the task too.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import weakref
from typing import Any

from resilient.per_loop import PerLoop

COMPACT_AT = 256  # ended entries tolerated in the heap before it is rebuilt without them


class Watched:
    """One attempt under watch."""

    __slots__ = ("cancelling", "expired", "task", "timed_out")

    def __init__(self, task: asyncio.Task[Any], cancelling: int) -> None:
        self.task: asyncio.Task[Any] | None = task  # None once the attempt ended
        self.cancelling = cancelling  # the task's cancel requests before the attempt began
        self.expired = False  # the deadline came (and cancelled the task): out of the heap
        self.timed_out = False  # ...and that cancel request was the only one


if sys.version_info >= (3, 11):

    def _cancel_requests(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _withdraw_cancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # pragma: no cover - Python 3.10 counts no cancel requests: expiry is taken as the cause

    def _cancel_requests(task: asyncio.Task[Any]) -> int:
        return 0

    def _withdraw_cancel(task: asyncio.Task[Any]) -> int:
        return 0


class DeadlineWatch:
    """The in-flight attempts of one event loop, and one timer for the earliest deadline."""

    __slots__ = ("_armed_at", "_ended", "_heap", "_loop", "_order", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not the loop itself: it keys the watch, weakly
        self._heap: list[tuple[float, int, Watched]] = []
        self._order = itertools.count()  # ties in time never compare entries
        # weakly, as the loop: a timer handle refers to its loop
        self._timer: weakref.ref[asyncio.TimerHandle] | None = None
        self._armed_at = float("inf")
        self._ended = 0  # entries still in the heap whose attempt ended

    def __len__(self) -> int:
        return len(self._heap)

    def start(self, seconds: float, task: asyncio.Task[Any]) -> Watched:
        """Watch `task`'s attempt: it is cancelled if still running `seconds` from now."""
        loop = self._loop()
        assert loop is not None  # a running task's loop is alive
        entry = Watched(task, _cancel_requests(task))
        when = loop.time() + seconds
        heapq.heappush(self._heap, (when, next(self._order), entry))
        if when < self._armed_at:
            timer = self._timer() if self._timer is not None else None
            if timer is not None:
                timer.cancel()
            self._armed_at = when
            self._timer = weakref.ref(loop.call_at(when, self._expire))
        return entry

    def end(self, entry: Watched) -> bool:
        """The attempt ended, any way; call it on every exit (again is harmless). True when
        its deadline alone cancelled it: the executor reports a timeout. The watch's cancel
        request is withdrawn from the task, so a cancellation from outside still propagates."""
        task = entry.task
        if task is None:
            return entry.timed_out
        entry.task = None
        if entry.expired:
            entry.timed_out = _withdraw_cancel(task) <= entry.cancelling
            return entry.timed_out
        self._ended += 1
        if self._ended > COMPACT_AT and self._ended * 2 > len(self._heap):
            self._heap = [item for item in self._heap if item[2].task is not None]
            heapq.heapify(self._heap)
            self._ended = 0
        return False

    def _expire(self) -> None:
        self._timer = None
        self._armed_at = float("inf")
        loop = self._loop()
        if loop is None:
            return
        heap, now = self._heap, loop.time()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.task is None:
                self._ended -= 1
            else:
                entry.expired = True
                entry.task.cancel()
        if heap:
            self._armed_at = heap[0][0]
            self._timer = weakref.ref(loop.call_at(self._armed_at, self._expire))


watches: PerLoop[DeadlineWatch] = PerLoop(DeadlineWatch)
"""Every event loop's watch."""
