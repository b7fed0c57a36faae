"""The circuit breaker: ratio over a window, half-open probes, growing open periods, listeners."""

from __future__ import annotations

import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient.policy.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Permit
from resilient.runtime import _BreakerEvents
from resilient.settings import BreakerSettings
from resilient.telemetry import BreakerChanged, Event, EventBus

relaxed = settings(deadline=None)  # a loaded machine must not turn timing into failures


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, **overrides: object) -> Breaker:
    settings = {"min_calls": 4, "failure_ratio": 0.5, "window": 30.0, "open_for": 10.0}
    settings.update(overrides)
    return Breaker("p", BreakerSettings(**settings), clock=clock or FakeClock())  # type: ignore[arg-type]


def feed(breaker: Breaker, outcomes: list[bool | None], now: float = 100.0) -> None:
    """Admit and record one call per outcome (True healthy, False failed, None fatal)."""
    for healthy in outcomes:
        permit = breaker.admit()
        assert permit is not None
        breaker.record(permit, healthy, now)


def trip(breaker: Breaker) -> None:
    feed(breaker, [False] * 4)
    assert breaker.state == OPEN


def test_does_not_open_below_min_calls() -> None:
    """Three failures out of three stay closed when min_calls is 4."""
    breaker = make()
    feed(breaker, [False] * 3)
    assert breaker.state == CLOSED
    assert breaker.admit() is not None


def test_opens_at_the_failure_ratio() -> None:
    """Two failures in four calls reach a 0.5 ratio and open the breaker."""
    breaker = make()
    feed(breaker, [True, True, False])
    assert breaker.state == CLOSED
    feed(breaker, [False])
    assert breaker.state == OPEN
    assert breaker.admit() is None


def test_stays_closed_below_the_ratio() -> None:
    """One failure in five calls is below 0.5: still closed."""
    breaker = make()
    feed(breaker, [True, True, True, True, False])
    assert breaker.state == CLOSED


def test_fatal_outcomes_are_not_counted() -> None:
    """Calls whose outcome says nothing about the provider (health None) never trip it."""
    breaker = make()
    feed(breaker, [None] * 10 + [False] * 2)
    assert breaker.state == CLOSED
    assert breaker.failure_rate(100.0) == (2, 1.0)


def test_old_failures_leave_the_window() -> None:
    """Failures older than the window no longer count toward the ratio."""
    breaker = make()
    feed(breaker, [False] * 3, now=100.0)
    feed(breaker, [False], now=200.0)
    assert breaker.state == CLOSED


def test_half_open_after_open_for() -> None:
    """An open breaker reads half-open once open_for has passed, and admits a probe."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 9.9
    assert breaker.state == OPEN
    assert breaker.admit() is None
    clock.now += 0.2
    assert breaker.state == HALF_OPEN
    permit = breaker.admit()
    assert permit is not None
    assert permit[0] is Permit.PROBE


def test_half_open_admits_only_the_probes() -> None:
    """With half_open_probes=2, a third concurrent caller is refused."""
    clock = FakeClock()
    breaker = make(clock, half_open_probes=2)
    trip(breaker)
    clock.now += 11
    assert breaker.admit() is not None
    assert breaker.admit() is not None
    assert breaker.admit() is None


def test_probe_successes_close() -> None:
    """half_open_probes successful probes close the breaker; fewer do not."""
    clock = FakeClock()
    breaker = make(clock, half_open_probes=2)
    trip(breaker)
    clock.now += 11
    first, second = breaker.admit(), breaker.admit()
    assert first is not None
    assert second is not None
    breaker.record(first, True, 0.0)
    assert breaker.state == HALF_OPEN
    breaker.record(second, True, 0.0)
    assert breaker.state == CLOSED
    permit = breaker.admit()
    assert permit is not None
    assert permit[0] is Permit.CALL


def test_fatal_probe_frees_its_slot() -> None:
    """A probe whose outcome says nothing neither closes nor reopens, and frees its slot."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 11
    probe = breaker.admit()
    assert probe is not None
    assert breaker.admit() is None
    breaker.record(probe, None, 0.0)
    assert breaker.state == HALF_OPEN
    assert breaker.admit() is not None


