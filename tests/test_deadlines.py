"""The attempt deadline watch: one loop timer for every in-flight attempt (resilient/deadlines.py),
driven through the async executor as the gateway drives it."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref
from typing import Any

import pytest

from resilient.deadlines import COMPACT_AT, watches
from resilient.executors import run_async
from resilient.pipeline import Plan, Send


class Waits:
    """An operation whose attempt sleeps `seconds` and answers "done"."""

    failover_when_ambiguous = False
    credential = None

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def idempotent_on(self, provider: Any) -> bool:
        return True

    def send(self, provider: Any, timeout: float) -> Any:
        raise NotImplementedError

    async def asend(self, provider: Any, timeout: float) -> Any:
        await asyncio.sleep(self.seconds)
        return "done"


def one_attempt(timeout: float) -> Plan:
    """A plan of one attempt that returns what the attempt came to."""
    value = yield Send(provider=None, timeout=timeout)  # type: ignore[arg-type]
    return value


async def attempt(seconds: float, timeout: float) -> object:
    return await run_async(one_attempt(timeout), Waits(seconds))


async def test_an_attempt_past_its_timeout_comes_back_as_a_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    value = await attempt(30.0, 0.05)
    assert isinstance(value, TimeoutError)
    assert 0.04 <= loop.time() - started < 5.0
    await asyncio.sleep(0.01)  # the watch left no cancel request behind on this task


async def test_an_attempt_within_its_timeout_returns_its_value() -> None:
    assert await attempt(0.0, 5.0) == "done"


async def test_a_short_deadline_after_a_long_one_fires_on_time() -> None:
    """The timer is armed for the earliest deadline, even when it was watched last."""
    long_one = asyncio.create_task(attempt(0.3, 60.0))
    await asyncio.sleep(0)
    short = await attempt(30.0, 0.05)
    assert isinstance(short, TimeoutError)
    assert not long_one.done()  # the long attempt was not cut with it
    assert await long_one == "done"


async def test_attempts_expire_in_deadline_order_whatever_their_start_order() -> None:
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}

    async def timed(name: str, timeout: float) -> None:
        await attempt(30.0, timeout)
        ended[name] = loop.time()

    await asyncio.gather(timed("c", 0.15), timed("a", 0.05), timed("b", 0.1))
    assert sorted(ended, key=ended.__getitem__) == ["a", "b", "c"]


async def test_cancellation_from_outside_is_not_turned_into_a_timeout() -> None:
    task = asyncio.create_task(attempt(30.0, 60.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 counts no cancel requests")
async def test_cancelled_from_outside_as_the_deadline_comes_stays_cancelled() -> None:
    """Both at once: the outside cancellation wins, as with asyncio.timeout."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(attempt(30.0, 0.05))
    await asyncio.sleep(0)  # the attempt is under watch
    loop.call_at(loop.time() + 0.06, task.cancel)  # due just after the deadline...
    time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop: both come in one iteration, deadline first
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_attempts_that_end_early_do_not_pile_up_in_the_watch() -> None:
    watch = watches.get(asyncio.get_running_loop())
    for _ in range(COMPACT_AT * 8):
        assert await attempt(0.0, 60.0) == "done"
    assert len(watch) <= COMPACT_AT * 2 + 1


def test_a_watch_does_not_keep_its_loop_alive() -> None:
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(attempt(0.0, 60.0)) == "done"
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


def test_each_loop_has_its_own_watch() -> None:
    async def current() -> object:
        return watches.get(asyncio.get_running_loop())

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        a = first.run_until_complete(current())
        b = second.run_until_complete(current())
        assert a is not b
        assert first.run_until_complete(current()) is a
    finally:
        first.close()
        second.close()
