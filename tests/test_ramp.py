"""The replay ramp: starts low, doubles per step up to the ceiling, restarts after a failure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queues.ramp import Ramp


def test_rate_doubles_each_step_up_to_the_ceiling() -> None:
    ramp = Ramp(start=10, ceiling=50, step=1.0, slack=0)
    assert ramp.rate(0) == 10
    ramp.reserve(100.0)
    assert ramp.rate(100.0) == pytest.approx(10)
    assert ramp.rate(101.0) == pytest.approx(20)
    assert ramp.rate(102.0) == pytest.approx(40)
    assert ramp.rate(110.0) == 50


def test_restart_climbs_from_the_start_again() -> None:
    ramp = Ramp(start=10, ceiling=1000, step=1.0, slack=0)
    ramp.reserve(0.0)
    assert ramp.rate(5.0) == pytest.approx(320)
    ramp.restart()
    assert ramp.rate(5.0) == 10


@given(
    start=st.floats(min_value=1, max_value=100),
    sends=st.integers(min_value=2, max_value=200),
    slack=st.sampled_from([0.0, 0.01]),
)
def test_sends_never_outrun_the_ramp(start: float, sends: int, slack: float) -> None:
    """Sent back to back, the n-th send starts no earlier than its slot at the ramp's rate
    (less the slack), so the average rate over the drain never exceeds the ramp."""
    ramp = Ramp(start=start, ceiling=start, step=1.0, slack=slack)
    now = 0.0
    for n in range(sends):
        now += ramp.reserve(now)
        assert now >= n / start - slack - 1e-9


def test_small_waits_within_the_slack_go_at_once() -> None:
    ramp = Ramp(start=1000, ceiling=1000, slack=0.01)
    waits = [ramp.reserve(0.0) for _ in range(12)]
    assert waits[:10] == [0.0] * 10  # ten slots of 1 ms fit in 10 ms of slack
    assert waits[-1] > 0.0  # past the slack the caller waits


def test_invalid_ramps_are_refused() -> None:
    with pytest.raises(ValueError, match="ramp"):
        Ramp(start=0, ceiling=10)
    with pytest.raises(ValueError, match="ramp"):
        Ramp(start=20, ceiling=10)
