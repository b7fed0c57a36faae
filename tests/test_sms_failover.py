"""gw.sms along a twilio -> vonage chain on the simulator: an SMS fails over only when Twilio
definitely did not take it, never after an outcome that may have sent it, and the dedupe ledger
keeps a repeat of the same operation from sending twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from providers import Sms
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome
from resilient.gateway import Gateway
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import twilio as twilio_routes
from resilient.testing.routes import vonage as vonage_routes
from resilient.testing.routes.twilio import TwilioState
from resilient.testing.routes.vonage import VonageState

SMS = Sms(to="+15550100", body="Your code is 1234", sender="+15550001", idempotency_key="otp-7")


@pytest.fixture
def accounts(simulator: Simulator) -> tuple[TwilioState, VonageState]:
    return twilio_routes.mount(simulator, "/twilio"), vonage_routes.mount(simulator, "/vonage")


def gateway(sim: Simulator) -> Gateway:
    retry = {"attempts": 2, "backoff": "10ms..20ms"}
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "twilio": {
                        "kind": "twilio",
                        "api_key": "auth-token",
                        "account_sid": "AC123",
                        "base_url": sim.url("/twilio"),
                        "timeout": "500ms",
                        "retry": retry,
                    },
                    "vonage": {
                        "kind": "vonage",
                        "api_key": "abcd1234",
                        "api_secret": "s3cr3t",
                        "base_url": sim.url("/vonage"),
                        "retry": retry,
                    },
                },
                "capabilities": {"sms": {"chain": ["twilio", "vonage"]}},
            }
        )
    )


async def send(gw: Gateway, mode: str, sms: Sms = SMS) -> Result[Any]:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.sms.send, sms)
    return await gw.sms.send(sms)  # type: ignore[no-any-return]


async def test_a_503_fails_over_to_vonage(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], mode: str
) -> None:
    """A 503 says Twilio took nothing: retried there, then sent through Vonage, once."""
    twilio, vonage = accounts
    simulator.inject(Fault.status(503), prefix="/twilio")
    gw = gateway(simulator)
    result = await send(gw, mode)
    await gw.aclose()

    assert result.status == "delivered"
    assert result.provider == "vonage"
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("twilio", Outcome.RETRYABLE),
        ("twilio", Outcome.RETRYABLE),
        ("vonage", Outcome.OK),
    ]
    assert twilio.messages == {}
    assert len(vonage.messages) == 1
    assert result.value is not None
    assert result.value.message_id == vonage.messages[0]["message-id"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.reset(after_effect=True),  # Twilio created the message, then the connection broke
        Fault.hang(after_effect=True),  # created it, then no answer within the attempt timeout
        Fault.status(500),  # an error that may come after the message was queued
    ],
    ids=["reset-after-effect", "hang", "500"],
)
async def test_never_sent_elsewhere_after_an_ambiguous_outcome(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], mode: str, fault: Fault
) -> None:
    twilio, vonage = accounts
    simulator.inject(fault, prefix="/twilio")
    gw = gateway(simulator)
    with pytest.raises(AmbiguousOutcome) as raised:
        await send(gw, mode)

    # a message with no idempotency key is never repeated blind: Twilio is asked what it did
    # (failing as it is, it cannot say), and nothing goes anywhere else
    assert [a.provider for a in raised.value.attempts] == ["twilio", "twilio"]
    assert raised.value.attempts[-1].reason.startswith("lookup: ")
    assert simulator.requests(prefix="/vonage") == []
    assert vonage.messages == []

    # the ledger remembers: a repeat asks Twilio again, now answered, and the message is sent
    # at most once in all (found there if it was created, else sent there now)
    simulator.clear_faults()
    again = await send(gw, mode)
    await gw.aclose()
    [message] = twilio.messages.values()
    assert (again.status, again.provider) == ("delivered", "twilio")
    assert again.value.message_id == message["sid"]
    assert simulator.requests(prefix="/vonage") == []


async def test_a_repeat_after_delivery_is_served_from_the_ledger(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], mode: str
) -> None:
    twilio, _ = accounts
    gw = gateway(simulator)
    first = await send(gw, mode)
    again = await send(gw, mode)
    await gw.aclose()

    assert first.value is not None
    assert again.value is not None
    assert again.status == "delivered"
    assert again.attempts == ()
    assert (again.value.provider, again.value.deduplicated) == ("twilio", True)
    assert again.value.message_id == first.value.message_id
    assert len(twilio.messages) == 1
    assert len(simulator.requests()) == 1
