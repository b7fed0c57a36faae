"""Mailgun email adapter: the messages API wire format (form and multipart), the EU region and
the domain option, gw.email end to end on the simulator, and finding out what became of an
ambiguous send in the Events API."""

from __future__ import annotations

import base64
import json
import math
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from providers import Attachment, Email
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ConfigError
from resilient.gateway import Gateway
from resilient.lookup import CLOCK_SKEW, DONE, UNKNOWN
from resilient.policy.outcome_class import Outcome
from resilient.testing import Fault, Simulator
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
    fields = parse_qs(request.content.decode())
    assert re.fullmatch(r"[0-9a-f]{32}", fields.pop("v:resilient-operation-id")[0])  # generated
    assert fields == {
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


# Reconciliation: the operation id rides along as a user variable, and the Events API is asked.

MESSAGES = "/mailgun/v3/mg.example.com/messages"
EVENTS = "/mailgun/v3/mg.example.com/events"
SINCE = 1_767_225_600.5  # 2026-01-01T00:00:00.5Z
KEYED = Email(
    sender="shop@mg.example.com",
    to=["jane@example.org"],
    subject="Your order",
    text="Thanks!",
    metadata={"tier": "gold", "resilient-operation-id": "not ours"},
    idempotency_key="order-42",
)


def reconciling(simulator: Simulator, chain: list[str]) -> Gateway:
    """Mailgun then Postmark on the simulator, with time for a lookup after a timed-out send."""
    providers = {
        "mailgun": mailgun(simulator.url("/mailgun"), timeout="500ms", retry={"attempts": 1}),
        "postmark": {"kind": "postmark", "api_key": "pm", "base_url": simulator.url("/postmark")},
    }
    return Gateway(
        settings_from_mapping(
            {
                "providers": {name: providers[name] for name in chain},
                "capabilities": {"email": {"chain": chain, "timeout": "10s"}},
            }
        )
    )


async def test_the_send_carries_the_operation_id_as_a_user_variable() -> None:
    """`v:resilient-operation-id` is the idempotency key, over a metadata entry of its name."""
    gw = gateway(["mailgun"], mailgun=mailgun(None))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.mailgun.net/v3/mg.example.com/messages").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        await gw.email.send(KEYED)
    await gw.aclose()
    fields = parse_qs(route.calls.last.request.content.decode())
    assert fields["v:resilient-operation-id"] == ["order-42"]
    assert fields["v:tier"] == ["gold"]


async def test_the_lookup_asks_the_events_api_for_the_user_variable() -> None:
    gw = gateway(["mailgun"], mailgun=mailgun("https://api.eu.mailgun.net"))
    rt = gw.provider("mailgun")
    request = rt.adapter.lookup(KEYED, rt, "order-42", SINCE)
    await gw.aclose()
    assert request.method == "GET"
    assert (
        request.url.copy_with(query=None) == "https://api.eu.mailgun.net/v3/mg.example.com/events"
    )
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"api:key-test").decode()
    assert dict(request.url.params) == {
        "begin": str(math.floor(SINCE - CLOCK_SKEW)),
        "ascending": "yes",
        "limit": "300",
        "user-variables": '{"resilient-operation-id":"order-42"}',
    }
    assert request.content == b""


def accepted(operation_id: str = "order-42", at: float = SINCE + 1, **fields: Any) -> Any:
    """An event as Mailgun's Events API lists it."""
    return {
        "event": "accepted",
        "id": "jxVuhYlhReaK3QsggHfFRA",
        "timestamp": at,
        "message": {"headers": {"message-id": "20260101000001.abc@mg.example.com"}},
        "recipient": "jane@example.org",
        "user-variables": {"tier": "gold", "resilient-operation-id": operation_id},
        **fields,
    }


@pytest.mark.parametrize(
    ("items", "state", "message_id"),
    [
        ([accepted()], DONE, "<20260101000001.abc@mg.example.com>"),
        ([accepted(event="delivered")], DONE, "<20260101000001.abc@mg.example.com>"),
        ([accepted("other"), accepted()], DONE, "<20260101000001.abc@mg.example.com>"),
        ([accepted(at=SINCE - CLOCK_SKEW - 1)], UNKNOWN, None),  # before the window
        ([accepted(event="rejected")], UNKNOWN, None),  # Mailgun refused that one
        ([accepted("other")], UNKNOWN, None),
        ([], UNKNOWN, None),  # events come late: an empty page proves nothing
    ],
    ids=["accepted", "delivered", "among-others", "too-old", "rejected", "other-id", "empty"],
)
async def test_what_an_events_page_proves(items: list[Any], state: str, message_id: str) -> None:
    gw = gateway(["mailgun"], mailgun=mailgun(None))
    adapter = gw.provider("mailgun").adapter
    await gw.aclose()
    page = {"items": items, "paging": {"next": "https://api.mailgun.net/v3/x/events/W3"}}
    found = adapter.found(httpx.Response(200, json=page), KEYED, "order-42", SINCE)
    assert (found.state, found.message_id) == (state, message_id)
    assert adapter.found(httpx.Response(200, json={}), KEYED, "order-42", SINCE).state == UNKNOWN


