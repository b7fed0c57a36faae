"""Prometheus metrics and OpenTelemetry spans from the gateway's events: both optional extras.

    pip install "resilient-gateway[metrics]"

    metrics = PrometheusMetrics(gw)              # counters and histograms fed by gw.events
    spans = OpenTelemetrySpans(gw)               # a span per call, an event per attempt

Counters and the latency histogram are updated from events as calls finish. Breaker states,
in-flight calls and the deferral queue are read live from `gateway.status()` when Prometheus
scrapes, never once per call. Label values are provider and capability names from the config and
fixed words (statuses, outcome classes): never a URL, a key or a body.

This module imports without either extra installed; using a class without its extra raises
`MissingExtra`, which names the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from resilient.errors import ResilientError
from resilient.telemetry import (
    AttemptFinished,
    BreakerChanged,
    CallFinished,
    DeadLettered,
    Event,
    FailedOver,
    Rejected,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    from resilient.gateway import Gateway

logger = logging.getLogger("resilient.metrics")

EXTRA = "resilient-gateway[metrics]"

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

# Attempt latency buckets (seconds): fine below a second, and 2 s, the default p95 alert.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)

NO_PROVIDER = "none"  # the provider label of a call no provider served (deferred, exhausted)


class MissingExtra(ResilientError, ImportError):
    """An optional dependency is not installed."""


def _require(module: str, package: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{what} needs {package}: pip install '{EXTRA}'") from exc


_attached: weakref.WeakKeyDictionary[Gateway, PrometheusMetrics] = weakref.WeakKeyDictionary()
_attached_lock = threading.Lock()


def attached_metrics(gateway: Gateway) -> PrometheusMetrics | None:
    """The PrometheusMetrics last attached to `gateway` (what the health endpoint serves)."""
    return _attached.get(gateway)


class PrometheusMetrics:
    """Prometheus metrics of one gateway, registered in `registry` (default: the global one).

    Pass your own `CollectorRegistry` to run more than one gateway in a process, or to keep the
    gateway's metrics apart from the application's. `close()` unsubscribes and unregisters.
    """

    def __init__(
        self,
        gateway: Gateway,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "resilient",
    ) -> None:
        prom = _require("prometheus_client", "prometheus-client", "PrometheusMetrics")
        self.gateway = gateway
        self.registry: CollectorRegistry = prom.REGISTRY if registry is None else registry
        self._prom = prom
        ns = namespace
        self._registered: list[Collector] = []

        def add(metric: Any) -> Any:
            self.registry.register(metric)
            self._registered.append(metric)
            return metric

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return add(prom.Counter(name, doc, labels, namespace=ns, registry=None))

        try:
            self.calls = counter(
                "calls",
                "Calls finished, by capability, serving provider and status.",
                ("capability", "provider", "status"),
            )
            self.attempts = counter(
                "attempts",
                "Attempts made on a provider, by outcome class.",
                ("provider", "outcome"),
            )
            self.attempt_latency = add(
                prom.Histogram(
                    "attempt_duration_seconds",
                    "Latency of one attempt on a provider.",
                    ("provider",),
                    namespace=ns,
                    buckets=LATENCY_BUCKETS,
                    registry=None,
                )
            )
            self.rejections = counter(
                "rejections",
                "Providers not tried, by what refused the attempt (breaker, rate_limit, bulkhead, "
                "disabled, retry_budget).",
                ("provider", "by"),
            )
            self.failovers = counter(
                "failovers", "Fail-overs away from a provider.", ("capability", "provider")
            )
            self.breaker_transitions = counter(
                "breaker_transitions",
                "Breaker state changes, by the state entered.",
                ("provider", "state"),
            )
            self.deferrals = counter("deferrals", "Calls parked for later replay.", ("capability",))
            self.replays = counter(
                "replays",
                "Replays of parked requests, by serving provider and status.",
                ("capability", "provider", "status"),
            )
            self.dead_letters = counter(
                "dead_letters",
                "Parked requests given up on (past deadline, rejected...).",
                ("capability",),
            )
            add(_StatusCollector(gateway, ns))
        except ValueError as exc:  # a name taken in this registry: leave it as it was
            self._unregister()
            raise ResilientError(
                f"{exc}: another PrometheusMetrics already uses this registry; close() it, "
                "or pass each gateway a registry of its own (registry=CollectorRegistry())"
            ) from exc
        self._unsubscribe = gateway.events.subscribe(self._on_event)
        with _attached_lock:
            _attached[gateway] = self

    @property
    def content_type(self) -> str:
        return str(self._prom.CONTENT_TYPE_LATEST)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (what a /metrics endpoint returns)."""
        return cast(bytes, self._prom.generate_latest(self.registry))

    def close(self) -> None:
        """Stop listening and remove these metrics from the registry."""
        self._unsubscribe()
        self._unregister()
        with _attached_lock:
            if _attached.get(self.gateway) is self:
                del _attached[self.gateway]

    def _unregister(self) -> None:
        for metric in self._registered:
            with contextlib.suppress(KeyError):  # unregistered by hand already
                self.registry.unregister(metric)
        self._registered.clear()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, AttemptFinished):
            attempt = event.attempt
            self.attempts.labels(event.provider, attempt.outcome.value).inc()
            self.attempt_latency.labels(event.provider).observe(attempt.latency)
        elif isinstance(event, CallFinished):
            provider = event.provider or NO_PROVIDER
            self.calls.labels(event.capability, provider, event.status).inc()
            if event.status == "deferred":
                self.deferrals.labels(event.capability).inc()
            if event.replay_of is not None:
                self.replays.labels(event.capability, provider, event.status).inc()
        elif isinstance(event, FailedOver):
            self.failovers.labels(event.capability, event.provider).inc()
        elif isinstance(event, Rejected):
            self.rejections.labels(event.provider, event.by).inc()
        elif isinstance(event, BreakerChanged):
            if event.new in BREAKER_STATES:
                self.breaker_transitions.labels(event.provider, event.new).inc()
        elif isinstance(event, DeadLettered):
            self.dead_letters.labels(event.capability).inc()


