"""gw.payments along a stripe -> paypal chain on the simulator: a charge never reaches PayPal
after an outcome that may have charged on Stripe, fails over only when Stripe provably did
nothing, a decline is final, and a repeat of a delivered charge sends nothing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from providers import Charge
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ChainExhausted, FatalError
from resilient.gateway import Gateway
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import paypal as paypal_routes
from resilient.testing.routes import stripe as stripe_routes
from resilient.testing.routes.paypal import PayPalState
from resilient.testing.routes.stripe import StripeState

CHARGE = Charge(
    amount=1999,
    currency="usd",
    payment_method="pm_card_visa",
    idempotency_key="order-42",
    metadata={"order": "42"},
)
API_ERROR = {"error": {"type": "api_error", "message": "An unknown error occurred"}}
KEY_IN_USE = {
    "error": {
        "type": "idempotency_error",
        "code": "idempotency_key_in_use",
        "message": "There is currently another in-progress request using this Idempotency Key.",
    }
}
RATE_LIMITED = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}


@pytest.fixture
def accounts(simulator: Simulator) -> tuple[StripeState, PayPalState]:
    return stripe_routes.mount(simulator, "/stripe"), paypal_routes.mount(simulator, "/paypal")


def closed_port() -> str:
    """The URL of a loopback port nobody listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def gateway(sim: Simulator, stripe_url: str | None = None) -> Gateway:
    retry = {"attempts": 2, "backoff": "10ms..20ms"}
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "stripe": {
                        "kind": "stripe",
                        "api_key": "sk_test_123",
                        "base_url": stripe_url or sim.url("/stripe"),
                        "timeout": "500ms",
                        "retry": retry,
                    },
                    "paypal": {
                        "kind": "paypal",
                        "client_id": "client-1",
                        "api_key": "pp-secret",
                        "base_url": sim.url("/paypal"),
                        "retry": retry,
                    },
                },
                "capabilities": {"payments": {"chain": ["stripe", "paypal"]}},
            }
        )
    )


async def charge(gw: Gateway, mode: str, model: Charge = CHARGE) -> Result[Any]:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.payments.charge, model)
    return await gw.payments.charge(model)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fault", "times"),
    [
        # Stripe charged, then the connection broke: the retry gets Stripe's saved answer
        pytest.param(Fault.reset(after_effect=True), 1, id="reset-after-charging"),
        pytest.param(Fault.reset(after_effect=True), None, id="reset-every-time"),
        # Stripe charged, then went silent past the attempt timeout
        pytest.param(Fault.hang(after_effect=True), 1, id="hang-after-charging"),
        pytest.param(Fault.hang(), None, id="hang-every-time"),
        pytest.param(Fault.status(500, json=API_ERROR), None, id="500"),
        # the default table would retry a 503 and then fail over: Stripe's rule keeps it here
        pytest.param(Fault.status(503, json=API_ERROR), None, id="503"),
        pytest.param(Fault.status(409, json=KEY_IN_USE), None, id="409-key-in-use"),
        # "a retry would be a no-op" is no proof that nothing happened
        pytest.param(
            Fault.status(503, json=API_ERROR, headers={"Stripe-Should-Retry": "false"}),
            None,
            id="503-should-retry-false",
        ),
        pytest.param(
            Fault.status(500, json=API_ERROR, headers={"Stripe-Should-Retry": "true"}),
            None,
            id="500-should-retry-true",
        ),
    ],
)
async def test_never_reaches_paypal_after_an_ambiguous_stripe_outcome(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    mode: str,
    fault: Fault,
    times: int | None,
) -> None:
    stripe, paypal = accounts
    simulator.inject(fault, prefix="/stripe", times=times)
    gw = gateway(simulator)
    if times is None:
        with pytest.raises(AmbiguousOutcome) as raised:
            await charge(gw, mode)
        attempts = raised.value.attempts
    else:
        result = await charge(gw, mode)
        attempts = result.attempts
        [intent] = stripe.payment_intents.values()
        assert (result.provider, result.value.message_id) == ("stripe", intent["id"])
    await gw.aclose()

    # retried on Stripe only, as its key makes a repeat safe, with the same key every time (a
    # request cut at the attempt timeout may not have reached the simulator on a busy machine)
    assert [a.provider for a in attempts] == ["stripe", "stripe"]
    assert attempts[0].outcome is Outcome.AMBIGUOUS
    sent = simulator.requests(prefix="/stripe")
    assert 1 <= len(sent) <= 2
    assert {r.idempotency_key for r in sent} == {"order-42"}
    assert len(stripe.payment_intents) <= 1
    assert simulator.requests(prefix="/paypal") == []
    assert paypal.orders == {}


