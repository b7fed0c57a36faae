"""Alert rules over the gateway's status, and a monitor that emits their changes as events.

    rules = AlertRules(gw.settings.alerts)    # sans-I/O: status snapshots in, changes out
    monitor = AlertMonitor(gw, rules)          # evaluates every [alerts] interval in a thread
    gw.events.subscribe(lambda e: page(e) if isinstance(e, AlertChanged) and e.firing else None)

Rules, each over a threshold from `[alerts]` (strictly over: a value at the threshold is fine):

- `p95_latency` (per provider): p95 of the provider's recent attempts, once `min_calls` were seen.
- `error_rate` (per provider): failed attempts over the breaker window, once the window holds
  `min_calls` calls, so one failure in two calls is not an alert. While the breaker is open or
  half-open its window is empty: the alert holds its state until there is evidence again.
- `breaker_open` (per provider): the breaker is open and has not closed since it was first seen
  not closed longer ago than the threshold. Seen half-open (probing), the alert holds its state.
- `queue_age` (subject "queue"): the oldest parked request is older than the threshold.

An alert fires once when its condition starts and resolves once when it clears; a subject that
leaves the status (a provider removed) resolves its alerts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from resilient.secrets import redact
from resilient.settings import AlertSettings

if TYPE_CHECKING:
    from resilient.gateway import Gateway
    from resilient.telemetry import Event

__all__ = [
    "BREAKER_OPEN",
    "ERROR_RATE",
    "P95_LATENCY",
    "QUEUE",
    "QUEUE_AGE",
    "Alert",
    "AlertChanged",
    "AlertMonitor",
    "AlertRules",
]

logger = logging.getLogger("resilient.alerts")

P95_LATENCY = "p95_latency"
ERROR_RATE = "error_rate"
BREAKER_OPEN = "breaker_open"
QUEUE_AGE = "queue_age"
QUEUE = "queue"  # the subject of queue alerts

DEFAULT_MIN_CALLS = 20


try:  # the event's home is resilient.telemetry; defined here until it is there
    from resilient.telemetry import AlertChanged  # type: ignore[attr-defined, unused-ignore]
except ImportError:

    @dataclass(frozen=True, slots=True)
    class AlertChanged:  # type: ignore[no-redef, unused-ignore]
        """An alert started firing (`firing`) or cleared (not `firing`)."""

        rule: str
        subject: str
        firing: bool
        value: float
        threshold: float
        message: str


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule's verdict on one subject (a provider name, or "queue")."""

    rule: str
    subject: str
    value: float
    threshold: float
    message: str
    firing: bool = True


@dataclass(frozen=True, slots=True)
class _Check:
    rule: str
    subject: str
    breached: bool | None  # None: no evidence either way, keep the current state
    value: float
    threshold: float
    message: str


