"""Events for every decision the gateway makes, delivered to listeners; logging is one listener.

Events are plain frozen objects built only when someone listens. A listener that raises is
logged and skipped: telemetry never breaks a call.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from resilient.result import Attempt, Status
from resilient.secrets import redact

logger = logging.getLogger("resilient")
logger.addHandler(logging.NullHandler())  # a library logs only where the application says


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    provider: str
    number: int  # 1 for the first attempt of a call on this provider
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    provider: str
    number: int  # the attempt about to be made
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    provider: str
    old: str
    new: str
    open_for: float  # seconds the breaker stays open (when new == "open")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A provider not tried (or not tried again): by "breaker", "rate_limit", "bulkhead",
    "disabled" or "retry_budget"."""

    provider: str
    by: str


@dataclass(frozen=True, slots=True)
class FailedOver:
    capability: str
    provider: str  # the provider given up on
    reason: str


@dataclass(frozen=True, slots=True)
class CallFinished:
    capability: str
    status: Status
    provider: str | None
    attempts: tuple[Attempt, ...]
    latency: float
    replay_of: str | None = None  # the deferral id when this call replays a parked request


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A parked request that will not be replayed again (past its deadline, rejected, ...)."""

    capability: str
    deferral_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AlertChanged:
    """An alert rule started firing (`firing`) or cleared on `subject`: a provider, or "queue".

    Emitted by resilient.alerts.AlertMonitor, which also writes its log line."""

    rule: str  # "p95_latency", "error_rate", "breaker_open" or "queue_age"
    subject: str
    firing: bool
    value: float
    threshold: float
    message: str


Event = (
    AttemptFinished
    | RetryScheduled
    | BreakerChanged
    | Rejected
    | FailedOver
    | CallFinished
    | DeadLettered
    | AlertChanged
)
Listener = Callable[[Event], None]


class EventBus:
    """Fan-out to listeners. `active` and `routine` let hot paths skip building events nobody
    reads: `routine` covers the per-call events logged only at DEBUG (each attempt, each call
    delivered), which the default logging listener would format for nobody."""

    __slots__ = ("_listeners", "_lock", "_others", "active")

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self.active = False
        self._others = False  # a listener besides the logging one

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
            self._update()

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
                self._update()

        return unsubscribe

    def _update(self) -> None:
        self.active = bool(self._listeners)
        self._others = any(x is not log_event for x in self._listeners)

    @property
    def routine(self) -> bool:
        """Whether anyone reads per-call DEBUG events: another listener, or the log at DEBUG."""
        return self._others or (self.active and logger.isEnabledFor(logging.DEBUG))

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # logged with its traceback, masked: it may quote a secret
                text = f"event listener {listener!r} failed on {type(event).__name__}"
                logger.error("%s", redact(f"{text}\n{traceback.format_exc().rstrip()}"))


_LEVELS: dict[type, int] = {
    AttemptFinished: logging.DEBUG,
    RetryScheduled: logging.INFO,
    Rejected: logging.INFO,
    DeadLettered: logging.WARNING,
    FailedOver: logging.INFO,
}


def _level(event: Event) -> int | None:
    """The level an event is logged at; None for events others log (alerts)."""
    if isinstance(event, BreakerChanged):
        return logging.WARNING if event.new == "open" else logging.INFO
    if isinstance(event, CallFinished):
        return {"delivered": logging.DEBUG, "deferred": logging.INFO}.get(
            event.status, logging.WARNING
        )
    return _LEVELS.get(type(event))


def _describe(event: Event) -> str:
    if isinstance(event, AttemptFinished):
        return f"attempt {event.number} {event.attempt}"
    if isinstance(event, RetryScheduled):
        return f"{event.provider}: retry {event.number} in {event.delay:.3f}s ({event.reason})"
    if isinstance(event, BreakerChanged):
        extra = f" for {event.open_for:g}s" if event.new == "open" else ""
        return f"{event.provider}: breaker {event.old} -> {event.new}{extra}"
    if isinstance(event, Rejected):
        return f"{event.provider}: not tried ({event.by})"
    if isinstance(event, DeadLettered):
        return f"{event.capability}: dead letter {event.deferral_id} ({event.reason})"
    if isinstance(event, FailedOver):
        return f"{event.capability}: failing over from {event.provider} ({event.reason})"
    assert isinstance(event, CallFinished)
    return (
        f"{event.capability}: {event.status} by {event.provider or '-'} after "
        f"{len(event.attempts)} attempt(s) in {event.latency * 1000:.0f} ms"
    )


def log_event(event: Event) -> None:
    """The stdlib-logging listener: one line per decision, secrets masked, no request bodies.
    The line is only formatted when its level is enabled: the hot path pays nothing else."""
    level = _level(event)
    if level is not None and logger.isEnabledFor(level):
        logger.log(level, "%s", redact(_describe(event)))
