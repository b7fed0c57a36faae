"""The reservation-based rate limiter: spacing, max_wait, pauses, the unlimited fast path."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient.policy.ratelimit import RateLimiter
from resilient.units import Rate

relaxed = settings(deadline=None)  # a loaded machine must not turn timing into failures

EPSILON = 1e-9  # float rounding of now + wait; far below any real provider's resolution


@relaxed
@given(
    count=st.integers(min_value=1, max_value=20),
    period=st.floats(min_value=0.01, max_value=100.0),
    arrivals=st.lists(st.floats(min_value=0.0, max_value=200.0), min_size=1, max_size=80),
)
def test_never_more_than_count_in_any_period(
    count: int, period: float, arrivals: list[float]
) -> None:
    """No half-open window of length `period` ever holds more than `count` admissions."""
    limiter = RateLimiter(Rate(count, period))
    admitted = []
    for now in sorted(arrivals):
        wait = limiter.reserve(now, max_wait=float("inf"))
        assert wait is not None
        assert wait >= 0.0
        admitted.append(now + wait)
    admitted.sort()
    for i, start in enumerate(admitted):
        inside = bisect.bisect_left(admitted, start + period - EPSILON) - i
        assert inside <= count


@relaxed
@given(
    count=st.integers(min_value=1, max_value=10),
    max_wait=st.floats(min_value=0.0, max_value=5.0),
    arrivals=st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=40),
)
def test_reservation_beyond_max_wait_books_nothing(
    count: int, max_wait: float, arrivals: list[float]
) -> None:
    """Refusals (None) cost no capacity: the next free slot is what accepted calls left."""
    limiter = RateLimiter(Rate(count, 1.0))
    next_free = float("-inf")
    for now in sorted(arrivals):
        wait = limiter.reserve(now, max_wait)
        expected_start = max(now, next_free)
        if expected_start - now > max_wait:
            assert wait is None
        else:
            assert wait == pytest.approx(expected_start - now)
            next_free = expected_start + 1.0 / count


def test_slots_are_spaced_by_period_over_count() -> None:
    """At 2/s, callers arriving together are told to wait 0, 0.5, 1.0 s."""
    limiter = RateLimiter(Rate(2, 1.0))
    assert [limiter.reserve(10.0, 5.0) for _ in range(3)] == [0.0, 0.5, 1.0]


def test_refused_reservation_does_not_book() -> None:
    """A caller refused for its max_wait leaves the slot to the next caller."""
    limiter = RateLimiter(Rate(1, 10.0))
    assert limiter.reserve(0.0, 0.0) == 0.0
    assert limiter.reserve(0.0, 5.0) is None
    assert limiter.reserve(0.0, 20.0) == 10.0
    assert limiter.headroom(0.0) == 20.0


def test_pause_delays_every_caller() -> None:
    """pause_until (a 429's Retry-After) holds every caller, limited or not."""
    for rate in (Rate(100, 1.0), None):
        limiter = RateLimiter(rate)
        limiter.pause_until(5.0)
        assert limiter.paused_for(2.0) == 3.0
        assert limiter.reserve(2.0, 10.0) == 3.0
        assert limiter.reserve(3.0, 1.0) is None
        assert limiter.reserve(6.0, 0.0) is not None


def test_pause_never_shortens() -> None:
    """A shorter pause requested later keeps the longer one in force."""
    limiter = RateLimiter(None)
    limiter.pause_until(10.0)
    limiter.pause_until(4.0)
    assert limiter.paused_for(0.0) == 10.0


class _NoLock:
    def __enter__(self) -> None:
        raise AssertionError("the unlimited fast path took the lock")

    def __exit__(self, *exc: object) -> None:
        pass


def test_unlimited_limiter_takes_no_lock() -> None:
    """Without a rate or a pause, reserve() returns 0 at once, without locking."""
    limiter = RateLimiter(None)
    limiter._lock = _NoLock()  # type: ignore[assignment]
    assert all(limiter.reserve(float(t), 0.0) == 0.0 for t in range(1000))
    assert limiter.headroom(0.0) == 0.0
