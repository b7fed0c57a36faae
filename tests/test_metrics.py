"""Prometheus metrics and OpenTelemetry spans, fed by real calls over the loopback simulator."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from resilient import ChainExhausted, ResilientError, Secret
from resilient.gateway import Gateway
from resilient.metrics import (
    MissingExtra,
    OpenTelemetrySpans,
    PrometheusMetrics,
    attached_metrics,
)
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
)
from resilient.testing import Fault, SimResponse, Simulator
from tests.conftest import caller, provider

KEY = "sk-metrics-test-9d8c7b6a5f4e"
BODY_MARKER = "body-marker-5e1a"
STEADY = BreakerSettings(min_calls=100, window=5.0, open_for=5.0)  # never trips in these tests


def make_gateway(*providers: ProviderSettings) -> Gateway:
    """One "http" capability over `providers`, in order. No ops loop: the tests set provider
    state by hand, which the loop would put back from the (empty) overrides."""
    chain = tuple(p.name for p in providers)
    settings = GatewaySettings(
        providers={p.name: p for p in providers},
        capabilities={"http": CapabilitySettings("http", chain)},
    )
    return Gateway(settings, ops=False)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def calls(registry: CollectorRegistry, provider: str, status: str) -> float:
    return value(
        registry, "resilient_calls_total", capability="http", provider=provider, status=status
    )


def replays(registry: CollectorRegistry, provider: str, status: str) -> float:
    labels = {"capability": "http", "provider": provider, "status": status}
    return value(registry, "resilient_replays_total", **labels)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


async def test_calls_attempts_latency_and_failovers_are_counted(
    two_providers: Simulator, registry: CollectorRegistry, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a")
    with make_gateway(
        provider("a", sim.url("/a"), breaker=STEADY), provider("b", sim.url("/b"))
    ) as gw:
        PrometheusMetrics(gw, registry)
        call = caller(gw, mode)
        for _ in range(2):
            assert (await call("GET", "/v1/things")).provider == "b"
    a_hits = len(sim.requests(prefix="/a"))
    assert a_hits == 6  # three attempts per call
    assert calls(registry, "b", "delivered") == 2
    assert value(registry, "resilient_attempts_total", provider="a", outcome="retryable") == a_hits
    assert value(registry, "resilient_attempts_total", provider="b", outcome="ok") == 2
    assert value(registry, "resilient_attempt_duration_seconds_count", provider="a") == a_hits
    assert value(registry, "resilient_attempt_duration_seconds_count", provider="b") == 2
    assert value(registry, "resilient_attempt_duration_seconds_sum", provider="b") > 0
    assert value(registry, "resilient_failovers_total", capability="http", provider="a") == 2
    assert value(registry, "resilient_failovers_total", capability="http", provider="b") == 0


async def test_a_failed_call_is_counted_with_no_provider(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503))
    with make_gateway(provider("a", sim.url("/a"), breaker=STEADY)) as gw:
        PrometheusMetrics(gw, registry)
        with pytest.raises(ChainExhausted):
            await gw.http.request("GET", "/v1/things")
    assert calls(registry, "none", "failed") == 1
    assert value(registry, "resilient_deferrals_total", capability="http") == 0


async def test_breaker_state_is_read_live_at_scrape(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a")
    # open long enough that a busy machine reads it open after the calls that trip it
    tripping = BreakerSettings(min_calls=3, window=5.0, open_for=2.0, open_for_max=2.0)
    with make_gateway(
        provider("a", sim.url("/a"), breaker=tripping), provider("b", sim.url("/b"))
    ) as gw:
        PrometheusMetrics(gw, registry)
        assert value(registry, "resilient_breaker_state", provider="a") == 0
        call = caller(gw, "async")
        for _ in range(3):
            await call("GET", "/v1/things")
        assert gw.provider("a").breaker.state == "open"
        assert value(registry, "resilient_breaker_state", provider="a") == 2
        assert value(registry, "resilient_breaker_state", provider="b") == 0
        opened = value(registry, "resilient_breaker_transitions_total", provider="a", state="open")
        assert opened == 1
        assert value(registry, "resilient_rejections_total", provider="a", by="breaker") >= 1
        # Past its open period the breaker reads half-open: no call and no event in between,
        # so only a live read at scrape time can see it.
        await asyncio.sleep(2.1)
        assert value(registry, "resilient_breaker_state", provider="a") == 1
        gw.provider("a").enabled = False
        assert value(registry, "resilient_provider_enabled", provider="a") == 0
        assert value(registry, "resilient_provider_enabled", provider="b") == 1


def deferring_gateway(sim: Simulator, tmp_path: Path) -> Gateway:
    breaker = BreakerSettings(min_calls=3, window=5.0, open_for=0.3, open_for_max=0.3)
    return Gateway(
        GatewaySettings(
            spool_path=str(tmp_path / "spool.db"),
            providers={"a": provider("a", sim.url("/a"), breaker=breaker)},
            capabilities={"http": CapabilitySettings("http", ("a",), defer=True)},
        ),
        ops=False,
    )


@pytest.fixture
def parking_sim(simulator: Simulator) -> Iterator[Simulator]:
    simulator.route("POST", "/a/v1/m", lambda r: SimResponse.json({"ok": True}, status=202))
    yield simulator


def test_deferrals_replays_dead_letters_and_the_queue(
    parking_sim: Simulator, tmp_path: Path, registry: CollectorRegistry
) -> None:
    sim = parking_sim
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        PrometheusMetrics(gw, registry)
        assert value(registry, "resilient_queue_depth") == 0
        assert value(registry, "resilient_queue_up") == 1
        for n in range(2):
            assert gw.sync.http.request("POST", "/v1/m", json={"n": n}).status == "deferred"
        assert value(registry, "resilient_deferrals_total", capability="http") == 2
        assert calls(registry, "none", "deferred") == 2
        assert value(registry, "resilient_queue_depth") == 2
        wait_until(lambda: value(registry, "resilient_queue_oldest_age_seconds") > 0)

        outage.clear()
        wait_until(lambda: value(registry, "resilient_queue_depth") == 0)
        assert replays(registry, "a", "delivered") == 2
        assert len(sim.effects(prefix="/a")) == 2

        outage = sim.inject(Fault.status(503), prefix="/a")
        assert gw.sync.http.request("POST", "/v1/m", json={}).status == "deferred"
        outage.clear()
        sim.inject(Fault.status(422), prefix="/a")  # the replay is rejected: a dead letter
        wait_until(lambda: value(registry, "resilient_dead_letters_total", capability="http") == 1)
        assert value(registry, "resilient_queue_dead") == 1
        assert replays(registry, "a", "failed") == 1
        assert value(registry, "resilient_deferrals_total", capability="http") == 3


def test_no_queue_gauges_without_a_deferral_backend(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        PrometheusMetrics(gw, registry)
        assert registry.get_sample_value("resilient_queue_depth") is None
        assert registry.get_sample_value("resilient_queue_up") is None
        assert value(registry, "resilient_breaker_state", provider="a") == 0


async def test_labels_hold_names_never_urls_keys_or_bodies(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a", times=1)
    sim.inject(Fault.status(401), prefix="/b")
    with make_gateway(
        provider("a", sim.url("/a"), api_key=Secret(KEY)),
        provider("b", sim.url("/b"), api_key=Secret(KEY)),
    ) as gw:
        metrics = PrometheusMetrics(gw, registry)
        call = caller(gw, "async")
        await call(
            "POST",
            "/v1/things",
            json={"text": BODY_MARKER},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        gw.provider("b").enabled = False
        await call("POST", "/v1/things", json={"text": BODY_MARKER})
        text = metrics.render().decode()
    assert KEY not in text and BODY_MARKER not in text
    assert "127.0.0.1" not in text and str(sim.port) not in text and "/v1" not in text
    label_values = {
        v
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for k, v in sample.labels.items()
        if k != "le"
    }
    words = {
        "http",
        "a",
        "b",
        "none",
        "delivered",
        "failed",
        "deferred",
        "open",
        "closed",
        "half-open",
        "disabled",
        "breaker",
        *(o for o in ("ok", "retryable", "failover", "ambiguous", "fatal")),
    }
    assert label_values <= words
    assert {"a", "b", "http", "delivered"} <= label_values


async def test_close_unsubscribes_and_unregisters(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        metrics = PrometheusMetrics(gw, registry)
        assert attached_metrics(gw) is metrics
        await gw.http.request("GET", "/v1/things")
        metrics.close()
        assert attached_metrics(gw) is None
        assert not [f for f in registry.collect() if f.name.startswith("resilient_")]
        again = PrometheusMetrics(gw, registry)  # no duplicate-series error: all gone
        await gw.http.request("GET", "/v1/things")
        assert calls(registry, "a", "delivered") == 1
        again.close()


def test_the_default_registry_is_the_global_one(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        metrics = PrometheusMetrics(gw)
        try:
            gw.sync.http.request("GET", "/v1/things")
            assert calls(prometheus_client.REGISTRY, "a", "delivered") == 1
            assert b"resilient_calls_total" in prometheus_client.generate_latest()
        finally:
            metrics.close()
    assert prometheus_client.REGISTRY.get_sample_value("resilient_breaker_state", {}) is None


def test_missing_prometheus_client_names_the_extra(
    two_providers: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "resilient.metrics")
    monkeypatch.delitem(sys.modules, "resilient.health", raising=False)
    metrics = importlib.import_module("resilient.metrics")  # imports fine without the extra
    importlib.import_module("resilient.health")
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        with pytest.raises(ImportError, match=r"resilient-gateway\[metrics\]") as caught:
            metrics.PrometheusMetrics(gw)
        assert isinstance(caught.value, metrics.MissingExtra)
        assert "prometheus-client" in str(caught.value)
        assert gw.sync.http.request("GET", "/v1/things").status == "delivered"


def test_missing_opentelemetry_names_the_extra(
    two_providers: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    extra = r"opentelemetry-api.*resilient-gateway\[metrics\]"
    with (
        make_gateway(provider("a", two_providers.url("/a"))) as gw,
        pytest.raises(MissingExtra, match=extra),
    ):
        OpenTelemetrySpans(gw)


class FakeSpan:
    def __init__(self, name: str, attributes: dict[str, Any], start_time: int) -> None:
        self.name = name
        self.attributes = attributes
        self.start_time = start_time
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status: Any = None
        self.end_time: int | None = None

    def add_event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, dict(attributes)))

    def set_status(self, status: Any) -> None:
        self.status = status

    def end(self, end_time: int | None = None) -> None:
        self.end_time = end_time


class FakeTracer:
    """Records what a real tracer would be asked to do (the SDK is not a dependency)."""

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []

    def start_span(
        self, name: str, attributes: dict[str, Any] | None = None, start_time: int | None = None
    ) -> FakeSpan:
        span = FakeSpan(name, dict(attributes or {}), start_time or 0)
        self.spans.append(span)
        return span


async def test_spans_record_each_call_with_an_event_per_attempt(
    two_providers: Simulator, mode: str
) -> None:
    from opentelemetry.trace import StatusCode

    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a")
    tracer = FakeTracer()
    with make_gateway(
        provider("a", sim.url("/a"), breaker=STEADY), provider("b", sim.url("/b"))
    ) as gw:
        OpenTelemetrySpans(gw, tracer)
        result = await caller(gw, mode)("GET", "/v1/things")
        sim.inject(Fault.status(503), prefix="/b")
        with pytest.raises(ChainExhausted):
            await caller(gw, mode)("GET", "/v1/things")
    served, failed = tracer.spans
    assert served.name == "resilient http"
    assert served.attributes == {
        "resilient.capability": "http",
        "resilient.status": "delivered",
        "resilient.attempts": 4,
        "resilient.provider": "b",
    }
    events = [
        (e["resilient.provider"], e["resilient.outcome"], e.get("http.response.status_code"))
        for _, e in served.events
    ]
    assert events == [(a.provider, a.outcome.value, a.status_code) for a in result.attempts]
    assert events == [("a", "retryable", 503)] * 3 + [("b", "ok", 200)]
    assert {name for name, _ in served.events} == {"resilient.attempt"}
    assert [e["resilient.attempt"] for _, e in served.events] == [1, 2, 3, 4]
    assert served.status is None
    assert served.end_time is not None and served.end_time >= served.start_time
    assert failed.attributes["resilient.status"] == "failed"
    assert "resilient.provider" not in failed.attributes
    assert failed.status.status_code is StatusCode.ERROR
    assert len(failed.events) == 6


def test_spans_on_the_api_alone_are_harmless(
    two_providers: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """With only opentelemetry-api (no SDK configured), the default tracer records nothing and
    calls go on."""
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        spans = OpenTelemetrySpans(gw)
        with caplog.at_level(logging.ERROR, logger="resilient"):
            assert gw.sync.http.request("GET", "/v1/things").status == "delivered"
        spans.close()
    assert not [r for r in caplog.records if "listener" in r.getMessage()]


def test_a_second_metrics_on_one_registry_is_refused_and_changes_nothing(
    two_providers: Simulator, registry: CollectorRegistry
) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        first = PrometheusMetrics(gw, registry)
        before = sorted(f.name for f in registry.collect())
        with pytest.raises(ResilientError, match="registry of its own"):
            PrometheusMetrics(gw, registry)
        assert sorted(f.name for f in registry.collect()) == before
        gw.sync.http.request("GET", "/v1/things")
        assert calls(registry, "a", "delivered") == 1  # counted once, by the first only
        assert attached_metrics(gw) is first


def test_a_scrape_survives_a_failing_status_read(
    two_providers: Simulator, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        metrics = PrometheusMetrics(gw, registry)
        gw.sync.http.request("GET", "/v1/things")

        def broken() -> dict[str, Any]:
            raise RuntimeError("status unavailable")

        monkeypatch.setattr(gw, "status", broken)
        text = metrics.render().decode()
    assert 'resilient_calls_total{capability="http",provider="a",status="delivered"} 1.0' in text
    assert "resilient_breaker_state{" not in text
