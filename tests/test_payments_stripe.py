"""Stripe payments adapter: the PaymentIntents wire format (form, Bearer key, Idempotency-Key),
its reading of Stripe's answers, and gw.payments end to end on the simulated Stripe."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from providers import Charge
from providers.payments.stripe import StripeAdapter
from resilient.config import settings_from_mapping
from resilient.errors import FatalError
from resilient.gateway import Gateway
from resilient.policy.classify import Classifier
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import stripe as stripe_routes
from tests.conftest import provider_table

CHARGE = Charge(
    amount=1999,
    currency="USD",
    payment_method="pm_card_visa",
    idempotency_key="order-42",
    customer="cus_123",
    description="Order #42",
    metadata={"order": "42", "tier": "gold"},
)
URL = "https://api.stripe.com/v1/payment_intents"
INTENT = {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent", "status": "succeeded"}


def stripe(base_url: str | None = None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "api_key": "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    }
    return provider_table("stripe", base_url, **{**defaults, **options})


def gateway(**providers: dict[str, Any]) -> Gateway:
    chain = list(providers)
    return Gateway(
        settings_from_mapping(
            {"providers": providers, "capabilities": {"payments": {"chain": chain}}}
        )
    )


async def charge(gw: Gateway, mode: str, model: Charge = CHARGE) -> Result[Any]:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.payments.charge, model)
    return await gw.payments.charge(model)  # type: ignore[no-any-return]


async def test_wire_format_is_a_confirmed_payment_intent() -> None:
    gw = gateway(stripe=stripe())
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=INTENT))
        result = await gw.payments.charge(CHARGE)
    await gw.aclose()

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"
    assert request.headers["idempotency-key"] == "order-42"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(request.content.decode()) == [
        ("amount", "1999"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("customer", "cus_123"),
        ("description", "Order #42"),
        ("metadata[order]", "42"),
        ("metadata[tier]", "gold"),
    ]
    assert result.value is not None
    assert result.value.message_id == INTENT["id"]


async def test_every_attempt_carries_the_same_generated_key() -> None:
    """Without an idempotency_key the operation gets an id, sent on each attempt."""
    gw = gateway(stripe=stripe())
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(
            side_effect=[httpx.Response(429), httpx.Response(200, json=INTENT)]
        )
        await gw.payments.charge(Charge(amount=500, currency="eur", payment_method="pm_x"))
    await gw.aclose()

    keys = [call.request.headers["idempotency-key"] for call in route.calls]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert len(keys[0]) == 32


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    account = stripe_routes.mount(simulator, "/stripe")
    account.customers["cus_123"] = {"id": "cus_123", "object": "customer"}
    gw = gateway(stripe=stripe(simulator.url("/stripe")))
    result = await charge(gw, mode)
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "stripe")
    [intent] = account.payment_intents.values()
    assert intent["status"] == "succeeded"
    assert (intent["amount"], intent["currency"], intent["customer"]) == (1999, "usd", "cus_123")
    assert intent["metadata"] == {"order": "42", "tier": "gold"}
    assert result.value is not None
    assert result.value.message_id == intent["id"]
    [request] = simulator.requests(prefix="/stripe")
    assert request.idempotency_key == "order-42"


async def test_a_decline_reaches_the_caller_with_stripes_answer(
    simulator: Simulator, mode: str
) -> None:
    stripe_routes.mount(simulator, "/stripe")
    gw = gateway(stripe=stripe(simulator.url("/stripe")))
    declined = Charge(
        amount=1999, currency="usd", payment_method="pm_card_chargeDeclinedInsufficientFunds"
    )
    with pytest.raises(FatalError) as raised:
        await charge(gw, mode, declined)
    await gw.aclose()

    assert len(simulator.requests(prefix="/stripe")) == 1
    assert raised.value.response is not None
    error = raised.value.response.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "insufficient_funds",
    )


async def test_a_decline_names_its_code(simulator: Simulator, mode: str) -> None:
    stripe_routes.mount(simulator, "/stripe")
    gw = gateway(stripe=stripe(simulator.url("/stripe")))
    declined = Charge(
        amount=1999, currency="usd", payment_method="pm_card_chargeDeclinedInsufficientFunds"
    )
    with pytest.raises(FatalError, match="402 card_declined/insufficient_funds"):
        await charge(gw, mode, declined)
    await gw.aclose()


def _verdict(status: int, body: object, headers: dict[str, str] | None = None) -> Any:
    response = httpx.Response(status, json=body, headers=headers)
    default = Classifier().response(status, response.headers)
    return StripeAdapter().verdict(response, default)


def test_a_decline_keeps_fatal_with_its_codes() -> None:
    error = {"error": {"type": "card_error", "code": "card_declined", "decline_code": "lost_card"}}
    verdict = _verdict(402, error)
    assert (verdict.outcome, verdict.reason) == (Outcome.FATAL, "402 card_declined/lost_card")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 409])
@pytest.mark.parametrize("hint", [None, "true", "false"])
def test_an_answer_that_may_have_charged_stays_ambiguous(status: int, hint: str | None) -> None:
    """Stripe-Should-Retry says whether a retry helps, not that nothing happened: whatever it
    says, a 5xx or a 409 is never made safe to move to another processor."""
    headers = {"stripe-should-retry": hint} if hint else None
    body = {"error": {"type": "api_error", "message": "oops"}}
    assert _verdict(status, body, headers).outcome is Outcome.AMBIGUOUS


def test_a_rate_limit_stays_what_its_hints_say() -> None:
    """A 429 comes before anything executed: retried, or moved on at once when Stripe says a
    retry will not help."""
    body = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}
    assert _verdict(429, body).outcome is Outcome.RETRYABLE
    no_retry = {"stripe-should-retry": "false"}
    assert _verdict(429, body, no_retry).outcome is Outcome.FAILOVER


def test_a_payment_waiting_for_the_customer_is_no_charge() -> None:
    """3-D Secure pending: final (the customer must act), and never sent elsewhere."""
    pending = {**INTENT, "status": "requires_action"}
    assert _verdict(200, pending).outcome is Outcome.FATAL
    assert _verdict(200, INTENT).outcome is Outcome.OK
    assert _verdict(200, {**INTENT, "status": "processing"}).outcome is Outcome.OK


async def test_a_503_with_should_retry_false_stays_on_stripe(
    simulator: Simulator, mode: str
) -> None:
    account = stripe_routes.mount(simulator, "/stripe")
    answer = {"error": {"type": "api_error", "message": "unavailable"}}
    simulator.inject(
        Fault.status(503, json=answer, headers={"Stripe-Should-Retry": "false"}),
        prefix="/stripe",
        times=1,
    )
    gw = gateway(stripe=stripe(simulator.url("/stripe")))
    result = await charge(
        gw, mode, Charge(amount=1999, currency="usd", payment_method="pm_card_visa")
    )
    await gw.aclose()

    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert len(account.payment_intents) == 1
