"""SendGrid email adapter: the v3 mail/send wire format, and gw.email end to end over loopback."""

from __future__ import annotations

import base64
import calendar
import dataclasses
import json
import time
from typing import Any

import httpx
import pytest
import respx

from providers import Attachment, Email
from providers.email.sendgrid import SendGridAdapter
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome
from resilient.gateway import Gateway
from resilient.lookup import DONE, UNKNOWN
from resilient.policy.outcome_class import Outcome
from resilient.testing import Fault, Simulator
from resilient.testing.routes import sendgrid as sendgrid_routes
from tests.conftest import receipt
from tests.conftest import send_message as send

FULL = Email(
    sender="Shop <shop@example.com>",
    to=["Doe, Jane <jane@example.org>", "bob@example.org"],
    cc=["carol@example.org"],
    bcc=["audit@example.com"],
    reply_to="Support <help@example.com>",
    subject="Your order",
    text="Thanks!",
    html="<p>Thanks!</p>",
    attachments=[Attachment("receipt.pdf", b"%PDF-1.7", "application/pdf")],
    headers={"X-Order": "42"},
    tags=["orders", "receipts"],
    metadata={"order_id": "42"},
    idempotency_key="order-42-receipt",
)


def gateway(base_url: str) -> Gateway:
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "sendgrid": {
                        "kind": "sendgrid",
                        "api_key": "SG.test-key",
                        "base_url": base_url,
                        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
                    }
                },
                "capabilities": {"email": {"chain": ["sendgrid"]}},
            }
        )
    )


async def test_wire_format_is_v3_mail_send() -> None:
    """Every Email field lands in its documented v3 place; the receipt holds X-Message-Id."""
    gw = gateway("https://api.sendgrid.com")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.sendgrid.com/v3/mail/send").mock(
            return_value=httpx.Response(202, headers={"X-Message-Id": "sg-msg-1"})
        )
        result = await gw.email.send(FULL)
    await gw.aclose()

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.headers["content-type"] == "application/json"
    assert "idempotency-key" not in request.headers  # SendGrid has none
    assert json.loads(request.content) == {
        "personalizations": [
            {
                "to": [
                    {"email": "jane@example.org", "name": "Doe, Jane"},
                    {"email": "bob@example.org"},
                ],
                "cc": [{"email": "carol@example.org"}],
                "bcc": [{"email": "audit@example.com"}],
            }
        ],
        "from": {"email": "shop@example.com", "name": "Shop"},
        "reply_to": {"email": "help@example.com", "name": "Support"},
        "subject": "Your order",
        "content": [
            {"type": "text/plain", "value": "Thanks!"},
            {"type": "text/html", "value": "<p>Thanks!</p>"},
        ],
        "attachments": [
            {
                "content": base64.b64encode(b"%PDF-1.7").decode(),
                "filename": "receipt.pdf",
                "type": "application/pdf",
                "disposition": "attachment",
            }
        ],
        "headers": {"X-Order": "42"},
        "categories": ["orders", "receipts"],
        "custom_args": {"order_id": "42", "resilient-operation-id": "order-42-receipt"},
    }
    assert result.status == "delivered"
    assert result.value is not None
    assert receipt(result).message_id == "sg-msg-1"


async def test_html_only_sends_one_content_block() -> None:
    gw = gateway("https://api.sendgrid.com")
    with respx.mock() as mock:
        route = mock.post("https://api.sendgrid.com/v3/mail/send").mock(
            return_value=httpx.Response(202, headers={"X-Message-Id": "m"})
        )
        await gw.email.send(Email(sender="a@x.io", to=["b@x.io"], subject="s", html="<b>h</b>"))
    await gw.aclose()
    body = json.loads(route.calls.last.request.content)
    assert body["content"] == [{"type": "text/html", "value": "<b>h</b>"}]
    assert set(body) == {"personalizations", "from", "subject", "content", "custom_args"}
    assert set(body["custom_args"]) == {"resilient-operation-id"}


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    """gw.email.send and gw.sync.email.send deliver through the simulated SendGrid, once, and
    the receipt names SendGrid's X-Message-Id."""
    state = sendgrid_routes.mount(simulator, "/sendgrid")
    gw = gateway(simulator.url("/sendgrid"))
    try:
        result = await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.provider == "sendgrid"
    assert len(state.sent) == 1
    message_id, body = state.sent[0]
    assert receipt(result).message_id == message_id
    assert receipt(result).deduplicated is False
    assert body["personalizations"][0]["bcc"] == [{"email": "audit@example.com"}]
    assert [a.outcome.value for a in result.attempts] == ["ok"]