async def test_a_timed_out_send_that_mailgun_did_is_delivered_once(
    simulator: Simulator, mode: str
) -> None:
    """Mailgun queues the message and never answers: the lookup finds its accepted event, and
    the receipt holds the id the send would have answered; Postmark is never asked."""
    state = mailgun_routes.mount(simulator, "/mailgun")
    postmark = postmark_routes.mount(simulator, "/postmark")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES)
    gw = reconciling(simulator, ["mailgun", "postmark"])
    try:
        result = await send(gw, mode, PLAIN)
    finally:
        await gw.aclose()
    [message] = state.sent
    assert (result.status, result.provider) == ("delivered", "mailgun")
    assert result.value.message_id == message.id
    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert result.attempts[-1].reason.startswith("lookup: found <")
    assert len(simulator.requests(method="GET", path=EVENTS)) == 1
    assert postmark.sent == []


async def test_a_timed_out_send_mailgun_did_not_do_stays_ambiguous(
    simulator: Simulator, mode: str
) -> None:
    """No event of the message: Mailgun's events come late, so that proves nothing, and the
    message goes nowhere else."""
    state = mailgun_routes.mount(simulator, "/mailgun")
    postmark = postmark_routes.mount(simulator, "/postmark")
    simulator.inject(Fault.hang(), method="POST", path=MESSAGES)
    gw = reconciling(simulator, ["mailgun", "postmark"])
    try:
        with pytest.raises(AmbiguousOutcome) as raised:
            await send(gw, mode, PLAIN)
    finally:
        await gw.aclose()
    assert [a.outcome for a in raised.value.attempts] == [Outcome.AMBIGUOUS, Outcome.AMBIGUOUS]
    assert raised.value.attempts[-1].reason.startswith("lookup: no event")
    assert state.sent == [] and postmark.sent == []
    assert simulator.requests(prefix="/postmark") == []


async def test_a_retry_finds_what_a_failed_lookup_could_not(simulator: Simulator) -> None:
    """The Events API fails once: ambiguous. The retry (same idempotency key) asks again, finds
    the message and sends nothing."""
    state = mailgun_routes.mount(simulator, "/mailgun")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES)
    simulator.inject(Fault.status(500), method="GET", path=EVENTS)
    gw = reconciling(simulator, ["mailgun"])
    try:
        with pytest.raises(AmbiguousOutcome, match="lookup: the lookup was answered 500"):
            await gw.email.send(KEYED)
        simulator.clear_faults()
        again = await gw.email.send(KEYED)
    finally:
        await gw.aclose()
    [message] = state.sent
    assert (again.status, again.value.deduplicated) == ("delivered", True)
    assert again.value.message_id == message.id
    assert message.variables == {"tier": "gold", "resilient-operation-id": "order-42"}
    assert len(simulator.requests(method="POST", path=MESSAGES)) == 1


async def test_the_simulated_events_api_filters_and_pages(simulator: Simulator) -> None:
    """The simulator's Events API as Mailgun documents it: a time range, filters (the user
    variables as a JSON map), and paging URLs that end in an empty page."""
    state = mailgun_routes.mount(simulator, "/mailgun")
    gw = gateway(["mailgun"], mailgun=mailgun(simulator.url("/mailgun")))
    try:
        await gw.email.send(KEYED)
        await gw.email.send(PLAIN)  # four recipients: four accepted events
    finally:
        await gw.aclose()
    auth = ("api", "key-test")
    async with httpx.AsyncClient(auth=auth) as client:
        url = simulator.url(EVENTS)
        ours = await client.get(
            url,
            params={
                "begin": str(int(state.sent[0].created) - 1),
                "ascending": "yes",
                "user-variables": json.dumps({"resilient-operation-id": "order-42"}),
            },
        )
        first = await client.get(url, params={"begin": "0", "ascending": "yes", "limit": "3"})
        second = await client.get(first.json()["paging"]["next"])
        third = await client.get(second.json()["paging"]["next"])
        before = await client.get(first.json()["paging"]["previous"])
        refused = await client.get(url, params={"begin": "0"})
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(url, params={"ascending": "yes"})
    [event] = ours.json()["items"]
    assert event["event"] == "accepted"
    assert event["recipient"] == "jane@example.org"
    assert f"<{event['message']['headers']['message-id']}>" == state.sent[0].id
    assert event["user-variables"] == {"tier": "gold", "resilient-operation-id": "order-42"}
    assert [len(p.json()["items"]) for p in (first, second, third, before)] == [3, 2, 0, 0]
    timestamps = [e["timestamp"] for p in (first, second) for e in p.json()["items"]]
    assert timestamps == sorted(timestamps)
    assert refused.status_code == 400  # a begin needs an end or a direction
    assert anonymous.status_code == 401