async def test_the_ledger_keeps_a_repeat_on_stripe(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], mode: str
) -> None:
    """After an ambiguous outcome the operation may only go back to Stripe, with its key: not
    even an answer that would normally fail over sends the repeat to PayPal."""
    stripe, _ = accounts
    simulator.inject(Fault.reset(after_effect=True), prefix="/stripe")
    gw = gateway(simulator)
    with pytest.raises(AmbiguousOutcome):
        await charge(gw, mode)

    simulator.clear_faults()
    refusal = Fault.status(429, json=RATE_LIMITED, headers={"Stripe-Should-Retry": "false"})
    simulator.inject(refusal, prefix="/stripe")
    with pytest.raises(ChainExhausted) as raised:
        await charge(gw, mode)
    assert {a.provider for a in raised.value.attempts} == {"stripe"}

    simulator.clear_faults()
    result = await charge(gw, mode)
    await gw.aclose()

    [intent] = stripe.payment_intents.values()  # the first attempt's charge, replayed
    assert (result.provider, result.value.message_id) == ("stripe", intent["id"])
    assert {r.idempotency_key for r in simulator.requests(prefix="/stripe")} == {"order-42"}
    assert simulator.requests(prefix="/paypal") == []


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(None, id="connection-refused"),
        # Stripe's rate limiting runs before its idempotency layer: nothing executed
        pytest.param(Fault.status(429, json=RATE_LIMITED), id="429"),
        pytest.param(
            Fault.status(429, json=RATE_LIMITED, headers={"Stripe-Should-Retry": "false"}),
            id="429-should-retry-false",
        ),
    ],
)
async def test_fails_over_to_paypal_when_stripe_provably_did_nothing(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    mode: str,
    refusal: Fault | None,
) -> None:
    stripe, paypal = accounts
    if refusal is not None:
        simulator.inject(refusal, prefix="/stripe")
    gw = gateway(simulator, stripe_url=closed_port() if refusal is None else None)
    result = await charge(gw, mode)
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "paypal")
    assert stripe.payment_intents == {}
    [order] = paypal.orders.values()
    assert order["status"] == "COMPLETED"
    assert result.value.message_id == order["id"]
    [sent] = simulator.requests(path="/paypal/v2/checkout/orders")
    assert sent.headers["paypal-request-id"] == "order-42"
    assert [a.provider for a in result.attempts][-1] == "paypal"
    assert {a.outcome for a in result.attempts if a.provider == "stripe"} <= {
        Outcome.RETRYABLE,
        Outcome.FAILOVER,
    }


async def test_a_card_decline_is_final(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], mode: str
) -> None:
    """No retry, no PayPal, FatalError with Stripe's answer; a repeat gets the same decline
    (Stripe replays it for the key), never a charge elsewhere."""
    stripe, _ = accounts
    declined = Charge(
        amount=1999,
        currency="usd",
        payment_method="pm_card_chargeDeclined",
        idempotency_key="order-43",
    )
    gw = gateway(simulator)
    for _ in range(2):
        with pytest.raises(FatalError) as raised:
            await charge(gw, mode, declined)
        assert raised.value.response is not None
        assert raised.value.response.json()["error"]["decline_code"] == "generic_decline"
        assert [a.status_code for a in raised.value.attempts] == [402]
    await gw.aclose()

    assert len(simulator.requests(prefix="/stripe")) == 2
    assert simulator.requests(prefix="/paypal") == []
    [intent] = stripe.payment_intents.values()
    assert intent["status"] == "requires_payment_method"


async def test_a_repeat_after_success_sends_nothing(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], mode: str
) -> None:
    stripe, _ = accounts
    gw = gateway(simulator)
    first = await charge(gw, mode)
    again = await charge(gw, mode)
    await gw.aclose()

    assert again.status == "delivered"
    assert again.attempts == ()
    assert (again.value.provider, again.value.deduplicated) == ("stripe", True)
    assert again.value.message_id == first.value.message_id
    assert len(stripe.payment_intents) == 1
    assert len(simulator.requests()) == 1


async def test_a_repeat_of_a_paypal_charge_sends_nothing(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], mode: str
) -> None:
    _, paypal = accounts
    gw = gateway(simulator, stripe_url=closed_port())
    first = await charge(gw, mode)
    sent = len(simulator.requests())
    again = await charge(gw, mode)
    await gw.aclose()

    assert first.provider == "paypal"
    assert (again.value.provider, again.value.deduplicated) == ("paypal", True)
    assert again.value.message_id == first.value.message_id
    assert len(paypal.orders) == 1
    assert len(simulator.requests()) == sent
