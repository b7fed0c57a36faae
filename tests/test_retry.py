"""The retry schedule (jittered exponential backoff) and the retry budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from resilient.policy.retry import RetryBudget, backoff_delay, jittered_backoff
from resilient.settings import RetrySettings

relaxed = settings(deadline=None)  # a loaded machine must not turn timing into failures

bases = st.floats(min_value=0.001, max_value=5.0)
caps = st.floats(min_value=0.001, max_value=120.0)
retry_numbers = st.integers(min_value=1, max_value=80)
unit = st.floats(min_value=0.0, max_value=1.0)


@relaxed
@given(base=bases, cap=caps, n=retry_numbers, rand=unit)
def test_delay_is_within_half_to_full_ceiling(base: float, cap: float, n: int, rand: float) -> None:
    """Every delay lies in [d/2, d], d = min(cap, base * 2**(n-1))."""
    schedule = RetrySettings(backoff_base=base, backoff_cap=cap)
    d = min(cap, base * 2.0 ** (n - 1))
    delay = backoff_delay(schedule, n, None, rand)
    assert d / 2 * (1 - 1e-12) <= delay <= d * (1 + 1e-12)


@relaxed
@given(base=bases, cap=caps, n=retry_numbers)
def test_jittered_delay_is_within_bounds(base: float, cap: float, n: int) -> None:
    """The randomized schedule stays in the same band."""
    schedule = RetrySettings(backoff_base=base, backoff_cap=cap)
    d = min(cap, base * 2.0 ** (n - 1))
    assert d / 2 * (1 - 1e-12) <= jittered_backoff(schedule, n, None) <= d * (1 + 1e-12)


@relaxed
@given(base=bases, cap=caps, n=retry_numbers, rand=unit, hint=st.floats(min_value=0, max_value=600))
def test_never_sooner_than_the_server_asked(
    base: float, cap: float, n: int, rand: float, hint: float
) -> None:
    """A server-given delay is a floor, whatever the schedule says."""
    schedule = RetrySettings(backoff_base=base, backoff_cap=cap)
    assert backoff_delay(schedule, n, hint, rand) >= hint
    assert jittered_backoff(schedule, n, hint) >= hint


@relaxed
@given(base=bases, cap=caps, n=retry_numbers)
def test_ceilings_never_decrease(base: float, cap: float, n: int) -> None:
    """Each retry's ceiling is at least the previous one's (until both sit at the cap)."""
    schedule = RetrySettings(backoff_base=base, backoff_cap=cap)
    assert backoff_delay(schedule, n, None, 1.0) <= backoff_delay(schedule, n + 1, None, 1.0)


def test_schedule_grows_then_caps() -> None:
    """The ceiling doubles per retry from the base and stops at the cap."""
    schedule = RetrySettings(backoff_base=0.1, backoff_cap=0.5)
    ceilings = [backoff_delay(schedule, n, None, 1.0) for n in range(1, 6)]
    assert ceilings == [0.1, 0.2, 0.4, 0.5, 0.5]


@relaxed
@given(
    ratio=st.floats(min_value=0.0, max_value=1.0),
    floor=st.integers(min_value=0, max_value=5),
    ops=st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=8.9)), max_size=120),
)
def test_budget_caps_retries_within_a_window(
    ratio: float, floor: int, ops: list[tuple[bool, float]]
) -> None:
    """Within one window, granted retries never exceed floor + ratio * calls."""
    budget = RetryBudget(RetrySettings(budget_ratio=ratio, budget_floor=floor, budget_window=10.0))
    calls = granted = 0
    for is_call, offset in sorted(ops, key=lambda op: op[1]):  # a monotonic clock
        now = 1000.0 + offset  # every event lands inside one 10 s window
        if is_call:
            budget.record_call(now)
            calls += 1
        elif budget.try_spend(now):
            granted += 1
        assert granted <= floor + ratio * calls


@relaxed
@given(calls=st.integers(min_value=0, max_value=50))
def test_budget_grants_up_to_the_cap(calls: int) -> None:
    """The cap is reachable: with ratio 0.5 and floor 2, exactly 2 + calls // 2 retries pass."""
    budget = RetryBudget(RetrySettings(budget_ratio=0.5, budget_floor=2, budget_window=10.0))
    for _ in range(calls):
        budget.record_call(100.0)
    granted = sum(budget.try_spend(100.0) for _ in range(calls + 10))
    assert granted == 2 + calls // 2


def test_budget_recovers_after_the_window() -> None:
    """Once spent, the budget refills when the window has passed."""
    budget = RetryBudget(RetrySettings(budget_ratio=0.0, budget_floor=3, budget_window=10.0))
    assert [budget.try_spend(50.0) for _ in range(4)] == [True, True, True, False]
    assert not budget.try_spend(55.0)
    assert budget.try_spend(60.0)