class AlertRules:
    """Evaluates status snapshots (`Gateway.status()`) against the thresholds; keeps the state.

    Sans-I/O: the caller passes the snapshot and the time (any clock that only moves forward, in
    seconds), so the rules are tested without waiting.
    """

    def __init__(self, settings: AlertSettings, *, min_calls: int | None = None) -> None:
        self.settings = settings
        configured = getattr(settings, "min_calls", DEFAULT_MIN_CALLS)
        self.min_calls = int(configured if min_calls is None else min_calls)
        self._active: dict[tuple[str, str], Alert] = {}
        self._not_closed_since: dict[str, float] = {}

    @property
    def firing(self) -> list[Alert]:
        """The alerts firing now, as last evaluated."""
        return list(self._active.values())

    def evaluate(self, status: Mapping[str, Any], now: float) -> list[Alert]:
        """The changes since the last evaluation: alerts that start firing, and resolutions."""
        changes: list[Alert] = []
        seen: set[tuple[str, str]] = set()
        for check in self._checks(status, now):
            key = (check.rule, check.subject)
            seen.add(key)
            current = self._active.get(key)
            if check.breached is None:
                continue
            if check.breached:
                alert = Alert(
                    check.rule, check.subject, check.value, check.threshold, check.message
                )
                self._active[key] = alert
                if current is None:
                    changes.append(alert)
            elif current is not None:
                del self._active[key]
                changes.append(
                    Alert(
                        check.rule,
                        check.subject,
                        check.value,
                        check.threshold,
                        check.message,
                        firing=False,
                    )
                )
        for key in [k for k in self._active if k not in seen]:
            alert = self._active.pop(key)
            message = f"{alert.subject}: no longer reported; {alert.rule} alert cleared"
            changes.append(replace(alert, firing=False, message=message))
        return changes

    def _checks(self, status: Mapping[str, Any], now: float) -> Iterator[_Check]:
        s = self.settings
        providers: Mapping[str, Mapping[str, Any]] = status.get("providers") or {}
        for name in list(self._not_closed_since):
            if name not in providers:
                del self._not_closed_since[name]
        for name, provider in providers.items():
            yield self._latency(name, provider, s.p95_latency)
            yield self._errors(name, provider, s.error_rate)
            yield self._breaker(name, provider, s.breaker_open, now)
        queue = status.get("queue")
        if queue is not None:
            yield self._queue(queue, s.queue_age)

    def _latency(self, name: str, provider: Mapping[str, Any], limit: float) -> _Check:
        p95 = provider.get("latency_p95")
        samples = int(provider.get("samples") or 0)
        if p95 is None or samples < self.min_calls:
            return _Check(P95_LATENCY, name, None, 0.0, limit, "")
        value = float(p95)
        over = value > limit
        text = "over" if over else "back under"
        message = f"{name}: p95 latency {value:.3g}s {text} {limit:g}s ({samples} attempts)"
        return _Check(P95_LATENCY, name, over, value, limit, message)

    def _errors(self, name: str, provider: Mapping[str, Any], limit: float) -> _Check:
        calls = int(provider.get("calls_in_window") or 0)
        value = float(provider.get("failure_rate") or 0.0)
        if calls < self.min_calls:
            # The window is emptied when the breaker moves: no evidence while it is not closed.
            known = provider.get("breaker") == "closed"
            message = f"{name}: error rate cleared ({calls} calls in the window)"
            return _Check(ERROR_RATE, name, False if known else None, value, limit, message)
        over = value > limit
        text = "over" if over else "back under"
        message = f"{name}: error rate {value:.1%} {text} {limit:.1%} ({calls} calls in the window)"
        return _Check(ERROR_RATE, name, over, value, limit, message)

    def _breaker(self, name: str, provider: Mapping[str, Any], limit: float, now: float) -> _Check:
        state = str(provider.get("breaker"))
        if state == "closed":
            since = self._not_closed_since.pop(name, now)
            message = f"{name}: breaker closed after {now - since:.0f}s"
            return _Check(BREAKER_OPEN, name, False, now - since, limit, message)
        since = self._not_closed_since.setdefault(name, now)
        value = now - since
        if state != "open":  # half-open: probing; it may close at the next call
            return _Check(BREAKER_OPEN, name, None, value, limit, "")
        message = f"{name}: breaker open, not closed for {value:.0f}s (over {limit:g}s)"
        return _Check(BREAKER_OPEN, name, value > limit, value, limit, message)

    def _queue(self, queue: Mapping[str, Any], limit: float) -> _Check:
        if "error" in queue:  # the store did not answer: no evidence either way
            return _Check(QUEUE_AGE, QUEUE, None, 0.0, limit, "")
        value = float(queue.get("oldest_age") or 0.0)
        over = value > limit
        if over:
            message = f"queue: oldest parked request is {value:.0f}s old (over {limit:g}s)"
        else:
            message = f"queue: oldest parked request back under {limit:g}s ({value:.0f}s)"
        return _Check(QUEUE_AGE, QUEUE, over, value, limit, message)


class AlertMonitor:
    """Evaluates `rules` over `gateway.status()` every `interval` seconds in a daemon thread.

    Each change is logged (WARNING when firing, INFO when resolved, on the "resilient.alerts"
    logger) and emitted on `gateway.events` as an `AlertChanged`: subscribe there to route alerts
    to a pager. `rules` defaults to the gateway's `[alerts]` settings and `interval` to theirs.
    """

    def __init__(
        self,
        gateway: Gateway,
        rules: AlertRules | None = None,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self.gateway = gateway
        self.rules = rules if rules is not None else AlertRules(gateway.settings.alerts)
        self.interval = self.rules.settings.interval if interval is None else interval
        if self.interval <= 0:
            raise ValueError(f"interval must be positive, not {self.interval!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Start the evaluating thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="resilient-alerts", daemon=True
                )
                self._thread.start()

    def check(self) -> list[Alert]:
        """Evaluate now: log and emit every change, and return the changes."""
        with self._lock:
            changes = self.rules.evaluate(self.gateway.status(), self._clock())
        for alert in changes:
            if alert.firing:
                logger.warning("%s", redact(f"alert {alert.rule} firing: {alert.message}"))
            else:
                logger.info("%s", redact(f"alert {alert.rule} resolved: {alert.message}"))
            event = AlertChanged(
                alert.rule, alert.subject, alert.firing, alert.value, alert.threshold, alert.message
            )
            self.gateway.events.emit(cast("Event", event))
        return changes

    def close(self) -> None:
        """Stop evaluating; waits for an evaluation under way."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> AlertMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a broken status read must not end the monitor
                logger.exception("alert evaluation failed")
            self._stop.wait(self.interval)