def reconciling_gateway(base_url: str) -> Gateway:
    """One attempt that times out fast, and a call long enough to ask SendGrid afterwards."""
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "sendgrid": {
                        "kind": "sendgrid",
                        "api_key": "SG.test-key",
                        "base_url": base_url,
                        "timeout": "500ms",
                        "retry": {"attempts": 1},
                    }
                },
                "capabilities": {"email": {"chain": ["sendgrid"], "timeout": "10s"}},
            }
        )
    )


MAIL_SEND = "/sendgrid/v3/mail/send"
WELCOME = Email(
    sender="shop@example.com",
    to=["jane@example.org"],
    subject="Welcome",
    text="Hello",
    metadata={"order_id": "7"},
    idempotency_key="welcome-jane",
)


async def test_every_message_carries_its_operation_id_beside_the_metadata() -> None:
    gw = gateway("https://api.sendgrid.com")
    with respx.mock() as mock:
        route = mock.post("https://api.sendgrid.com/v3/mail/send").mock(
            return_value=httpx.Response(202, headers={"X-Message-Id": "m"})
        )
        await gw.email.send(WELCOME)
        await gw.email.send(Email(sender="a@x.io", to=["b@x.io"], subject="s", text="t"))
    await gw.aclose()
    tagged, generated = (json.loads(call.request.content) for call in route.calls)
    assert tagged["custom_args"] == {"order_id": "7", "resilient-operation-id": "welcome-jane"}
    assert generated["custom_args"]["resilient-operation-id"]  # an id of its own, even unkeyed


async def test_the_lookup_asks_the_email_activity_api_for_the_operation_id() -> None:
    """A send that timed out is looked up: `GET /v3/messages` with the documented query for our
    custom arg, since the claim less the clock skew; the msg_id found, up to its first dot, is
    the X-Message-Id the send would have answered with."""
    gw = reconciling_gateway("https://api.sendgrid.com")
    found = {
        "messages": [
            {
                "from_email": "shop@example.com",
                "msg_id": "sg-msg-1.filterdrecv-p3mdw1-bnpxx-19-603139AC-6F.0",
                "subject": "Welcome",
                "to_email": "jane@example.org",
                "status": "processed",
                "opens_count": 0,
                "clicks_count": 0,
                "last_event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ]
    }
    started = time.time()
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://api.sendgrid.com/v3/mail/send").mock(
            side_effect=httpx.ReadTimeout("no answer")
        )
        lookup = mock.get("https://api.sendgrid.com/v3/messages").mock(
            return_value=httpx.Response(200, json=found)
        )
        result = await gw.email.send(WELCOME)
    await gw.aclose()

    request = lookup.calls.last.request
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert str(request.url).startswith(
        "https://api.sendgrid.com/v3/messages?query=%28unique_args%5B%27resilient-operation-id"
        "%27%5D%3D%22welcome-jane%22%29+AND+last_event_time%3E%3DTIMESTAMP+%22"
    )
    params = dict(request.url.params)
    assert params["limit"] == "10"
    prefix = (
        "(unique_args['resilient-operation-id']=\"welcome-jane\") AND last_event_time>=TIMESTAMP "
    )
    assert params["query"].startswith(prefix)
    since = calendar.timegm(time.strptime(params["query"][len(prefix) :], '"%Y-%m-%dT%H:%M:%SZ"'))
    assert started - 300 - 1 <= since <= time.time() - 300
    assert set(params) == {"query", "limit"}
    assert (result.status, result.value.message_id) == ("delivered", "sg-msg-1")
    assert result.attempts[-1].reason.startswith("lookup: found sg-msg-1.")


def _found(messages: Any, since: float) -> tuple[str, str | None]:
    answer = httpx.Response(200, json=messages)
    found = SendGridAdapter().found(answer, WELCOME, "welcome-jane", since)
    return found.state, found.message_id


def test_nothing_found_is_never_proof_that_nothing_was_sent() -> None:
    """The feed lags: an empty answer, or only messages from before the claim (less the clock
    skew), leave the outcome unknown; so does an answer of another shape."""
    now = time.time()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 301))
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 299))
    assert _found({"messages": []}, now) == (UNKNOWN, None)
    assert _found({"messages": [{"msg_id": "a.b", "last_event_time": old}]}, now) == (
        UNKNOWN,
        None,
    )
    assert _found({"messages": [{"msg_id": "a.b", "last_event_time": recent}]}, now) == (
        DONE,
        "a",
    )
    assert _found({"errors": []}, now) == (UNKNOWN, None)
    assert _found([{"msg_id": "a"}], now) == (UNKNOWN, None)


