"""The bucketed sliding window and the concurrency bulkhead."""

from __future__ import annotations

import threading

import pytest

from resilient.policy.bulkhead import Bulkhead
from resilient.policy.window import SlidingWindow


def test_counts_calls_and_failures() -> None:
    """Adds show up in the totals, failures separately."""
    window = SlidingWindow(10.0)
    window.add(100.0, failed=False)
    window.add(100.5, failed=True)
    window.add(101.0, failed=True)
    assert window.counts(101.0) == (3, 2)


def test_amend_turns_the_latest_success_into_a_failure() -> None:
    """A call recorded healthy that failed later is one failed call, not two calls; with no
    success left in the window, it is counted as a failed call of its own."""
    window = SlidingWindow(10.0, buckets=10)
    window.add(100.0, failed=False)
    window.add(103.0, failed=True)
    window.amend(104.0)  # the success is three buckets back
    assert window.counts(104.0) == (2, 2)
    window.amend(104.0)  # nothing left to amend
    assert window.counts(104.0) == (3, 3)


def test_counts_expire_after_the_span() -> None:
    """An event is counted for at least span - span/buckets seconds and gone after span."""
    window = SlidingWindow(10.0, buckets=10)
    window.add(100.0, failed=True)
    assert window.counts(108.9) == (1, 1)
    assert window.counts(110.0) == (0, 0)


def test_buckets_rotate_one_at_a_time() -> None:
    """As time moves, the oldest bucket leaves while newer ones stay."""
    window = SlidingWindow(4.0, buckets=4)
    for second in range(4):
        window.add(100.0 + second, failed=second % 2 == 1)
    assert window.counts(103.5) == (4, 2)
    assert window.counts(104.0) == (3, 2)  # the bucket of t=100 (a success) left
    assert window.counts(105.0) == (2, 1)
    assert window.counts(106.0) == (1, 1)
    window.add(106.0, failed=False)
    assert window.counts(106.5) == (2, 1)
    assert window.counts(107.0) == (1, 0)


def test_a_long_gap_clears_everything() -> None:
    """After more than the span without events, the window is empty."""
    window = SlidingWindow(3.0, buckets=3)
    for t in (10.0, 11.0, 12.0):
        window.add(t, failed=True)
    assert window.counts(1000.0) == (0, 0)


def test_clock_going_backwards_clears() -> None:
    """A clock that jumps back cannot tell which events are recent: start over."""
    window = SlidingWindow(10.0)
    window.add(100.0, failed=True)
    assert window.counts(50.0) == (0, 0)
    window.add(50.0, failed=False)
    assert window.counts(50.0) == (1, 0)


def test_clear() -> None:
    """clear() empties every bucket."""
    window = SlidingWindow(10.0)
    window.add(1.0, failed=True)
    window.clear()
    assert window.counts(1.0) == (0, 0)


@pytest.mark.parametrize(("span", "buckets"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_rejects_a_degenerate_window(span: float, buckets: int) -> None:
    """A window needs a positive span and at least one bucket."""
    with pytest.raises(ValueError):
        SlidingWindow(span, buckets)


def test_bulkhead_caps_and_releases() -> None:
    """Only `limit` acquisitions succeed until one is released."""
    bulkhead = Bulkhead(2)
    assert bulkhead.try_acquire()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    assert bulkhead.in_flight == 2
    bulkhead.release()
    assert bulkhead.in_flight == 1
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


def test_unbounded_bulkhead() -> None:
    """limit None never refuses, but still counts what is in flight."""
    bulkhead = Bulkhead(None)
    assert all(bulkhead.try_acquire() for _ in range(1000))
    assert bulkhead.in_flight == 1000


def test_bulkhead_cap_holds_across_threads() -> None:
    """Threads racing for slots never get more than the limit between them."""
    bulkhead = Bulkhead(5)
    start = threading.Barrier(20)
    granted: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        start.wait()
        ok = bulkhead.try_acquire()
        with lock:
            granted.append(ok)

    threads = [threading.Thread(target=grab) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 5
    assert bulkhead.in_flight == 5
