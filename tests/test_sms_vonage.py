"""Vonage SMS adapter: the SMS API wire format (form, unicode, client-ref), its config, how a
200 that refused the message is read (per-part `status`), and gw.sms end to end on the
simulated Vonage."""

from __future__ import annotations

import base64
import calendar
import time
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
from resilient.lookup import DONE, UNKNOWN
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

    assert len(simulator.requests(method="POST", prefix="/vonage")) == 1  # the lookup is a GET
    assert simulator.requests(prefix="/twilio") == []


SMS_JSON = "/vonage/sms/json"
RECORDS = "/vonage/v2/reports/records"


def reconciling_gateway(base_url: str | None = None) -> Gateway:
    """One attempt that times out fast, and a call long enough to ask Vonage afterwards."""
    table = {**vonage(base_url), "timeout": "500ms", "retry": {"attempts": 1}}
    return Gateway(
        settings_from_mapping(
            {
                "providers": {"vonage": table},
                "capabilities": {"sms": {"chain": ["vonage"], "timeout": "10s"}},
            }
        )
    )


def record(client_ref: str | None = "op-42", **fields: Any) -> dict[str, Any]:
    """An outbound SMS record as the Reports API lists it."""
    return {
        "account_id": "abcd1234",
        "message_id": "0A0000000123ABCD1",
        "client_ref": client_ref,
        "direction": "outbound",
        "from": "AcmeInc",
        "to": "447700900000",
        "date_received": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
        "status": "accepted",
        **fields,
    }


def _utc(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


async def test_the_lookup_asks_the_reports_api_for_records_to_the_recipient() -> None:
    """A send that timed out is looked up in the synchronous Reports API: Basic auth, the key as
    account_id, outbound SMS to our recipient since the claim less the clock skew; the record
    carrying our client-ref gives the message id."""
    gw = reconciling_gateway()
    page = {"request_status": "SUCCESS", "items_count": 2, "records": [record("other"), record()]}
    started = time.time()
    with respx.mock(assert_all_called=True) as mock:
        mock.post(URL).mock(side_effect=httpx.ReadTimeout("no answer"))
        lookup = mock.get("https://api.nexmo.com/v2/reports/records").mock(
            return_value=httpx.Response(200, json=page)
        )
        result = await gw.sms.send(SMS)
    await gw.aclose()

    request = lookup.calls.last.request
    token = base64.b64encode(b"abcd1234:s3cr3t-value").decode()
    assert request.headers["authorization"] == f"Basic {token}"
    params = dict(request.url.params)
    start, end = _utc(params.pop("date_start")), _utc(params.pop("date_end"))
    assert params == {
        "account_id": "abcd1234",
        "product": "SMS",
        "direction": "outbound",
        "to": "447700900000",
    }
    assert started - 300 - 1 <= start <= time.time() - 300
    assert started + 300 <= end <= time.time() + 300 + 1
    assert (result.status, result.value.message_id) == ("delivered", "0A0000000123ABCD1")
    assert result.attempts[-1].reason == "lookup: found 0A0000000123ABCD1"


def _found(records: Any, body: str = SMS.body, since: float | None = None) -> tuple[str, str]:
    adapter = VonageAdapter(ProviderSettings(name="vonage", kind="vonage"))
    answer = httpx.Response(200, json={"records": records})
    sms = Sms(to="+447700900000", body=body)
    found = adapter.found(answer, sms, "op-42", time.time() if since is None else since)
    return found.state, found.detail


def test_only_a_whole_accepted_message_is_found() -> None:
    """DONE needs a record for every part, none rejected, since the claim; anything else,
    nothing found included, is unknown: Vonage's records prove a send, never its absence."""
    long = "x" * 200  # two parts
    second = record(message_id="0A0000000123ABCD2")
    assert _found([record()]) == (DONE, "found 0A0000000123ABCD1")
    assert _found([record(), second], long) == (DONE, "found 0A0000000123ABCD1")
    assert _found([record()], long) == (UNKNOWN, "1 of its 2 parts found: not whole")
    assert _found([record(), record(status="rejected")], long)[0] == UNKNOWN
    assert _found([record("op-4")]) == (UNKNOWN, "no record with this client-ref yet: no proof")
    assert _found([]) == (UNKNOWN, "no record with this client-ref yet: no proof")
    assert _found([record()], since=time.time() + 301)[0] == UNKNOWN  # from before the claim
    assert _found([record(status="delivered")], "€" * 81)[0] == UNKNOWN  # 162 septets: 2 parts


async def test_a_send_vonage_did_but_never_answered_is_delivered_once(
    simulator: Simulator, mode: str
) -> None:
    """Vonage takes the SMS, then never answers: the attempt times out, the gateway finds its
    record by client-ref, and delivers without sending it again."""
    account = vonage_routes.mount(simulator, "/vonage")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=SMS_JSON)
    gw = reconciling_gateway(simulator.url("/vonage"))
    try:
        result = await send(gw, mode, SMS)
    finally:
        await gw.aclose()

    [message] = account.messages
    assert message["client-ref"] == "op-42"
    assert (result.status, result.provider) == ("delivered", "vonage")
    assert result.value.message_id == message["message-id"]
    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert result.attempts[-1].reason.startswith("lookup: found ")
    assert len(simulator.requests(method="POST", path=SMS_JSON)) == 1
    assert len(simulator.requests(method="GET", path=RECORDS)) == 1


async def test_a_partly_sent_message_is_not_taken_for_a_sent_one(simulator: Simulator) -> None:
    """One part accepted, one refused: the lookup finds one record of two, and the outcome
    stays ambiguous."""
    account = vonage_routes.mount(simulator, "/vonage")
    account.answer_with(0, 9)
    gw = reconciling_gateway(simulator.url("/vonage"))
    try:
        with pytest.raises(AmbiguousOutcome, match="lookup: 1 of its 2 parts found"):
            await gw.sms.send(Sms(to="+447700900000", body="x" * 200, idempotency_key="op-43"))
    finally:
        await gw.aclose()
    assert len(simulator.requests(method="POST", path=SMS_JSON)) == 1


async def test_an_operation_id_too_long_for_client_ref_is_not_looked_up(
    simulator: Simulator,
) -> None:
    """Sent without client-ref, it has nothing to match: no records are asked for."""
    vonage_routes.mount(simulator, "/vonage")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=SMS_JSON)
    gw = reconciling_gateway(simulator.url("/vonage"))
    try:
        with pytest.raises(AmbiguousOutcome, match="lookup: the lookup failed"):
            await gw.sms.send(Sms(to="+447700900000", body="hi", idempotency_key="k" * 41))
    finally:
        await gw.aclose()
    assert simulator.requests(method="GET", path=RECORDS) == []


async def test_without_the_reports_api_the_send_stays_ambiguous(
    simulator: Simulator, mode: str
) -> None:
    """An account refused the Reports API: the send that timed out stays AmbiguousOutcome, and
    neither it nor a retry of the same key sends the SMS again."""
    account = vonage_routes.mount(simulator, "/vonage")
    account.reports = False
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=SMS_JSON)
    gw = reconciling_gateway(simulator.url("/vonage"))
    try:
        with pytest.raises(AmbiguousOutcome) as raised:
            await send(gw, mode, SMS)
        assert "lookup: the lookup was answered 403" in str(raised.value)
        simulator.clear_faults()
        with pytest.raises(AmbiguousOutcome):
            await send(gw, mode, SMS)
    finally:
        await gw.aclose()
    assert len(simulator.requests(method="POST", path=SMS_JSON)) == 1
    assert len(account.messages) == 1