async def test_a_send_sendgrid_did_but_never_answered_is_delivered_once(
    simulator: Simulator, mode: str
) -> None:
    """SendGrid sends the mail, then never answers: the attempt times out, the gateway asks the
    Email Activity API, finds it, and delivers without sending it again."""
    state = sendgrid_routes.mount(simulator, "/sendgrid")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MAIL_SEND)
    gw = reconciling_gateway(simulator.url("/sendgrid"))
    try:
        result = await send(gw, mode, WELCOME)
    finally:
        await gw.aclose()

    [(message_id, body)] = state.sent
    assert body["custom_args"]["resilient-operation-id"] == "welcome-jane"
    assert (result.status, result.provider) == ("delivered", "sendgrid")
    assert receipt(result).message_id == message_id
    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert result.attempts[-1].reason.startswith("lookup: found ")
    assert len(simulator.requests(method="POST", path=MAIL_SEND)) == 1
    [asked] = simulator.requests(method="GET", path="/sendgrid/v3/messages")
    assert "welcome-jane" in dict(httpx.URL(f"?{asked.query}").params)["query"]


async def test_another_operation_in_the_feed_is_not_taken_for_this_one(
    simulator: Simulator,
) -> None:
    """The feed holds another operation's mail to the same recipient: the lookup, filtered by
    our operation id, finds nothing, and the timed-out send stays ambiguous."""
    state = sendgrid_routes.mount(simulator, "/sendgrid")
    gw = reconciling_gateway(simulator.url("/sendgrid"))
    try:
        await gw.email.send(dataclasses.replace(WELCOME, idempotency_key="other"))
        simulator.inject(Fault.hang(), method="POST", path=MAIL_SEND)
        with pytest.raises(AmbiguousOutcome, match="lookup: not in the Email Activity feed"):
            await gw.email.send(WELCOME)
    finally:
        await gw.aclose()
    assert len(state.sent) == 1


async def test_without_the_email_activity_add_on_the_send_stays_ambiguous(
    simulator: Simulator, mode: str
) -> None:
    """An account without the add-on is refused the lookup: the send that timed out stays
    AmbiguousOutcome, and neither it nor a retry of the same key sends the mail again."""
    state = sendgrid_routes.mount(simulator, "/sendgrid")
    state.email_activity = False
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MAIL_SEND)
    gw = reconciling_gateway(simulator.url("/sendgrid"))
    try:
        with pytest.raises(AmbiguousOutcome) as raised:
            await send(gw, mode, WELCOME)
        assert "lookup: the lookup was answered 400" in str(raised.value)
        simulator.clear_faults()
        with pytest.raises(AmbiguousOutcome):
            await send(gw, mode, WELCOME)
    finally:
        await gw.aclose()
    assert len(simulator.requests(method="POST", path=MAIL_SEND)) == 1
    assert len(state.sent) == 1
