"""Vonage SMS adapter: the SMS API wire format (form, unicode, client-ref), its config, how a
200 that refused the message is read (per-part `status`), and gw.sms end to end on the
simulated Vonage."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from providers import Sms
from providers.sms.vonage import VonageAdapter
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ConfigError, FatalError, ResilientError
from resilient.gateway import Gateway
from resilient.policy.classify import Classifier
from resilient.policy.outcome_class import Outcome
from resilient.settings import ProviderSettings
from resilient.testing import Simulator
from resilient.testing.routes import twilio as twilio_routes
from resilient.testing.routes import vonage as vonage_routes
from tests.conftest import capability_gateway, provider_table
from tests.conftest import send_message as send


def gateway(chain: list[str], **providers: dict[str, Any]) -> Gateway:
    return capability_gateway("sms", chain, **providers)


SMS = Sms(to="+447700900000", body="Your code is 1234", idempotency_key="op-42")
URL = "https://rest.nexmo.com/sms/json"
ACCEPTED = {
    "message-count": "1",
    "messages": [
        {
            "to": "447700900000",
            "message-id": "0A0000000123ABCD1",
            "status": "0",
            "remaining-balance": "3.14159265",
            "message-price": "0.03330000",
            "network": "12345",
        }
    ],
}


def vonage(base_url: str | None = None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "api_key": "abcd1234",
        "api_secret": "s3cr3t-value",
        "sender": "AcmeInc",
    }
    return provider_table("vonage", base_url, **{**defaults, **options})


def twilio(base_url: str) -> dict[str, Any]:
    return {
        "kind": "twilio",
        "api_key": "auth-token",
        "account_sid": "AC123",
        "base_url": base_url,
        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
    }


async def sent_form(sms: Sms, **options: Any) -> dict[str, str]:
    """The form fields gw.sms.send(sms) posts to Vonage's SMS API."""
    gw = gateway(["vonage"], vonage=vonage(**options))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=ACCEPTED))
        await gw.sms.send(sms)
    await gw.aclose()
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers  # the key and secret travel in the body
    return {key: values[-1] for key, values in parse_qs(request.content.decode()).items()}


async def test_wire_format_is_a_form_with_key_and_secret() -> None:
    assert await sent_form(SMS) == {
        "api_key": "abcd1234",
        "api_secret": "s3cr3t-value",
        "from": "AcmeInc",
        "to": "447700900000",  # E.164 without the "+", as Vonage wants it
        "text": "Your code is 1234",
        "client-ref": "op-42",  # the operation id, for reconciling with delivery receipts
    }


async def test_a_sender_on_the_message_wins_and_loses_its_plus() -> None:
    fields = await sent_form(Sms(to="+447700900000", body="hi", sender="+447700900001"))
    assert fields["from"] == "447700900001"


@pytest.mark.parametrize(
    ("body", "unicode"),
    [
        ("Plain GSM text: @£$¥ èé ÄÖ ß", False),
        ("The GSM extension table: €[]{}^~|\\", False),
        ("Привет, мир", True),
        ("code 1234 👍", True),
        ("a tab\there", True),
    ],
)
async def test_text_outside_the_gsm_alphabet_is_sent_as_unicode(body: str, unicode: bool) -> None:
    fields = await sent_form(Sms(to="+447700900000", body=body))
    assert fields.get("type") == ("unicode" if unicode else None)
    assert fields["text"] == body


async def test_a_long_operation_id_is_not_sent_as_client_ref() -> None:
    """client-ref holds 40 characters: a longer id is left out rather than refused."""
    fields = await sent_form(Sms(to="+447700900000", body="hi", idempotency_key="k" * 41))
    assert "client-ref" not in fields


def test_the_api_secret_is_required_and_never_printed() -> None:
    with pytest.raises(ConfigError, match="api_secret") as raised:
        settings_from_mapping({"providers": {"vonage": {"kind": "vonage", "api_key": "abcd1234"}}})
    assert "s3cr3t" not in str(raised.value)
    settings = settings_from_mapping({"providers": {"vonage": vonage()}})
    assert "s3cr3t-value" not in repr(settings)


async def test_whatsapp_is_not_sent_as_sms() -> None:
    """The SMS API cannot carry WhatsApp: said plainly, nothing sent."""
    gw = gateway(["vonage"], vonage=vonage())
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(URL)
        with pytest.raises(ResilientError, match="SMS only"):
            await gw.sms.send(Sms(to="+447700900000", body="hi", channel="whatsapp"))
    await gw.aclose()
    assert not route.called


async def test_a_message_without_any_sender_names_the_missing_config() -> None:
    table = vonage()
    del table["sender"]
    gw = gateway(["vonage"], vonage=table)
    with pytest.raises(ResilientError, match="no sender"):
        await gw.sms.send(Sms(to="+447700900000", body="hi"))
    await gw.aclose()


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    account = vonage_routes.mount(simulator, "/vonage")
    gw = gateway(["vonage"], vonage=vonage(simulator.url("/vonage")))
    result = await send(gw, mode, SMS)
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "vonage")
    [message] = account.messages
    assert (message["to"], message["from"], message["text"]) == (
        "447700900000",
        "AcmeInc",
        SMS.body,
    )
    assert message["client-ref"] == "op-42"
    assert result.value is not None
    assert result.value.message_id == message["message-id"]


