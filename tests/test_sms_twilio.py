"""Twilio SMS adapter: the Messages API wire format (SMS and WhatsApp), its config, its reading of
Twilio's error codes, and gw.sms end to end on the simulated Twilio."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from providers import Sms
from providers.sms.twilio import TwilioAdapter
from resilient.errors import ChainExhausted, FatalError, ResilientError
from resilient.gateway import Gateway
from resilient.policy.classify import Classifier
from resilient.policy.outcome_class import Outcome
from resilient.settings import ProviderSettings
from resilient.testing import Fault, Simulator
from resilient.testing.routes import twilio as twilio_routes
from resilient.testing.routes import vonage as vonage_routes
from tests.conftest import capability_gateway, provider_table
from tests.conftest import send_message as send


def gateway(chain: list[str], **providers: dict[str, Any]) -> Gateway:
    return capability_gateway("sms", chain, **providers)


SMS = Sms(to="+15550100", body="Your code is 1234", sender="+15550001")
ANSWER = {"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}
MESSAGES = "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"


def twilio(base_url: str | None = None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "api_key": "auth-token",
        "account_sid": "AC123",
    }
    return provider_table("twilio", base_url, **{**defaults, **options})


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


async def test_wire_format_is_a_form_with_basic_auth() -> None:
    """POST to the account's Messages.json, Basic AccountSid:AuthToken, To/From/Body."""
    gw = gateway(["twilio"], twilio=twilio())
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(MESSAGES).mock(return_value=httpx.Response(201, json=ANSWER))
        result = await gw.sms.send(SMS)
    await gw.aclose()

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == (
        "Basic " + base64.b64encode(b"AC123:auth-token").decode()
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "idempotency-key" not in request.headers  # Twilio has none to honour
    assert form(request) == {
        "To": ["+15550100"],
        "From": ["+15550001"],
        "Body": ["Your code is 1234"],
    }
    assert result.value is not None
    assert result.value.message_id == ANSWER["sid"]


async def test_whatsapp_prefixes_both_numbers() -> None:
    gw = gateway(["twilio"], twilio=twilio())
    sms = Sms(to="+15550100", body="hi", sender="+15550001", channel="whatsapp")
    prefixed = Sms(to="+15550100", body="hi", sender="whatsapp:+15550001", channel="whatsapp")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(MESSAGES).mock(return_value=httpx.Response(201, json=ANSWER))
        await gw.sms.send(sms)
        first = form(route.calls.last.request)
        await gw.sms.send(prefixed)
        second = form(route.calls.last.request)
    await gw.aclose()

    assert first["To"] == second["To"] == ["whatsapp:+15550100"]
    assert first["From"] == second["From"] == ["whatsapp:+15550001"]


async def test_a_message_without_a_sender_names_the_missing_config() -> None:
    """Twilio needs a From; a provider that cannot say who sends is misconfigured, said clearly
    before anything is sent."""
    gw = gateway(["twilio"], twilio=twilio())
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(MESSAGES)
        with pytest.raises(ResilientError, match="no sender"):
            await gw.sms.send(Sms(to="+15550100", body="hi"))
    await gw.aclose()
    assert not route.called


async def test_the_configured_sender_is_the_default_from() -> None:
    gw = gateway(["twilio"], twilio=twilio(sender="+15550002"))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(MESSAGES).mock(return_value=httpx.Response(201, json=ANSWER))
        await gw.sms.send(Sms(to="+15550100", body="hi"))
        await gw.sms.send(SMS)
    await gw.aclose()
    assert [form(call.request)["From"] for call in route.calls] == [["+15550002"], ["+15550001"]]


def test_account_sid_is_required_to_send() -> None:
    adapter = TwilioAdapter(ProviderSettings(name="twilio", kind="twilio"))
    gw = gateway(["twilio"], twilio=twilio())
    with pytest.raises(ResilientError, match="account_sid"):
        adapter.build(SMS, gw.provider("twilio"), "op-1")
    gw.close()


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    account = twilio_routes.mount(simulator, "/twilio")
    gw = gateway(["twilio"], twilio=twilio(simulator.url("/twilio")))
    result = await send(gw, mode, SMS)
    await gw.aclose()

    assert result.status == "delivered"
    assert result.provider == "twilio"
    [message] = account.messages.values()
    assert (message["to"], message["from"], message["body"]) == (SMS.to, SMS.sender, SMS.body)
    assert result.value is not None
    assert result.value.message_id == message["sid"]


async def test_a_refused_recipient_is_fatal(simulator: Simulator, mode: str) -> None:
    """Twilio refusing the message itself (an invalid To, 21211) is final: no retry, no other
    provider, FatalError carrying Twilio's answer."""
    twilio_routes.mount(simulator, "/twilio")
    refusal = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
    simulator.inject(Fault.status(400, json=refusal), prefix="/twilio")
    gw = gateway(["twilio"], twilio=twilio(simulator.url("/twilio")))
    with pytest.raises(FatalError) as raised:
        await send(gw, mode, SMS)
    await gw.aclose()

    assert len(simulator.requests(prefix="/twilio")) == 1
    assert raised.value.response is not None
    assert raised.value.response.json()["code"] == 21211


async def test_a_sender_twilio_refuses_is_not_fatal(simulator: Simulator, mode: str) -> None:
    """An invalid From (21212) is this provider's configuration, not the message: the chain moves
    on (here it has no other provider, so it is exhausted rather than fatal)."""
    twilio_routes.mount(simulator, "/twilio")
    gw = gateway(["twilio"], twilio=twilio(simulator.url("/twilio")))
    with pytest.raises(ChainExhausted, match="400 21212"):
        await send(gw, mode, Sms(to="+15550100", body="hi", sender="not a number!"))
    await gw.aclose()


def _verdict(status: int, body: dict[str, Any]) -> tuple[Outcome, str]:
    response = httpx.Response(status, json=body)
    default = Classifier().response(status, response.headers)
    adapter = TwilioAdapter(ProviderSettings(name="twilio", kind="twilio"))
    verdict = adapter.verdict(response, default)
    return verdict.outcome, verdict.reason


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (21608, Outcome.FAILOVER),  # trial account: To not verified
        (21606, Outcome.FAILOVER),  # From is not this account's number
        (21211, Outcome.FATAL),  # invalid To: every provider refuses it
        (21610, Outcome.FATAL),  # the recipient unsubscribed: never route around an opt-out
    ],
)
def test_error_codes_about_the_account_fail_over(code: int, outcome: Outcome) -> None:
    assert _verdict(400, {"code": code, "message": "x", "status": 400}) == (outcome, f"400 {code}")


def test_answers_without_a_code_keep_the_status_verdict() -> None:
    assert _verdict(201, ANSWER) == (Outcome.OK, "201")
    assert _verdict(503, {"message": "unavailable"}) == (Outcome.RETRYABLE, "503")


async def test_a_trial_account_refusal_fails_over(simulator: Simulator, mode: str) -> None:
    """Error 21608 says this Twilio account may not text that number: the next provider may."""
    twilio_routes.mount(simulator, "/twilio")
    vonage = vonage_routes.mount(simulator, "/vonage")
    refusal = {"code": 21608, "message": "The number is unverified.", "status": 400}
    simulator.inject(Fault.status(400, json=refusal), prefix="/twilio")
    gw = gateway(
        ["twilio", "vonage"],
        twilio=twilio(simulator.url("/twilio")),
        vonage={
            "kind": "vonage",
            "api_key": "key",
            "api_secret": "secret",
            "base_url": simulator.url("/vonage"),
        },
    )
    result = await send(gw, mode, SMS)
    await gw.aclose()

    assert result.provider == "vonage"
    assert [a.reason for a in result.attempts] == ["400 21608", "200"]
    assert len(vonage.messages) == 1