def test_probe_failure_reopens_for_longer_up_to_the_max() -> None:
    """Each failed probe reopens for open_for * growth**k, capped at open_for_max."""
    clock = FakeClock()
    breaker = make(clock, open_for=10.0, open_growth=2.0, open_for_max=25.0)
    trip(breaker)
    periods = [breaker.open_for]
    for _ in range(3):
        clock.now += periods[-1] + 0.1
        probe = breaker.admit()
        assert probe is not None
        breaker.record(probe, False, 0.0)
        assert breaker.state == OPEN
        periods.append(breaker.open_for)
    assert periods == [10.0, 20.0, 25.0, 25.0]
    clock.now += 24.0
    assert breaker.admit() is None  # the longer period holds


def test_close_resets_the_growth() -> None:
    """After a close, the next trip opens for the base period again."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 10.1
    probe = breaker.admit()
    assert probe is not None
    breaker.record(probe, False, 0.0)
    assert breaker.open_for == 20.0
    clock.now += 20.1
    probe = breaker.admit()
    assert probe is not None
    breaker.record(probe, True, 0.0)
    assert breaker.state == CLOSED
    trip(breaker)
    assert breaker.open_for == 10.0


def test_release_returns_a_probe_permit() -> None:
    """A probe that never ran gives its slot back for the next caller."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 11
    probe = breaker.admit()
    assert probe is not None
    assert breaker.admit() is None
    breaker.release(probe)
    assert breaker.admit() is not None


def test_records_from_before_a_transition_are_ignored() -> None:
    """Calls admitted before a trip that end after it do not count in the new state."""
    clock = FakeClock()
    breaker = make(clock)
    stale = [breaker.admit() for _ in range(4)]
    trip(breaker)
    clock.now += 11
    probe = breaker.admit()
    assert probe is not None
    breaker.record(probe, True, 100.0)
    assert breaker.state == CLOSED
    for permit in stale:
        assert permit is not None
        breaker.record(permit, False, 100.0)  # would reach min_calls at ratio 1.0
    breaker.record(probe, False, 100.0)  # a probe of the old half-open period
    assert breaker.state == CLOSED
    assert breaker.failure_rate(100.0) == (0, 0.0)


