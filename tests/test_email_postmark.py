"""Postmark email adapter: the /email wire format, the message stream option, its error answers,
gw.email end to end on the simulator, and finding out what became of an ambiguous send with the
outbound message search."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import httpx
import pytest
import respx

from providers import Attachment, Email
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ChainExhausted, FatalError
from resilient.gateway import Gateway
from resilient.lookup import DONE, UNKNOWN
from resilient.policy.outcome_class import Outcome
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
    body = json.loads(request.content)
    assert re.fullmatch(r"[0-9a-f]{32}", body["Metadata"].pop("resilient-op-id"))  # generated
    assert body == {
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
    assert set(body) == {"From", "To", "Subject", "TextBody", "MessageStream", "Metadata"}
    assert set(body["Metadata"]) == {"resilient-op-id"}


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


# Reconciliation: the operation id rides along in Metadata, and the outbound search is asked.

SINCE = 1_767_225_600.5  # 2026-01-01T00:00:00.5Z
KEYED = Email(
    sender="shop@example.com",
    to=["jane@example.org"],
    subject="Your order",
    text="Thanks!",
    metadata={"order_id": "42", "Resilient-Op-Id": "not ours"},
    idempotency_key="order-42",
)


def reconciling(simulator: Simulator) -> Gateway:
    """Postmark then SendGrid on the simulator, with time for a lookup after a timed-out send."""
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "postmark": postmark(
                        simulator.url("/postmark"), timeout="500ms", retry={"attempts": 1}
                    ),
                    "sendgrid": {
                        "kind": "sendgrid",
                        "api_key": "sg",
                        "base_url": simulator.url("/sendgrid"),
                    },
                },
                "capabilities": {"email": {"chain": ["postmark", "sendgrid"], "timeout": "10s"}},
            }
        )
    )


async def sent_body(message: Email) -> dict[str, Any]:
    gw = gateway(["postmark"], postmark=postmark(None))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.postmarkapp.com/email").mock(
            return_value=httpx.Response(200, json=ANSWER)
        )
        await gw.email.send(message)
    await gw.aclose()
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


async def test_the_send_carries_the_operation_id_in_metadata() -> None:
    """`resilient-op-id` (Postmark takes names of 20 characters at most) is the idempotency key;
    it replaces a model entry of that name in any case, which Postmark would refuse as a
    duplicate."""
    body = await sent_body(KEYED)
    assert body["Metadata"] == {"order_id": "42", "resilient-op-id": "order-42"}


async def test_a_long_key_goes_as_its_digest_and_ten_fields_leave_no_room() -> None:
    """Postmark takes values of 80 characters and 10 fields at most."""
    key = "k" * 81
    body = await sent_body(
        Email(sender="a@x.io", to=["b@x.io"], subject="s", text="t", idempotency_key=key)
    )
    assert body["Metadata"] == {"resilient-op-id": hashlib.sha256(key.encode()).hexdigest()}

    full = Email(
        sender="a@x.io",
        to=["b@x.io"],
        subject="s",
        text="t",
        metadata={f"f{n}": str(n) for n in range(10)},
        idempotency_key="order-42",
    )
    assert (await sent_body(full))["Metadata"] == dict(full.metadata)
    gw = gateway(["postmark"], postmark=postmark(None))
    adapter = gw.provider("postmark").adapter
    await gw.aclose()
    found = adapter.found(httpx.Response(200, json=RESULTS), full, "order-42", SINCE)
    assert (found.state, found.detail) == (UNKNOWN, "the message had no room for its operation id")


async def test_the_lookup_searches_outbound_messages_by_metadata() -> None:
    gw = gateway(["postmark"], postmark=postmark(None, message_stream="broadcast"))
    rt = gw.provider("postmark")
    request = rt.adapter.lookup(KEYED, rt, "order-42", SINCE)
    await gw.aclose()
    assert request.method == "GET"
    assert str(request.url) == (
        "https://api.postmarkapp.com/messages/outbound"
        "?count=500&offset=0&messagestream=broadcast&metadata_resilient-op-id=order-42"
    )
    assert request.headers["x-postmark-server-token"] == "pm-server-token"
    assert request.headers["accept"] == "application/json"
    assert request.content == b""


def result(
    received: str = "2026-01-01T00:00:01.1234567Z", tag: str = "order-42", **fields: Any
) -> dict[str, Any]:
    """A message as Postmark's outbound search lists it."""
    return {
        "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d",
        "MessageStream": "outbound",
        "ReceivedAt": received,
        "Status": "Sent",
        "Metadata": {"order_id": "42", "resilient-op-id": tag},
        **fields,
    }


RESULTS = {"TotalCount": 1, "Messages": [result()]}


