"""The drop-in StripeClient against the simulated Stripe over loopback, sync and async."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import stripe

from providers.stripe import ResilientHTTPClient, StripeClient
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.settings import BreakerSettings, GatewaySettings, ProviderSettings, RetrySettings
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.stripe import StripeState
from tests.conftest import provider

FAST = RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.02)
CHARGE = {
    "amount": 1999,
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": True,
    "metadata": {"order": "42"},
}


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    return simulator


@pytest.fixture
def account(simulator: Simulator) -> StripeState:
    return mount(simulator, "stripe", prefix="/stripe")


def settings(sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {"retry": FAST, **overrides}
    return replace(provider("stripe", sim.url("/stripe"), **values), kind="stripe")


def client(sim: Simulator, **overrides: Any) -> StripeClient:
    gw = Gateway(GatewaySettings(providers={"stripe": settings(sim, **overrides)}))
    return StripeClient("sk_test_123", gateway=gw)


async def call(mode: str, service: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """`service.method(...)`: its `_async` twin in async mode, else in a thread."""
    if mode == "async":
        return await getattr(service, f"{method}_async")(*args, **kwargs)
    return await asyncio.to_thread(getattr(service, method), *args, **kwargs)


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")  # stripe's own async client
async def test_sends_the_bytes_the_official_client_sends(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    official = stripe.StripeClient("sk_test_123", base_addresses={"api": sim.url("/stripe")})
    theirs_pi = await call(mode, official.v1.payment_intents, "create", params=CHARGE)
    ours_pi = await call(mode, client(sim).v1.payment_intents, "create", params=CHARGE)

    theirs, mine = sim.requests(prefix="/stripe")
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    assert mine.headers["authorization"] == theirs.headers["authorization"]
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers["stripe-version"] == theirs.headers["stripe-version"]
    assert mine.body == theirs.body
    assert mine.idempotency_key and theirs.idempotency_key
    assert type(ours_pi) is type(theirs_pi) is stripe.PaymentIntent
    assert (ours_pi.status, ours_pi.metadata.to_dict()) == ("succeeded", {"order": "42"})


async def test_a_503_is_retried_once_by_us_with_the_same_idempotency_key(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    sim.inject(Fault.status(503), prefix="/stripe", times=1)
    intent = await call(mode, client(sim).v1.payment_intents, "create", params=CHARGE)
    first, second = sim.requests(prefix="/stripe")
    assert (first.status, second.status) == (503, 200)
    assert first.idempotency_key == second.idempotency_key
    assert list(account.payment_intents) == [intent.id]


async def test_answer_lost_midway_is_retried_and_charges_once(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    """The charge ran but its answer was cut: the same key makes the retry a replay."""
    sim.inject(Fault.reset_mid_body(), prefix="/stripe", times=1)
    intent = await call(mode, client(sim).v1.payment_intents, "create", params=CHARGE)
    assert intent.status == "succeeded"
    assert len(account.payment_intents) == 1
    first, second = sim.requests(prefix="/stripe")
    assert first.idempotency_key == second.idempotency_key
    assert first.effect and second.effect  # the second answered from the saved result


async def test_sdk_retries_never_add_to_ours(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    sim.inject(Fault.status(503), prefix="/stripe")
    sdk = client(sim)
    options = {"max_network_retries": 3}
    with pytest.raises(stripe.APIError):
        await call(mode, sdk.v1.customers, "create", params={"email": "a@x.io"}, options=options)
    assert len(sim.requests(prefix="/stripe")) == FAST.attempts


async def test_stripe_should_retry_false_is_honoured(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    error = {"error": {"type": "api_error", "message": "An unknown error occurred"}}
    headers = {"Stripe-Should-Retry": "false"}
    sim.inject(Fault.status(503, json=error, headers=headers), prefix="/stripe", times=1)
    with pytest.raises(stripe.APIError) as caught:
        await call(mode, client(sim).v1.customers, "create", params={"email": "a@x.io"})
    assert caught.value.http_status == 503
    assert len(sim.requests(prefix="/stripe")) == 1


async def test_429_and_409_are_retried_as_stripe_would(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    lock = {"error": {"type": "invalid_request_error", "code": "lock_timeout", "message": "x"}}
    sim.inject(Fault.status(429, json=lock), prefix="/stripe", times=1)
    sim.inject(Fault.status(409, json=lock), prefix="/stripe", after=0.0, times=1)
    sdk = client(sim, retry=replace(FAST, attempts=3), classify=(("409", "retryable"),))
    customer = await call(mode, sdk.v1.customers, "create", params={"email": "a@x.io"})
    assert [r.status for r in sim.requests(prefix="/stripe")] == [409, 429, 200]
    assert list(account.customers) == [customer.id]


async def test_open_breaker_fails_fast_with_the_sdk_connection_error(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    sim.inject(Fault.status(503), prefix="/stripe")
    sdk = client(sim, breaker=BreakerSettings(min_calls=2, window=5.0, open_for=30.0))
    with pytest.raises(stripe.APIError):
        await call(mode, sdk.v1.customers, "list")
    assert sdk.resilient_provider.breaker.state == "open"
    with pytest.raises(stripe.APIConnectionError):
        await call(mode, sdk.v1.customers, "list")
    assert len(sim.requests(prefix="/stripe")) == 2


async def test_card_errors_reach_the_caller_untouched(
    sim: Simulator, account: StripeState, mode: str
) -> None:
    declined = {**CHARGE, "payment_method": "pm_card_chargeDeclinedInsufficientFunds"}
    sdk = client(sim)
    with pytest.raises(stripe.CardError) as caught:
        await call(mode, sdk.v1.payment_intents, "create", params=declined)
    error = caught.value
    assert (error.http_status, error.code) == (402, "card_declined")
    assert error.error is not None and error.error.decline_code == "insufficient_funds"
    assert len(sim.requests(prefix="/stripe")) == 1
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await call(mode, sdk.v1.payment_intents, "retrieve", "pi_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as invalid:
        await call(mode, sdk.v1.payment_intents, "create", params={"currency": "usd"})
    assert invalid.value.param == "amount"
    assert sdk.resilient_provider.breaker.failure_rate(sdk.resilient_provider.clock())[0] == 0


async def test_customers_round_trip(sim: Simulator, account: StripeState, mode: str) -> None:
    customers = client(sim).v1.customers
    created = await call(mode, customers, "create", params={"email": "a@x.io", "name": "Ada"})
    updated = await call(
        mode, customers, "update", created.id, params={"metadata": {"tier": "gold"}}
    )
    listed = await call(mode, customers, "list", params={"email": "a@x.io"})
    deleted = await call(mode, customers, "delete", created.id)
    assert updated.metadata.to_dict() == {"tier": "gold"}
    assert [c.id for c in listed.data] == [created.id]
    assert deleted.deleted is True


def test_every_post_carries_one_key_even_when_the_caller_gave_none(
    sim: Simulator, account: StripeState
) -> None:
    sim.inject(Fault.status(503), prefix="/stripe", times=1)
    runtime = client(sim).resilient_provider
    http = ResilientHTTPClient(runtime)
    _, status, _ = http.request(
        "post",
        sim.url("/stripe/v1/customers"),
        {"Authorization": "Bearer sk_test_123"},
        "email=a%40x.io",
    )
    assert status == 200
    keys = [r.idempotency_key for r in sim.requests(prefix="/stripe")]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]


def test_without_a_gateway_a_private_one_keeps_stripe_rules(
    sim: Simulator, account: StripeState
) -> None:
    sdk = StripeClient("sk_test_123", base_addresses={"api": sim.url("/stripe")})
    settings = sdk.resilient_provider.settings
    assert (settings.kind, settings.base_url) == ("stripe", sim.url("/stripe"))
    assert ("409", "retryable") in settings.classify
    assert sdk.v1.customers.create(params={"email": "a@x.io"}).email == "a@x.io"


def test_config_provides_key_and_base_url(sim: Simulator, account: StripeState) -> None:
    config = {
        "providers": {
            "payments": {"kind": "stripe", "api_key": "sk_conf", "base_url": sim.url("/stripe")}
        }
    }
    sdk = StripeClient(gateway=Gateway(settings_from_mapping(config)), provider="payments")
    sdk.v1.customers.create(params={"email": "a@x.io"})
    (request,) = sim.requests(prefix="/stripe")
    assert request.headers["authorization"] == "Bearer sk_conf"


def test_idempotency_key_reused_with_other_parameters_is_refused(
    sim: Simulator, account: StripeState
) -> None:
    sdk = client(sim)
    options = {"idempotency_key": "order-42"}
    sdk.v1.customers.create(params={"email": "a@x.io"}, options=options)
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.customers.create(params={"email": "b@x.io"}, options=options)
    assert len(account.customers) == 1


def test_other_http_clients_would_bypass_the_pipeline() -> None:
    with pytest.raises(TypeError, match="bypass"):
        StripeClient("sk_test_123", http_client=stripe.RequestsClient())


def test_one_client_serves_successive_event_loops(sim: Simulator, account: StripeState) -> None:
    """An async pool belongs to its loop: a client kept across asyncio.run calls still works."""
    sdk = client(sim)
    for _ in range(2):
        asyncio.run(sdk.v1.customers.create_async(params={"email": "a@x.io"}))
    assert len(account.customers) == 2