def test_stale_probe_release_does_not_free_a_new_slot() -> None:
    """Releasing a probe of an earlier half-open period leaves the current probe count alone."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 11
    old = breaker.admit()
    assert old is not None
    breaker.force(OPEN)
    clock.now += 30
    current = breaker.admit()
    assert current is not None
    breaker.release(old)
    assert breaker.admit() is None


def test_a_failure_after_a_healthy_record_counts_toward_the_ratio() -> None:
    """Streams that each start well (a success) and are then cut (record_failure): each cut
    turns its start into a failure, so half of four calls failing opens the breaker, which the
    successes alone never would, and no call is counted twice."""
    breaker = make()
    feed(breaker, [True, True, True])
    breaker.record_failure(100.0)
    assert breaker.state == CLOSED
    assert breaker.failure_rate(100.0) == (3, pytest.approx(1 / 3))
    feed(breaker, [True])
    breaker.record_failure(100.0)  # 2 of 4 failed
    assert breaker.state == OPEN
    assert breaker.admit() is None


def test_record_failure_counts_only_while_closed() -> None:
    """Open, half-open or held, a late failure changes nothing: no longer open period, no
    probe slot taken, no count behind a held breaker."""
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    breaker.record_failure(100.0)
    assert breaker.open_for == 10.0  # not tripped again
    clock.now += 11
    breaker.record_failure(100.0)
    assert breaker.state == HALF_OPEN
    probe = breaker.admit()
    assert probe is not None and probe[0] is Permit.PROBE
    breaker.force(CLOSED)
    breaker.hold(CLOSED)
    for _ in range(5):
        breaker.record_failure(100.0)
    breaker.hold(None)
    assert breaker.state == CLOSED
    assert breaker.failure_rate(100.0) == (0, 0.0)


def test_force_open_and_closed() -> None:
    """Ops can open or close the breaker whatever the window says."""
    breaker = make()
    breaker.force(OPEN)
    assert breaker.state == OPEN
    assert breaker.admit() is None
    breaker.force(CLOSED)
    assert breaker.state == CLOSED
    assert breaker.admit() is not None


def test_listeners_receive_state_changes() -> None:
    """pybreaker listeners see every transition, as BreakerChanged events on our bus."""
    clock = FakeClock()
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    breaker = Breaker(
        "p",
        BreakerSettings(min_calls=2, open_for=5.0),
        listeners=[_BreakerEvents(bus)],
        clock=clock,
    )
    feed(breaker, [False, False])
    clock.now += 6
    probe = breaker.admit()
    assert probe is not None
    breaker.record(probe, True, 0.0)
    assert seen == [
        BreakerChanged("p", CLOSED, OPEN, 5.0),
        BreakerChanged("p", OPEN, HALF_OPEN, 5.0),
        BreakerChanged("p", HALF_OPEN, CLOSED, 5.0),
    ]


def test_state_lives_in_pybreaker_storage() -> None:
    """Two breakers on one storage agree: one that trips is seen open by the other."""
    clock = FakeClock()
    storage = pybreaker.CircuitMemoryStorage(CLOSED)
    settings = BreakerSettings(min_calls=2, open_for=5.0)
    first = Breaker("p", settings, storage=storage, clock=clock)
    second = Breaker("p", settings, storage=storage, clock=clock)
    feed(first, [False, False])
    assert second.state == OPEN
    assert second.admit() is None


class _Transitions(pybreaker.CircuitBreakerListener):
    """Counts state changes, so a test knows which permits belong to the current state."""

    def __init__(self) -> None:
        self.count = 0

    def state_change(self, cb: object, old: object, new: object) -> None:
        self.count += 1


@relaxed
@given(
    probes=st.integers(min_value=1, max_value=4),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["admit", "success", "failure", "fatal", "release", "wait"]),
            st.integers(min_value=0, max_value=10),
        ),
        max_size=60,
    ),
)
def test_half_open_never_exceeds_its_probes(probes: int, ops: list[tuple[str, int]]) -> None:
    """Under any interleaving of admit/record/release, in-flight probes stay <= half_open_probes."""
    clock = FakeClock()
    transitions = _Transitions()
    settings = BreakerSettings(min_calls=1, half_open_probes=probes, open_for=1.0, open_for_max=1.0)
    breaker = Breaker("p", settings, listeners=[transitions], clock=clock)
    feed(breaker, [False])
    clock.now += 1.5
    held: list[tuple[tuple[Permit, int], int]] = []  # (permit, transitions seen when admitted)
    for op, pick in ops:
        if op == "admit":
            permit = breaker.admit()
            if permit is not None:
                held.append((permit, transitions.count))
        elif op == "wait":
            clock.now += 1.5
        elif held:
            permit, _ = held.pop(pick % len(held))
            if op == "release":
                breaker.release(permit)
            else:
                healthy = {"success": True, "failure": False, "fatal": None}[op]
                breaker.record(permit, healthy, 0.0)
        in_flight = [p for p, seen in held if p[0] is Permit.PROBE and seen == transitions.count]
        assert len(in_flight) <= probes


@pytest.mark.parametrize("probes", [1, 3])
def test_probe_budget_counts_successes(probes: int) -> None:
    """A finished successful probe still uses its slot: no more than N probes per half-open."""
    clock = FakeClock()
    breaker = make(clock, half_open_probes=probes)
    trip(breaker)
    clock.now += 11
    admitted = 0
    for _ in range(probes * 2):
        permit = breaker.admit()
        if permit is None or permit[0] is not Permit.PROBE:
            break
        admitted += 1
        if admitted < probes:
            breaker.record(permit, True, 0.0)
    assert admitted == probes
