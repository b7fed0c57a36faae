"""Cross-channel fallback: an SMS no SMS provider could deliver goes out as an email (and back),
only after the first channel was exhausted, and a retry of the same message is deduplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from providers import Email, Sms
from resilient import AmbiguousOutcome, ConfigError, InvalidRequest
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount

RETRY = {"attempts": 2, "backoff": "10ms..20ms"}


def config(sim: Simulator, **sms_capability: Any) -> dict[str, Any]:
    return {
        "providers": {
            "twilio": {
                "kind": "twilio",
                "api_key": "twilio-auth-token-5c1e",
                "account_sid": "AC123",
                "sender": "+15550001",
                "base_url": sim.url("/twilio"),
                "retry": RETRY,
                "timeout": "500ms",
            },
            "sendgrid": {
                "kind": "sendgrid",
                "api_key": "SG.key",
                "base_url": sim.url("/sendgrid"),
                "retry": RETRY,
            },
        },
        "capabilities": {
            "sms": {"chain": ["twilio"], **sms_capability},
            "email": {"chain": ["sendgrid"], "fallback": "sms", "fallback_sender": "Brand"},
        },
    }


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    yield simulator


@pytest.fixture
def gw(sim: Simulator) -> Iterator[Gateway]:
    cfg = config(sim, fallback="email", fallback_sender="alerts@example.com")
    with Gateway(settings_from_mapping(cfg), ops=False) as gateway:
        yield gateway


async def send(gw: Gateway, mode: str, facade: str, message: Any, **kwargs: Any) -> Any:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.capability(facade).send, message, **kwargs)
    return await gw.capability(facade).send(message, **kwargs)


async def test_sms_falls_back_to_email_when_every_sms_provider_failed(
    sim: Simulator, gw: Gateway, mode: str
) -> None:
    twilio, sendgrid = (
        mount(sim, "twilio", prefix="/twilio"),
        mount(sim, "sendgrid", prefix="/sendgrid"),
    )
    sim.inject(Fault.status(503), prefix="/twilio")
    sms = Sms(to="+15550100", body="Your code is 1234\nIt expires in 10 minutes")
    result = await send(gw, mode, "sms", sms, fallback_to="ada@example.com")
    assert result.status == "delivered" and result.provider == "sendgrid"
    assert [a.provider for a in result.attempts] == ["twilio", "twilio", "sendgrid"]
    ((_, mail),) = sendgrid.sent
    assert mail["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert mail["from"]["email"] == "alerts@example.com"
    assert mail["subject"] == "Your code is 1234"
    assert mail["content"][0]["value"] == sms.body
    assert not twilio.messages


async def test_email_falls_back_to_sms_adapted_to_what_sms_carries(
    sim: Simulator, gw: Gateway, mode: str
) -> None:
    twilio = mount(sim, "twilio", prefix="/twilio")
    mount(sim, "sendgrid", prefix="/sendgrid")
    sim.inject(Fault.status(503), prefix="/sendgrid")
    email = Email(
        sender="no-reply@example.com",
        to=["ada@example.com"],
        subject="Your order shipped",
        html="<p>Track it <b>here</b>:&nbsp;https://x.io/t/1</p>",
    )
    result = await send(gw, mode, "email", email, fallback_to="+15550100")
    assert result.status == "delivered" and result.provider == "twilio"
    (message,) = twilio.messages.values()
    assert message["to"] == "+15550100" and message["from"] == "Brand"
    assert message["body"] == "Your order shipped\nTrack it here : https://x.io/t/1"


async def test_no_fallback_after_an_outcome_that_may_have_delivered(
    sim: Simulator, gw: Gateway, mode: str
) -> None:
    sendgrid = mount(sim, "sendgrid", prefix="/sendgrid")
    mount(sim, "twilio", prefix="/twilio")
    sim.inject(Fault.reset(after_effect=True), prefix="/twilio")
    with pytest.raises(AmbiguousOutcome):
        await send(gw, mode, "sms", Sms(to="+15550100", body="code 1"), fallback_to="a@x.io")
    assert not sendgrid.sent  # it may have reached the phone: no email on top


async def test_a_retry_after_a_fallback_delivery_is_deduplicated(
    sim: Simulator, gw: Gateway, mode: str
) -> None:
    sendgrid = mount(sim, "sendgrid", prefix="/sendgrid")
    mount(sim, "twilio", prefix="/twilio")
    outage = sim.inject(Fault.status(503), prefix="/twilio")
    sms = Sms(to="+15550100", body="code 7", idempotency_key="otp-7")
    first = await send(gw, mode, "sms", sms, fallback_to="ada@example.com")
    outage.clear()  # the SMS provider is back: the retry must still not send again
    again = await send(gw, mode, "sms", sms, fallback_to="ada@example.com")
    assert again.status == "delivered" and again.value.deduplicated
    assert again.value.message_id == first.value.message_id
    assert len(sendgrid.sent) == 1 and not sim.requests(prefix="/twilio")[2:]


async def test_without_fallback_to_nothing_changes(sim: Simulator, gw: Gateway, mode: str) -> None:
    sendgrid = mount(sim, "sendgrid", prefix="/sendgrid")
    mount(sim, "twilio", prefix="/twilio")
    sim.inject(Fault.status(503), prefix="/twilio")
    with pytest.raises(Exception, match="no provider could serve"):
        await send(gw, mode, "sms", Sms(to="+15550100", body="code 2"))
    assert not sendgrid.sent


def test_fallback_needs_config_and_a_recipient_that_fits(sim: Simulator) -> None:
    unset = Gateway(settings_from_mapping(config(sim)), ops=False)
    with unset, pytest.raises(InvalidRequest, match="no fallback channel"):
        unset.sync.sms.send(Sms(to="+15550100", body="x"), fallback_to="a@x.io")
    with (
        Gateway(
            settings_from_mapping(config(sim, fallback="email", fallback_sender="a@x.io"))
        ) as gw,
        pytest.raises(InvalidRequest, match="email address"),
    ):
        gw.sync.sms.send(Sms(to="+15550100", body="x"), fallback_to="not-an-address")
    assert not sim.requests()  # rejected before anything was sent
    with pytest.raises(ConfigError, match="fallback_sender"):
        settings_from_mapping(config(sim, fallback="email"))
    with pytest.raises(ConfigError, match="other channel"):
        settings_from_mapping(config(sim, fallback="sms"))
