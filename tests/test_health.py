"""The health endpoint: the ASGI app called directly, and the stdlib server over real HTTP."""

from __future__ import annotations

import contextlib
import json
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from resilient import CallFailed
from resilient.gateway import Gateway
from resilient.health import health_app, serve_health, unavailable_capabilities
from resilient.metrics import PrometheusMetrics
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
)
from resilient.testing import Fault, Simulator
from tests.conftest import provider

TRIPPING = BreakerSettings(min_calls=3, window=5.0, open_for=30.0, open_for_max=30.0)


def make_gateway(*providers: ProviderSettings) -> Gateway:
    """One "http" capability over `providers`, in order. No ops loop: the tests set provider
    state by hand, which the loop would put back from the (empty) overrides."""
    chain = tuple(p.name for p in providers)
    settings = GatewaySettings(
        providers={p.name: p for p in providers},
        capabilities={"http": CapabilitySettings("http", chain)},
    )
    return Gateway(settings, ops=False)


async def asgi(
    app: Any, path: str, method: str = "GET", root_path: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app: (status, headers, body)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"status.example")],
    }
    await app(scope, receive, send)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert all(b["type"] == "http.response.body" for b in bodies)
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(b.get("body", b"") for b in bodies)


def trip(gw: Gateway, name: str) -> None:
    """Open `name`'s breaker with real failing calls."""
    for _ in range(3):
        with contextlib.suppress(CallFailed):
            gw.sync.http.request("GET", "/v1/things")
    assert gw.provider(name).breaker.state == "open"


async def test_health_is_200_with_the_status_while_every_capability_can_be_served(
    two_providers: Simulator,
) -> None:
    sim = two_providers
    with make_gateway(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw:
        gw.sync.http.request("GET", "/v1/things")
        code, headers, body = await asgi(health_app(gw), "/health")
    assert code == 200
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    report = json.loads(body)
    assert report["healthy"] is True and report["unavailable"] == []
    assert report["capabilities"] == {"http": {"chain": ["a", "b"]}}
    assert set(report["providers"]) == {"a", "b"}
    assert report["providers"]["a"]["breaker"] == "closed"
    assert report["providers"]["a"]["samples"] == 1  # the call above, read live
    assert report["queue"] is None


async def test_one_provider_open_is_still_healthy_all_open_is_503(
    two_providers: Simulator,
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a")
    with make_gateway(
        provider("a", sim.url("/a"), breaker=TRIPPING),
        provider("b", sim.url("/b"), breaker=TRIPPING),
    ) as gw:
        app = health_app(gw)
        trip(gw, "a")
        code, _, body = await asgi(app, "/health")
        assert code == 200, body  # b still serves
        sim.inject(Fault.status(503), prefix="/b")
        trip(gw, "b")
        code, headers, body = await asgi(app, "/health")
        assert code == 503
        assert headers["content-type"] == "application/json"
        report = json.loads(body)
        assert report["healthy"] is False and report["unavailable"] == ["http"]
        assert report["providers"]["a"]["breaker"] == "open"
        assert set(report) >= {"source", "at", "providers", "capabilities", "queue"}
        gw.provider("b").breaker.force("closed")  # ops close it: healthy again, at once
        code, _, _ = await asgi(app, "/health")
        assert code == 200


async def test_a_disabled_provider_does_not_count_as_serving(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        app = health_app(gw)
        gw.provider("a").enabled = False
        code, _, body = await asgi(app, "/health")
        assert code == 503 and json.loads(body)["unavailable"] == ["http"]
        gw.provider("a").enabled = True
        code, _, _ = await asgi(app, "/health")
        assert code == 200


def test_unavailable_capabilities_reads_any_snapshot() -> None:
    up = {"enabled": True, "breaker": "half-open"}  # half-open admits probes: it can serve
    status = {
        "providers": {
            "a": {"enabled": True, "breaker": "open"},
            "b": up,
            "c": {"enabled": False, "breaker": "closed"},
        },
        "capabilities": {
            "email": {"chain": ["a", "b"]},
            "sms": {"chain": ["a", "c"]},
            "ghost": {"chain": ["missing"]},
        },
    }
    assert unavailable_capabilities(status) == ["sms", "ghost"]


async def test_metrics_are_served_when_attached(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        app = health_app(gw)
        code, _, body = await asgi(app, "/metrics")
        assert code == 404 and b"PrometheusMetrics" in body
        metrics = PrometheusMetrics(gw, CollectorRegistry())
        gw.sync.http.request("GET", "/v1/things")
        code, headers, body = await asgi(app, "/metrics")
        assert code == 200
        assert headers["content-type"].startswith("text/plain")
        assert (
            b'resilient_calls_total{capability="http",provider="a",status="delivered"} 1.0' in body
        )
        assert b'resilient_breaker_state{provider="a"} 0.0' in body
        metrics.close()
        code, _, _ = await asgi(app, "/metrics")
        assert code == 404


async def test_metrics_passed_explicitly_win(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        registry = CollectorRegistry()
        metrics = PrometheusMetrics(gw, registry)
        code, _, body = await asgi(health_app(gw, metrics=metrics), "/metrics")
        assert code == 200 and b"resilient_breaker_state" in body
        metrics.close()


async def test_other_paths_are_404_and_other_methods_405(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        app = health_app(gw)
        for path in ("/", "/healthz", "/health/", "/status"):
            code, _, _ = await asgi(app, path)
            assert code == 404, path
        code, headers, _ = await asgi(app, "/health", method="POST")
        assert code == 405 and headers["allow"] == "GET, HEAD"
        code, headers, body = await asgi(app, "/health", method="HEAD")
        assert code == 200 and body == b"" and int(headers["content-length"]) > 0


async def test_mounted_under_a_root_path(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        code, _, body = await asgi(health_app(gw), "/ops/health", root_path="/ops")
    assert code == 200 and json.loads(body)["healthy"] is True


async def test_lifespan_is_acknowledged(two_providers: Simulator) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:
        app = health_app(gw)
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_server_answers_over_real_http(two_providers: Simulator) -> None:
    sim = two_providers
    with make_gateway(provider("a", sim.url("/a"), breaker=TRIPPING)) as gw:
        PrometheusMetrics(gw, CollectorRegistry())
        server = serve_health(gw)
        try:
            assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
            with httpx.Client(base_url=server.url) as client:
                response = client.get("/health")
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/json"
                assert response.json()["providers"]["a"]["breaker"] == "closed"

                sim.inject(Fault.status(503), prefix="/a")
                trip(gw, "a")
                response = client.get("/health")
                assert response.status_code == 503
                assert response.json()["unavailable"] == ["http"]
                assert response.json()["providers"]["a"]["breaker"] == "open"

                response = client.get("/metrics")
                assert response.status_code == 200
                assert 'resilient_breaker_state{provider="a"} 2.0' in response.text

                assert client.get("/nope").status_code == 404
                assert client.get("/health?verbose=1").status_code == 503
                assert client.post("/health").status_code == 405
                assert client.head("/health").content == b""
        finally:
            server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)


def test_server_reports_an_internal_error_as_500(
    two_providers: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_gateway(provider("a", two_providers.url("/a"))) as gw:

        def broken() -> dict[str, Any]:
            raise RuntimeError("status unavailable")

        monkeypatch.setattr(gw, "status", broken)
        with serve_health(gw) as server:
            response = httpx.get(f"{server.url}/health", timeout=5)
            assert response.status_code == 500
            assert "status unavailable" not in response.text
            monkeypatch.undo()
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
