"""Postmark email adapter: the /email wire format, the message stream option, its error answers,
and gw.email end to end on the simulator."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
import respx

from providers import Attachment, Email
from resilient.errors import ChainExhausted, FatalError
from resilient.gateway import Gateway
from resilient.testing import Fault, Simulator
from resilient.testing.routes import postmark as postmark_routes
from resilient.testing.routes import sendgrid as sendgrid_routes
from tests.conftest import capability_gateway, provider_table, receipt
from tests.conftest import send_message as send


def gateway(chain: list[str], **providers: dict[str, Any]) -> Gateway:
    return capability_gateway("email", chain, **providers)


FULL = Email(
    sender="Shop <shop@example.com>",
    to=["Doe, Jane <jane@example.org>", "bob@example.org"],
    cc=["carol@example.org"],
    bcc=["audit@example.com", "copy@example.com"],
    reply_to="help@example.com",
    subject="Your order",
    text="Thanks!",
    html="<p>Thanks!</p>",
    attachments=[Attachment("receipt.pdf", b"%PDF-1.7", "application/pdf")],
    headers={"X-Order": "42"},
    tags=["orders", "receipts"],
    metadata={"order_id": "42"},
)
ANSWER = {
    "To": "jane@example.org",
    "SubmittedAt": "2026-01-01T00:00:00.000Z",
    "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d",
    "ErrorCode": 0,
    "Message": "OK",
}


def postmark(base_url: str | None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "api_key": "pm-server-token",
    }
    return provider_table("postmark", base_url, **{**defaults, **options})


async def test_wire_format_is_the_email_endpoint() -> None:
    gw = gateway(["postmark"], postmark=postmark(None))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.postmarkapp.com/email").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        result = await gw.email.send(FULL)
    await gw.aclose()

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["x-postmark-server-token"] == "pm-server-token"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "From": "Shop <shop@example.com>",
        "To": '"Doe, Jane" <jane@example.org>, bob@example.org',
        "Cc": "carol@example.org",
        "Bcc": "audit@example.com, copy@example.com",
        "Subject": "Your order",
        "TextBody": "Thanks!",
        "HtmlBody": "<p>Thanks!</p>",
        "ReplyTo": "help@example.com",
        "Headers": [{"Name": "X-Order", "Value": "42"}],
        "Tag": "orders",  # Postmark carries one tag
        "Metadata": {"order_id": "42"},
        "Attachments": [
            {
                "Name": "receipt.pdf",
                "Content": base64.b64encode(b"%PDF-1.7").decode(),
                "ContentType": "application/pdf",
            }
        ],
        "MessageStream": "outbound",
    }
    assert result.value is not None
    assert receipt(result).message_id == ANSWER["MessageID"]


async def test_message_stream_is_an_option() -> None:
    gw = gateway(["postmark"], postmark=postmark(None, message_stream="broadcast"))
    with respx.mock() as mock:
        route = mock.post("https://api.postmarkapp.com/email").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        await gw.email.send(Email(sender="a@x.io", to=["b@x.io"], subject="s", text="t"))
    await gw.aclose()
    body = json.loads(route.calls.last.request.content)
    assert body["MessageStream"] == "broadcast"
    assert set(body) == {"From", "To", "Subject", "TextBody", "MessageStream"}


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    state = postmark_routes.mount(simulator, "/postmark")
    gw = gateway(["postmark"], postmark=postmark(simulator.url("/postmark")))
    try:
        result = await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.provider == "postmark"
    assert len(state.sent) == 1
    message_id, body = state.sent[0]
    assert receipt(result).message_id == message_id
    assert body["Bcc"] == "audit@example.com, copy@example.com"


async def test_a_refused_message_is_final(simulator: Simulator, mode: str) -> None:
    """Postmark's 422 (here: an inactive recipient) refuses the message itself: raised at once,
    never offered to the next provider."""
    postmark_routes.mount(simulator, "/postmark")
    sendgrid = sendgrid_routes.mount(simulator, "/sendgrid")
    simulator.inject(
        Fault.status(
            422,
            json={
                "ErrorCode": 406,
                "Message": "You tried to send to a recipient that has been marked as inactive.",
            },
        ),
        prefix="/postmark",
    )
    gw = gateway(
        ["postmark", "sendgrid"],
        postmark=postmark(simulator.url("/postmark")),
        sendgrid={"kind": "sendgrid", "api_key": "sg", "base_url": simulator.url("/sendgrid")},
    )
    try:
        with pytest.raises(FatalError) as raised:
            await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    assert raised.value.response is not None
    assert raised.value.response.json()["ErrorCode"] == 406
    assert len(simulator.requests(prefix="/postmark")) == 1
    assert simulator.requests(prefix="/sendgrid") == []
    assert sendgrid.sent == []


async def test_a_wrong_token_is_this_providers_problem(simulator: Simulator, mode: str) -> None:
    """Without a token Postmark answers 401 (ErrorCode 10): nothing was sent, so the chain moves
    on, and the last answer reaches the caller when no provider is left."""
    postmark_routes.mount(simulator, "/postmark")
    simulator.inject(
        Fault.status(401, json={"ErrorCode": 10, "Message": "Bad or missing API token"}),
        prefix="/postmark",
    )
    gw = gateway(["postmark"], postmark=postmark(simulator.url("/postmark")))
    try:
        with pytest.raises(ChainExhausted) as raised:
            await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    assert [a.status_code for a in raised.value.attempts] == [401]
