"""Mailgun email adapter: the messages API wire format (form and multipart), the EU region and
the domain option, and gw.email end to end on the simulator."""

from __future__ import annotations

import base64
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from providers import Attachment, Email
from resilient.config import settings_from_mapping
from resilient.errors import ConfigError
from resilient.gateway import Gateway
from resilient.testing import Simulator
from resilient.testing.routes import mailgun as mailgun_routes
from resilient.testing.routes import postmark as postmark_routes
from tests.conftest import capability_gateway, provider_table, receipt
from tests.conftest import send_message as send


def gateway(chain: list[str], **providers: dict[str, Any]) -> Gateway:
    return capability_gateway("email", chain, **providers)


PLAIN = Email(
    sender="Shop <shop@mg.example.com>",
    to=["Doe, Jane <jane@example.org>", "bob@example.org"],
    cc=["carol@example.org"],
    bcc=["audit@example.com"],
    reply_to="help@example.com",
    subject="Your order",
    text="Thanks!",
    html="<p>Thanks!</p>",
    headers={"X-Order": "42"},
    tags=["orders", "receipts"],
    metadata={"order_id": "42", "tier": "gold"},
)
WITH_FILES = Email(
    sender="shop@mg.example.com",
    to=["jane@example.org"],
    subject="Files",
    text="Attached.",
    attachments=[
        Attachment("receipt.pdf", b"%PDF-1.7\x00\xff", "application/pdf"),
        Attachment("notes.txt", b"hello", "text/plain"),
    ],
)
ANSWER = {"id": "<20260101.1@mg.example.com>", "message": "Queued. Thank you."}


def mailgun(base_url: str | None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "api_key": "key-test",
        "domain": "mg.example.com",
    }
    return provider_table("mailgun", base_url, **{**defaults, **options})


async def test_wire_format_is_a_form_with_basic_auth() -> None:
    """Without attachments: urlencoded, repeated to/cc/bcc/o:tag, h: and v: prefixes."""
    gw = gateway(["mailgun"], mailgun=mailgun(None))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.mailgun.net/v3/mg.example.com/messages").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        result = await gw.email.send(PLAIN)
    await gw.aclose()

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"api:key-test").decode()
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "from": ["Shop <shop@mg.example.com>"],
        "to": ['"Doe, Jane" <jane@example.org>', "bob@example.org"],
        "cc": ["carol@example.org"],
        "bcc": ["audit@example.com"],
        "subject": ["Your order"],
        "text": ["Thanks!"],
        "html": ["<p>Thanks!</p>"],
        "h:X-Order": ["42"],
        "h:Reply-To": ["help@example.com"],
        "o:tag": ["orders", "receipts"],
        "v:order_id": ["42"],
        "v:tier": ["gold"],
    }
    assert result.value is not None
    assert receipt(result).message_id == ANSWER["id"]


async def test_attachments_go_as_multipart_parts() -> None:
    gw = gateway(["mailgun"], mailgun=mailgun(None))
    with respx.mock() as mock:
        route = mock.post("https://api.mailgun.net/v3/mg.example.com/messages").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        await gw.email.send(WITH_FILES)
    await gw.aclose()

    request = route.calls.last.request
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    parsed = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.content
    )
    parts = [
        (
            p.get_param("name", header="content-disposition"),
            p.get_filename(),
            p.get_content_type(),
            p.get_payload(decode=True),
        )
        for p in parsed.iter_parts()
    ]
    assert ("attachment", "receipt.pdf", "application/pdf", b"%PDF-1.7\x00\xff") in parts
    assert ("attachment", "notes.txt", "text/plain", b"hello") in parts
    assert ("to", None, "text/plain", b"jane@example.org") in parts


async def test_eu_region_is_a_base_url() -> None:
    gw = gateway(["mailgun"], mailgun=mailgun("https://api.eu.mailgun.net"))
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://api.eu.mailgun.net/v3/mg.example.com/messages").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        result = await gw.email.send(PLAIN)
    await gw.aclose()
    assert result.status == "delivered"


@pytest.mark.parametrize("domain", [None, "mg.example.com/../x", ""])
def test_domain_is_required_and_a_host_name(domain: str | None) -> None:
    table = mailgun(None)
    if domain is None:
        del table["domain"]
    else:
        table["domain"] = domain
    with pytest.raises(ConfigError, match="domain"):
        settings_from_mapping({"providers": {"mailgun": table}})


async def test_end_to_end_on_the_simulator(simulator: Simulator, mode: str) -> None:
    """Both facades deliver through the simulated Mailgun, files included, once; the receipt
    holds Mailgun's message id."""
    state = mailgun_routes.mount(simulator, "/mailgun")
    gw = gateway(["mailgun"], mailgun=mailgun(simulator.url("/mailgun")))
    try:
        result = await send(gw, mode, WITH_FILES)
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.provider == "mailgun"
    assert len(state.sent) == 1
    sent = state.sent[0]
    assert receipt(result).message_id == sent.id
    assert sent.domain == "mg.example.com"
    assert sent.one("subject") == "Files"
    assert [(a.filename, a.content) for a in sent.attachments] == [
        ("receipt.pdf", b"%PDF-1.7\x00\xff"),
        ("notes.txt", b"hello"),
    ]


async def test_unknown_domain_fails_over(simulator: Simulator, mode: str) -> None:
    """A 404 from Mailgun is this provider's domain or region, not the message: the next
    provider serves it (without the kind's 404 rule, a 4xx would be fatal)."""
    mailgun_state = mailgun_routes.mount(simulator, "/mailgun")
    mailgun_state.domains = {"other.example.com"}
    postmark_state = postmark_routes.mount(simulator, "/postmark")
    gw = gateway(
        ["mailgun", "postmark"],
        mailgun=mailgun(simulator.url("/mailgun")),
        postmark={"kind": "postmark", "api_key": "pm", "base_url": simulator.url("/postmark")},
    )
    try:
        result = await send(gw, mode, PLAIN)
    finally:
        await gw.aclose()
    assert result.provider == "postmark"
    assert [a.status_code for a in result.attempts] == [404, 200]
    assert mailgun_state.sent == []
    assert len(postmark_state.sent) == 1
