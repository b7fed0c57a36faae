"""ResilientTransport / AsyncResilientTransport: an httpx client's requests through the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from resilient.gateway import Gateway
from resilient.settings import (
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.transport import ProviderUnavailable

FAST = RetrySettings(attempts=3, backoff_base=0.001, backoff_cap=0.002)
Handler = Callable[[httpx.Request], Any]


def gateway(**settings: Any) -> Gateway:
    settings.setdefault("retry", FAST)
    a = ProviderSettings("a", "http", base_url="http://a", **settings)
    return Gateway(
        GatewaySettings(
            providers={"a": a}, capabilities={"http": CapabilitySettings("http", ("a",))}
        )
    )


class Recorder:
    """A MockTransport handler answering from a list of statuses (the last repeats)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status, json={"status": status})


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def send(
    mode: str, gw: Gateway, handler: Handler, method: str = "GET", **kwargs: Any
) -> httpx.Response:
    """One request from a plain httpx client whose transport is the provider's pipeline."""
    timeout = kwargs.pop("timeout", httpx.Timeout(60.0))
    inner = httpx.MockTransport(handler)
    if mode == "sync":

        def blocking() -> httpx.Response:
            with httpx.Client(
                transport=gw.transport("a", inner), base_url="http://a", timeout=timeout
            ) as client:
                return client.request(method, "/v1/things", **kwargs)

        return await asyncio.to_thread(blocking)
    async with httpx.AsyncClient(
        transport=gw.async_transport("a", inner), base_url="http://a", timeout=timeout
    ) as aclient:
        return await aclient.request(method, "/v1/things", **kwargs)


async def test_retries_then_returns_the_success(mode: str) -> None:
    """A 503 is retried inside the transport; the client only sees the final 200."""
    handler = Recorder(503, 200)
    response = await send(mode, gateway(), handler)
    assert response.status_code == 200
    assert response.json() == {"status": 200}
    assert len(handler.requests) == 2


async def test_exhausted_returns_the_last_response(mode: str) -> None:
    """When retries run out the client gets the provider's last response, not an exception."""
    handler = Recorder(503)
    response = await send(mode, gateway(), handler)
    assert response.status_code == 503
    assert response.json() == {"status": 503}
    assert len(handler.requests) == 3


async def test_ambiguous_post_is_returned_not_repeated(mode: str) -> None:
    """A 500 on a POST without an idempotency key goes back to the SDK after one attempt."""
    handler = Recorder(500)
    response = await send(mode, gateway(), handler, "POST", json={"amount": 1})
    assert response.status_code == 500
    assert len(handler.requests) == 1


async def test_keyed_post_is_retried(mode: str) -> None:
    """An Idempotency-Key makes a POST safe to repeat on the same provider."""
    handler = Recorder(500, 201)
    response = await send(
        mode, gateway(), handler, "POST", json={}, headers={"Idempotency-Key": "k1"}
    )
    assert response.status_code == 201
    assert len(handler.requests) == 2


async def test_last_transport_error_is_raised(mode: str) -> None:
    """A provider that cannot be reached surfaces as the usual httpx error after the retries."""
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(httpx.ConnectError) as failure:
        await send(mode, gateway(), refuse)
    assert not isinstance(failure.value, ProviderUnavailable)
    assert calls == 3


async def test_open_breaker_raises_provider_unavailable(mode: str) -> None:
    """No attempt allowed: ProviderUnavailable, an httpx.ConnectError SDKs already handle."""
    gw = gateway()
    gw.provider("a").breaker.force("open")
    handler = Recorder(200)
    with pytest.raises(ProviderUnavailable, match="breaker open") as failure:
        await send(mode, gw, handler)
    assert isinstance(failure.value, httpx.ConnectError)
    assert handler.requests == []


async def test_client_timeout_is_tightened_to_the_provider(mode: str) -> None:
    """A generous client timeout is cut to the provider's phase timeouts for each attempt."""
    handler = Recorder(200)
    gw = gateway(timeouts=TimeoutSettings(connect=1.0, read=2.0, write=3.0, attempt=4.0))
    await send(mode, gw, handler, timeout=httpx.Timeout(60.0))
    seen = handler.requests[0].extensions["timeout"]
    assert (seen["connect"], seen["read"], seen["write"]) == (1.0, 2.0, 3.0)
    assert 0 < seen["pool"] <= 4.0


async def test_client_timeout_is_never_loosened(mode: str) -> None:
    """A client timeout tighter than the provider's stays as the client set it."""
    handler = Recorder(200)
    await send(mode, gateway(), handler, timeout=httpx.Timeout(0.5))
    seen = handler.requests[0].extensions["timeout"]
    assert seen == {"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5}


async def test_no_client_timeout_gets_the_providers(mode: str) -> None:
    """A client with timeouts disabled still gets the provider's limits, not none."""
    handler = Recorder(200)
    gw = gateway(timeouts=TimeoutSettings(connect=1.0, read=2.0, write=3.0, attempt=4.0))
    await send(mode, gw, handler, timeout=httpx.Timeout(None))
    seen = handler.requests[0].extensions["timeout"]
    assert (seen["connect"], seen["read"], seen["write"]) == (1.0, 2.0, 3.0)


async def test_attempt_timeout_surfaces_as_an_httpx_timeout() -> None:
    """Our own attempt timeout reaches the SDK as httpx.TimeoutException, the error it handles."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    gw = gateway(
        timeouts=TimeoutSettings(attempt=0.1),
        retry=RetrySettings(attempts=2, backoff_base=0.001, backoff_cap=0.001),
    )
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        await send("async", gw, hang)
    assert time.monotonic() - started < 2.0


def test_a_request_without_timeouts_gets_its_own_copy_of_the_providers() -> None:
    """The provider's phase timeouts are kept once; each request gets a copy it may change."""
    from resilient.transport import ResilientTransport

    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200)

    gw = gateway(timeouts=TimeoutSettings(connect=1.0, read=2.0, write=3.0, attempt=4.0))
    transport = ResilientTransport(gw.provider("a"), httpx.MockTransport(answer))
    transport.handle_request(httpx.Request("GET", "http://a/x"))
    seen[0]["read"] = 99.0  # as a stream's reader does
    transport.handle_request(httpx.Request("GET", "http://a/x"))
    assert seen[1] == {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}
    gw.close()