@pytest.mark.parametrize(
    ("messages", "state", "message_id"),
    [
        ([result()], DONE, "0a129aee-e1cd-480d-b08d-4f48548ff48d"),
        ([result("2025-12-31T19:00:01.5-05:00")], DONE, "0a129aee-e1cd-480d-b08d-4f48548ff48d"),
        ([result("2025-12-31T18:50:00-05:00")], UNKNOWN, None),  # 10 min before: too old
        ([result(tag="other")], UNKNOWN, None),  # the search's filter was not applied
        ([result(received="yesterday")], UNKNOWN, None),
        ([], UNKNOWN, None),  # no documented bound on how soon a message is searchable
    ],
    ids=["found", "eastern-time", "too-old", "other-id", "unreadable-time", "none"],
)
async def test_what_a_search_proves(
    messages: list[dict[str, Any]], state: str, message_id: str | None
) -> None:
    gw = gateway(["postmark"], postmark=postmark(None))
    adapter = gw.provider("postmark").adapter
    await gw.aclose()
    page = {"TotalCount": len(messages), "Messages": messages}
    found = adapter.found(httpx.Response(200, json=page), KEYED, "order-42", SINCE)
    assert (found.state, found.message_id) == (state, message_id)
    assert adapter.found(httpx.Response(200, json=[]), KEYED, "order-42", SINCE).state == UNKNOWN


async def test_a_timed_out_send_that_postmark_did_is_delivered_once(
    simulator: Simulator, mode: str
) -> None:
    """Postmark accepts the message and never answers: the search finds it by its metadata, and
    the receipt holds its MessageID; SendGrid is never asked."""
    state = postmark_routes.mount(simulator, "/postmark")
    sendgrid = sendgrid_routes.mount(simulator, "/sendgrid")
    simulator.inject(Fault.hang(after_effect=True), method="POST", path="/postmark/email")
    gw = reconciling(simulator)
    try:
        result = await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    [(message_id, body)] = state.sent
    assert (result.status, result.provider) == ("delivered", "postmark")
    assert result.value.message_id == message_id
    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert result.attempts[-1].reason == f"lookup: found {message_id}"
    assert set(body["Metadata"]) == {"order_id", "resilient-op-id"}
    assert len(simulator.requests(method="GET", path="/postmark/messages/outbound")) == 1
    assert sendgrid.sent == []


async def test_a_timed_out_send_postmark_did_not_do_stays_ambiguous(
    simulator: Simulator, mode: str
) -> None:
    """Nothing found: Postmark does not say how soon a message can be searched, so that proves
    nothing, and the message goes nowhere else."""
    state = postmark_routes.mount(simulator, "/postmark")
    sendgrid = sendgrid_routes.mount(simulator, "/sendgrid")
    simulator.inject(Fault.hang(), method="POST", path="/postmark/email")
    gw = reconciling(simulator)
    try:
        with pytest.raises(AmbiguousOutcome) as raised:
            await send(gw, mode, FULL)
    finally:
        await gw.aclose()
    assert [a.outcome for a in raised.value.attempts] == [Outcome.AMBIGUOUS, Outcome.AMBIGUOUS]
    assert raised.value.attempts[-1].reason.startswith("lookup: no message")
    assert state.sent == [] and sendgrid.sent == []
    assert simulator.requests(prefix="/sendgrid") == []


async def test_the_simulated_search_filters_as_postmark_documents(simulator: Simulator) -> None:
    state = postmark_routes.mount(simulator, "/postmark")
    gw = gateway(["postmark"], postmark=postmark(simulator.url("/postmark")))
    try:
        await gw.email.send(KEYED)
        await gw.email.send(FULL)
    finally:
        await gw.aclose()
    headers = {"X-Postmark-Server-Token": "pm-server-token", "Accept": "application/json"}
    url = simulator.url("/postmark/messages/outbound")
    async with httpx.AsyncClient(headers=headers) as client:
        everything = await client.get(url, params={"count": 10, "offset": 0})
        ours = await client.get(
            url, params={"count": 10, "offset": 0, "metadata_resilient-op-id": "order-42"}
        )
        broadcast = await client.get(
            url, params={"count": 10, "offset": 0, "messagestream": "broadcast"}
        )
        no_count = await client.get(url, params={"offset": 0})
        too_many = await client.get(url, params={"count": 501, "offset": 0})
    assert everything.json()["TotalCount"] == 2
    assert [m["MessageID"] for m in everything.json()["Messages"]] == [
        state.sent[1][0],
        state.sent[0][0],
    ]  # most recent first
    [message] = ours.json()["Messages"]
    assert ours.json()["TotalCount"] == 1
    assert message["MessageID"] == state.sent[0][0]
    assert message["Metadata"] == {"order_id": "42", "resilient-op-id": "order-42"}
    assert message["To"] == [{"Email": "jane@example.org", "Name": None}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}-05:00", message["ReceivedAt"])
    assert broadcast.json() == {"TotalCount": 0, "Messages": []}
    assert [r.status_code for r in (no_count, too_many)] == [422, 422]
    assert no_count.json()["ErrorCode"] == 600


async def test_the_simulator_holds_metadata_to_postmarks_limits(simulator: Simulator) -> None:
    """A name over 20 characters is refused with a 422, as a longer name than ours would be."""
    postmark_routes.mount(simulator, "/postmark")
    headers = {"X-Postmark-Server-Token": "pm-server-token"}
    message = {"From": "a@x.io", "To": "b@x.io", "TextBody": "t"}
    async with httpx.AsyncClient(headers=headers) as client:
        url = simulator.url("/postmark/email")
        long_name = await client.post(
            url, json={**message, "Metadata": {"resilient-operation-id": "x"}}
        )
        fits = await client.post(url, json={**message, "Metadata": {"resilient-op-id": "x"}})
    assert long_name.status_code == 422
    assert fits.status_code == 200
