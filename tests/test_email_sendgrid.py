"""SendGrid email adapter: the v3 mail/send wire format, and gw.email end to end over loopback."""

from __future__ import annotations

import base64
import json

import httpx
import respx

from providers import Attachment, Email
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.testing import Simulator
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
        "custom_args": {"order_id": "42"},
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
    assert set(body) == {"personalizations", "from", "subject", "content"}


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
