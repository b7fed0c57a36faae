"""The circuit breaker: pybreaker holds the state (storage, listeners); the opening rules are ours.

pybreaker's own `call()` holds a lock around the wrapped call, serializing every call through
one breaker, and trips on consecutive failures only. We never call through it: we ask `admit()`
before an attempt and `record()` after, and drive its state machine (`state` setter, storage)
with a failure *ratio* over a sliding window, slow calls, bounded half-open probes, and an open
period that grows on repeated trips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from enum import Enum

import pybreaker

from resilient.policy.window import SlidingWindow
from resilient.settings import BreakerSettings

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


class Permit(Enum):
    """What `admit()` granted; hand it back to `record()` or `release()`."""

    CALL = "call"  # closed: an ordinary call
    PROBE = "probe"  # half-open: one of the bounded trial calls


class Breaker:
    __slots__ = (
        "_cb",
        "_clock",
        "_generation",
        "_held",
        "_lock",
        "_probe_successes",
        "_probes",
        "_settings",
        "_trips",
        "_window",
        "name",
    )

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock  # wall clock: the open instant may be shared with other processes
        self._cb = pybreaker.CircuitBreaker(
            reset_timeout=settings.open_for,
            success_threshold=settings.half_open_probes,
            state_storage=storage or pybreaker.CircuitMemoryStorage(CLOSED),
            listeners=list(listeners),
            name=name,
        )
        self._window = SlidingWindow(settings.window)
        self._lock = threading.Lock()
        self._probes = 0  # trial calls in flight while half-open
        self._probe_successes = 0
        self._trips = 0  # consecutive trips without a close: lengthens the open period
        self._generation = 0  # bumps on every transition; late records of old calls are ignored
        self._held: str | None = None  # ops pinned it "open" or "closed", whatever calls do

    @property
    def held(self) -> str | None:
        return self._held

    def hold(self, state: str | None) -> None:
        """Pin the breaker "open" or "closed" until released with None (ops, live)."""
        if state not in (None, OPEN, CLOSED):
            raise ValueError(f"a breaker can be held open or closed, not {state!r}")
        self._held = state

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open' (an open breaker past its period reads half-open);
        a held breaker reads as held."""
        if self._held is not None:
            return self._held
        state: str = self._cb.state.name  # notices changes made by other processes, too
        if state == OPEN and self._open_remaining() <= 0:
            return HALF_OPEN
        return state

    @property
    def open_for(self) -> float:
        return float(self._cb.reset_timeout)

    def admit(self) -> tuple[Permit, int] | None:
        """A permit to attempt a call, or None: the breaker is open or its probes are taken."""
        held = self._held
        if held is not None:
            return (Permit.CALL, -1) if held == CLOSED else None
        state = self._cb.current_state
        if state == CLOSED:
            return Permit.CALL, self._generation
        with self._lock:
            state = self._cb.current_state
            if state == OPEN:
                if self._open_remaining() > 0:
                    return None
                self._transition(HALF_OPEN)
            elif state == CLOSED:
                return Permit.CALL, self._generation
            if self._probes + self._probe_successes >= self._settings.half_open_probes:
                return None
            self._probes += 1
            return Permit.PROBE, self._generation

    def record(self, permit: tuple[Permit, int], healthy: bool | None, now: float) -> None:
        """The outcome of an admitted call. `healthy` None: it says nothing about the provider."""
        kind, generation = permit
        if kind is Permit.PROBE:
            with self._lock:
                if generation != self._generation:
                    return
                self._probes -= 1
                if healthy is False:
                    self._trip()
                elif healthy:
                    self._probe_successes += 1
                    if self._probe_successes >= self._settings.half_open_probes:
                        self._trips = 0
                        self._transition(CLOSED)
            return
        if healthy is None:
            return
        with self._lock:
            if generation != self._generation:
                return  # began before the last transition: the window it counted in is gone
            self._window.add(now, failed=not healthy)
            if not healthy:
                self._trip_on_ratio(now)

    def record_failure(self, now: float) -> None:
        """A failure seen after its call was recorded healthy (a stream cut or stalled after
        its first chunk, the start already counted as a success): that success becomes a
        failure in the window, so a provider that keeps failing that way trips at the usual
        ratio. Counted while closed only: open, it has nothing to add; half-open, its probes
        decide; held, nothing counts."""
        if self._held is not None:
            return
        with self._lock:
            if self._cb.current_state != CLOSED:
                return
            self._window.amend(now)
            self._trip_on_ratio(now)

    def release(self, permit: tuple[Permit, int]) -> None:
        """Give back a permit whose call never ran (cancelled, rejected later in the pipeline)."""
        kind, generation = permit
        if kind is Permit.PROBE:
            with self._lock:
                if generation == self._generation:
                    self._probes -= 1

    def failure_rate(self, now: float) -> tuple[int, float]:
        """(calls, failure ratio) in the current window, for status displays."""
        with self._lock:
            calls, failures = self._window.counts(now)
        return calls, (failures / calls if calls else 0.0)

    def force(self, state: str) -> None:
        """Ops override: open or close now, whatever the window says."""
        with self._lock:
            if state == OPEN:
                self._trip()
            else:
                self._trips = 0
                self._transition(CLOSED)

    # -- state machine moves; callers hold self._lock --------------------------------------

    def _trip_on_ratio(self, now: float) -> None:
        calls, failures = self._window.counts(now)
        if calls >= self._settings.min_calls and failures >= self._settings.failure_ratio * calls:
            self._trip()

    def _trip(self) -> None:
        s = self._settings
        self._trips += 1
        self._cb.reset_timeout = min(
            s.open_for_max, s.open_for * s.open_growth ** (self._trips - 1)
        )
        self._cb._state_storage.opened_at = datetime.fromtimestamp(self._clock(), timezone.utc)
        self._transition(OPEN)

    def _transition(self, state: str) -> None:
        self._generation += 1
        self._probes = self._probe_successes = 0
        self._window.clear()
        self._cb._state_storage.state = state
        self._cb.state = state  # pybreaker notifies its listeners

    def _open_remaining(self) -> float:
        opened_at = self._cb._state_storage.opened_at
        if opened_at is None:
            return 0.0
        return float(opened_at.timestamp() + self._cb.reset_timeout - self._clock())
