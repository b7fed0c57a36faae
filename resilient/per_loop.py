"""One object per event loop (an async client, a deadline watch), found in two reads.

Such objects belong to the loop they run on. A WeakKeyDictionary lookup builds a weak reference
on every call (about half a microsecond here, on every request); most processes run one loop,
so the last loop asked about is kept at hand and checked first.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """`get(loop)` makes the loop's object on first use; it goes when the loop goes. The made
    object must not hold its loop strongly, or neither is ever freed."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T]
        self._by_loop = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None
        self._lock = threading.Lock()  # loops in other threads may ask at the same time

    def get(self, loop: asyncio.AbstractEventLoop) -> T:
        last = self._last  # read once: another thread's loop may replace it meanwhile
        if last is not None and last[0]() is loop:
            return last[1]
        with self._lock:
            value = self._by_loop.get(loop)
            if value is None:
                value = self._by_loop[loop] = self._make(loop)
            self._last = (weakref.ref(loop), value)
        return value

    def pop(self, loop: asyncio.AbstractEventLoop) -> T | None:
        """Forget the loop's object (the caller closes it); the next `get` makes a new one."""
        with self._lock:
            self._last = None
            return self._by_loop.pop(loop, None)