def _verdict(status: int, body: object) -> tuple[Outcome, str]:
    response = httpx.Response(status, json=body)
    default = Classifier().response(status, response.headers)
    verdict = VonageAdapter(ProviderSettings(name="vonage", kind="vonage")).verdict(
        response, default
    )
    return verdict.outcome, verdict.reason


def _parts(*statuses: int) -> dict[str, Any]:
    return {
        "message-count": str(len(statuses)),
        "messages": [
            {"status": str(s), "message-id": f"id{i}"}
            if s == 0
            else {"status": str(s), "error-text": f"error {s}"}
            for i, s in enumerate(statuses)
        ],
    }


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (1, Outcome.RETRYABLE),  # throttled
        (5, Outcome.RETRYABLE),  # internal error: not accepted
        (2, Outcome.FATAL),  # missing parameters
        (7, Outcome.FATAL),  # number barred: never route around it
        (4, Outcome.FAILOVER),  # our credentials
        (9, Outcome.FAILOVER),  # out of credit
        (15, Outcome.FAILOVER),  # this provider refuses our sender id
        (99, Outcome.FAILOVER),  # undocumented: still not accepted
    ],
)
def test_a_refused_message_is_read_from_its_status(status: int, outcome: Outcome) -> None:
    assert _verdict(200, _parts(status)) == (
        outcome,
        f"200 vonage status {status} (error {status})",
    )


def test_accepted_parts_are_a_success() -> None:
    assert _verdict(200, _parts(0, 0)) == (Outcome.OK, "200")


def test_a_partly_accepted_message_is_ambiguous() -> None:
    """Part of it reached the recipient: resending anywhere would repeat that part."""
    assert _verdict(200, _parts(0, 9))[0] is Outcome.AMBIGUOUS


def test_an_answer_without_parts_is_ambiguous() -> None:
    assert _verdict(200, {"unexpected": True}) == (Outcome.AMBIGUOUS, "200 no parts")


def test_http_errors_keep_the_status_verdict() -> None:
    assert _verdict(503, {}) == (Outcome.RETRYABLE, "503")
    assert _verdict(401, {}) == (Outcome.FAILOVER, "401")


async def test_a_throttled_message_is_retried(simulator: Simulator, mode: str) -> None:
    account = vonage_routes.mount(simulator, "/vonage")
    account.answer_with(1)
    gw = gateway(["vonage"], vonage=vonage(simulator.url("/vonage")))
    result = await send(gw, mode, SMS)
    await gw.aclose()

    assert [a.outcome for a in result.attempts] == [Outcome.RETRYABLE, Outcome.OK]
    assert len(account.messages) == 1
    assert result.value is not None
    assert result.value.message_id == account.messages[0]["message-id"]


async def test_a_barred_number_is_fatal(simulator: Simulator, mode: str) -> None:
    account = vonage_routes.mount(simulator, "/vonage")
    account.answer_with(7)
    twilio_routes.mount(simulator, "/twilio")
    gw = gateway(
        ["vonage", "twilio"],
        vonage=vonage(simulator.url("/vonage")),
        twilio=twilio(simulator.url("/twilio")),
    )
    with pytest.raises(FatalError, match="vonage status 7"):
        await send(gw, mode, SMS)
    await gw.aclose()
    assert simulator.requests(prefix="/twilio") == []


async def test_no_credit_fails_over(simulator: Simulator, mode: str) -> None:
    account = vonage_routes.mount(simulator, "/vonage")
    account.answer_with(9)
    twilio_account = twilio_routes.mount(simulator, "/twilio")
    gw = gateway(
        ["vonage", "twilio"],
        vonage=vonage(simulator.url("/vonage")),
        twilio=twilio(simulator.url("/twilio")),
    )
    result = await send(gw, mode, Sms(to="+447700900000", body="hi", sender="+447700900001"))
    await gw.aclose()

    assert result.provider == "twilio"
    assert account.messages == []
    assert len(twilio_account.messages) == 1


async def test_a_partly_sent_message_is_never_sent_elsewhere(
    simulator: Simulator, mode: str
) -> None:
    account = vonage_routes.mount(simulator, "/vonage")
    account.answer_with(0, 9)  # first part accepted, second refused
    twilio_routes.mount(simulator, "/twilio")
    gw = gateway(
        ["vonage", "twilio"],
        vonage=vonage(simulator.url("/vonage")),
        twilio=twilio(simulator.url("/twilio")),
    )
    with pytest.raises(AmbiguousOutcome):
        await send(gw, mode, Sms(to="+447700900000", body="x" * 200, sender="+447700900001"))
    await gw.aclose()

    assert len(simulator.requests(prefix="/vonage")) == 1
    assert simulator.requests(prefix="/twilio") == []
