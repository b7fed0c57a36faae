"""End to end over real HTTP on loopback against the fault-injecting simulator, both executors."""

from __future__ import annotations

import asyncio
import time

import pytest

from resilient import AmbiguousOutcome, ChainExhausted, DeadlineExceeded, FatalError, Outcome
from resilient.settings import BreakerSettings, RetrySettings, TimeoutSettings
from resilient.testing import Fault, Simulator
from tests.conftest import caller, gateway_for, provider


async def test_retryable_status_is_retried_then_served(two_providers: Simulator, mode: str) -> None:
    sim = two_providers
    sim.inject(Fault.status(503), prefix="/a", times=1)
    with gateway_for(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw:
        result = await caller(gw, mode)("GET", "/v1/things")
    assert result.status == "delivered" and result.provider == "a"
    assert [a.status_code for a in result.attempts] == [503, 200]
    assert len(sim.requests(prefix="/a")) == 2 and not sim.requests(prefix="/b")


async def test_outage_fails_over_opens_breaker_and_recovers(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    outage = sim.inject(Fault.status(503), prefix="/a")
    a = provider(
        "a",
        sim.url("/a"),
        breaker=BreakerSettings(min_calls=4, window=5.0, open_for=0.3, open_for_max=0.3),
    )
    with gateway_for(a, provider("b", sim.url("/b"))) as gw:
        call = caller(gw, mode)
        for _ in range(8):
            result = await call("POST", "/v1/things", json={})
            assert result.status == "delivered" and result.provider == "b"
        assert gw.provider("a").breaker.state == "open"
        hits_while_open = len(sim.requests(prefix="/a"))
        for _ in range(5):
            await call("POST", "/v1/things", json={})
        assert len(sim.requests(prefix="/a")) == hits_while_open  # open: not even tried
        outage.clear()
        await asyncio.sleep(0.35)  # past open_for: the next call is a probe
        result = await call("POST", "/v1/things", json={})
        assert result.provider == "a"
        assert gw.provider("a").breaker.state == "closed"


async def test_silent_provider_costs_one_attempt_timeout(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.hang(), prefix="/a")
    # an attempt long enough for a busy machine to get the request there (the hang answers
    # nothing, so it ends in the attempt timeout); the read timeout much longer
    a = provider(
        "a", sim.url("/a"), timeouts=TimeoutSettings(connect=1.0, read=10, write=10, attempt=1.0)
    )
    with gateway_for(a, provider("b", sim.url("/b"))) as gw:
        started = time.monotonic()
        result = await caller(gw, mode)("GET", "/v1/things")
        elapsed = time.monotonic() - started
    assert result.provider == "b"
    assert result.attempts[0].outcome is Outcome.AMBIGUOUS and len(sim.requests(prefix="/a")) == 1
    assert elapsed < 4.0  # bounded by the 1 s attempt timeout, not the provider's 10 s read


async def test_hung_call_ends_within_its_deadline(two_providers: Simulator, mode: str) -> None:
    sim = two_providers
    sim.inject(Fault.hang(), prefix="/a")
    with gateway_for(provider("a", sim.url("/a")), timeout=0.4) as gw:
        started = time.monotonic()
        with pytest.raises((DeadlineExceeded, ChainExhausted, AmbiguousOutcome)):
            await caller(gw, mode)("POST", "/v1/things", json={})
        assert time.monotonic() - started < 2.0


async def test_reset_before_headers_is_retried_for_idempotent_requests(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.reset(), prefix="/a", times=1)
    with gateway_for(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw:
        result = await caller(gw, mode)(
            "POST", "/v1/things", json={}, headers={"Idempotency-Key": "op-1"}
        )
    assert result.provider == "a"
    keys = [r.idempotency_key for r in sim.requests(prefix="/a")]
    assert keys == ["op-1", "op-1"]  # the same key on every attempt


async def test_reset_after_effect_is_not_sent_elsewhere(
    two_providers: Simulator, mode: str
) -> None:
    """A POST that may have taken effect (no idempotency key) never reaches a second provider."""
    sim = two_providers
    sim.inject(Fault.reset(after_effect=True), prefix="/a")
    with (
        gateway_for(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw,
        pytest.raises(AmbiguousOutcome) as caught,
    ):
        await caller(gw, mode)("POST", "/v1/things", json={})
    assert len(sim.effects(prefix="/a")) == 1
    assert not sim.requests(prefix="/b")
    assert caught.value.attempts[-1].outcome is Outcome.AMBIGUOUS


async def test_rate_limited_with_retry_after_waits_as_told(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.rate_limited(retry_after=0.3), prefix="/a", times=1)
    with gateway_for(provider("a", sim.url("/a"))) as gw:
        result = await caller(gw, mode)("GET", "/v1/things")
    assert result.provider == "a"
    first, second = sim.requests(prefix="/a")
    assert second.received_at - first.received_at >= 0.29


async def test_retry_after_longer_than_allowed_fails_over_at_once(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.rate_limited(retry_after=120), prefix="/a")
    a = provider(
        "a", sim.url("/a"), retry=RetrySettings(attempts=3, backoff_base=0.01, max_server_delay=5)
    )
    with gateway_for(a, provider("b", sim.url("/b"))) as gw:
        result = await caller(gw, mode)("GET", "/v1/things")
        assert result.provider == "b"
        assert len(sim.requests(prefix="/a")) == 1
        result = await caller(gw, mode)("GET", "/v1/things")  # a is paused for every caller
    assert result.provider == "b" and len(sim.requests(prefix="/a")) == 1


async def test_invalid_request_is_fatal_and_not_sent_elsewhere(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.status(422, json={"error": "bad address"}), prefix="/a")
    with (
        gateway_for(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw,
        pytest.raises(FatalError) as caught,
    ):
        await caller(gw, mode)("POST", "/v1/things", json={})
    assert caught.value.response is not None and caught.value.response.status_code == 422
    assert len(sim.requests(prefix="/a")) == 1 and not sim.requests(prefix="/b")


async def test_exhausted_chain_raises_one_error_with_every_attempt(
    two_providers: Simulator, mode: str
) -> None:
    sim = two_providers
    sim.inject(Fault.status(503))
    with (
        gateway_for(provider("a", sim.url("/a")), provider("b", sim.url("/b"))) as gw,
        pytest.raises(ChainExhausted) as caught,
    ):
        await caller(gw, mode)("GET", "/v1/things")
    providers = [a.provider for a in caught.value.attempts]
    assert providers == ["a", "a", "a", "b", "b", "b"]
    assert "a: retryable (503" in str(caught.value)


async def test_slow_provider_counts_as_unhealthy(two_providers: Simulator, mode: str) -> None:
    sim = two_providers
    sim.inject(Fault.latency(0.05), prefix="/a")
    slow = BreakerSettings(min_calls=3, window=5.0, slow_call=0.02, open_for=5.0)
    with gateway_for(
        provider("a", sim.url("/a"), breaker=slow), provider("b", sim.url("/b"))
    ) as gw:
        call = caller(gw, mode)
        for _ in range(3):
            assert (await call("GET", "/v1/things")).provider == "a"  # slow, but served
        assert gw.provider("a").breaker.state == "open"
        assert (await call("GET", "/v1/things")).provider == "b"