class _StatusCollector:
    """Gauges read from `gateway.status()` once per scrape."""

    def __init__(self, gateway: Gateway, namespace: str) -> None:
        self._gateway = gateway
        self._ns = namespace

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        breaker, enabled, in_flight, up, depth, dead, oldest = families
        try:
            status = self._gateway.status()
        except Exception:  # a scrape still answers the counters; the gauges are left out
            logger.exception("gateway status unavailable for the metrics scrape")
            return iter(())
        for name, provider in status["providers"].items():
            breaker.add_metric([name], BREAKER_STATES.get(str(provider["breaker"]), 2))
            enabled.add_metric([name], 1 if provider["enabled"] else 0)
            in_flight.add_metric([name], provider["in_flight"])
        queue = status.get("queue")
        if queue is None:  # no deferral backend: no queue to report
            return iter((breaker, enabled, in_flight))
        if "error" in queue:
            up.add_metric([], 0)
            return iter((breaker, enabled, in_flight, up))
        up.add_metric([], 1)
        depth.add_metric([], int(queue.get("ready", 0)) + int(queue.get("leased", 0)))
        dead.add_metric([], int(queue.get("dead", 0)))
        oldest.add_metric([], float(queue.get("oldest_age", 0.0)))
        return iter(families)

    def _families(self) -> list[Any]:
        core = importlib.import_module("prometheus_client.core")
        gauge: Callable[..., Any] = core.GaugeMetricFamily
        ns = self._ns
        return [
            gauge(
                f"{ns}_breaker_state",
                "Breaker state by provider: 0 closed, 1 half-open, 2 open.",
                labels=["provider"],
            ),
            gauge(
                f"{ns}_provider_enabled", "1 if the provider is in rotation.", labels=["provider"]
            ),
            gauge(f"{ns}_in_flight", "Calls in flight on the provider.", labels=["provider"]),
            gauge(f"{ns}_queue_up", "1 if the deferral queue answered the last scrape."),
            gauge(f"{ns}_queue_depth", "Parked requests waiting for replay (ready and leased)."),
            gauge(f"{ns}_queue_dead", "Dead-lettered requests kept in the queue."),
            gauge(
                f"{ns}_queue_oldest_age_seconds", "Age of the oldest parked request (0 if none)."
            ),
        ]


class OpenTelemetrySpans:
    """One span per finished call, with one span event per attempt, from the gateway's events.

    The span is started in the caller's context (a child of the application's current span),
    timed from the call's latency, and marked as an error when the call failed. Attributes hold
    names, statuses and numbers only.
    """

    def __init__(self, gateway: Gateway, tracer: Any = None) -> None:
        trace = _require("opentelemetry.trace", "opentelemetry-api", "OpenTelemetrySpans")
        self._trace = trace
        self.tracer = trace.get_tracer("resilient") if tracer is None else tracer
        self._unsubscribe = gateway.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, CallFinished):
            return
        end = time.time_ns()
        start = end - int(event.latency * 1e9)
        attributes: dict[str, Any] = {
            "resilient.capability": event.capability,
            "resilient.status": event.status,
            "resilient.attempts": len(event.attempts),
        }
        if event.provider is not None:
            attributes["resilient.provider"] = event.provider
        if event.replay_of is not None:
            attributes["resilient.replay_of"] = event.replay_of
        span = self.tracer.start_span(
            f"resilient {event.capability}", attributes=attributes, start_time=start
        )
        for number, attempt in enumerate(event.attempts, 1):
            details: dict[str, Any] = {
                "resilient.provider": attempt.provider,
                "resilient.attempt": number,
                "resilient.outcome": attempt.outcome.value,
                "resilient.reason": attempt.reason,
                "resilient.latency_ms": round(attempt.latency * 1000, 3),
            }
            if attempt.status_code is not None:
                details["http.response.status_code"] = attempt.status_code
            span.add_event("resilient.attempt", details)
        if event.status == "failed":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, "call failed"))
        span.end(end_time=end)
