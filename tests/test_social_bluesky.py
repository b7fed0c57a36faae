"""Bluesky (AT Protocol): the session and record on the wire, the session kept across posts, and
posts end to end over loopback through the `prepare` hook."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from providers import Post
from providers.social.bluesky import BlueskyAdapter, Preparation
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.runtime import ProviderRuntime
from resilient.testing import Simulator
from tests.test_social_support import gateway, mount_networks, post

PDS = "https://bsky.social/xrpc"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
URI = f"at://{DID}/app.bsky.feed.post/3k43tv4rft22g"


@pytest.fixture
def networks(simulator: Simulator) -> dict[str, Any]:
    return mount_networks(simulator)


def jwt(expires: float) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": expires}).encode()).decode().rstrip("=")
    return f"eyJ0eXAiOiJhdCtqd3QifQ.{claims}.c2ln"


def session(expires: float = 4102444800) -> httpx.Response:
    body = {"did": DID, "handle": "brand.bsky.social", "accessJwt": jwt(expires)}
    return httpx.Response(200, json={**body, "refreshJwt": "r"})


def drive(steps: Preparation, answers: list[httpx.Response]) -> tuple[list[httpx.Request], Any]:
    """Run a preparation as the operation would: (requests it asked for, how it ended)."""
    asked = []
    try:
        request = next(steps)
        while True:
            asked.append(request)
            answer = answers[len(asked) - 1]
            answer.request = request  # as a client's send() sets it
            request = steps.send(answer)
    except StopIteration as done:
        return asked, done.value


def runtime(gw: Gateway) -> ProviderRuntime:
    return gw.provider("bluesky")


def test_wire_format_is_what_the_at_protocol_documents(tmp_path: Path) -> None:
    with gateway(None, tmp_path, "bluesky") as gw:
        rt = runtime(gw)
        asked, ended = drive(rt.adapter.prepare(rt), [session()])
        request = rt.adapter.build(
            Post(account="bluesky", text="Café ☕ reopens", link="https://cafe.example.com"),
            rt,
            "op-1",
        )
    assert ended is None  # signed in: ready to build
    (login,) = asked
    assert (login.method, str(login.url)) == ("POST", f"{PDS}/com.atproto.server.createSession")
    assert json.loads(login.content) == {
        "identifier": "brand.bsky.social",
        "password": "bsky-app-pass-3c6d",
    }
    assert (request.method, str(request.url)) == ("POST", f"{PDS}/com.atproto.repo.createRecord")
    assert request.headers["authorization"] == f"Bearer {jwt(4102444800)}"
    body = json.loads(request.content)
    record = body.pop("record")
    assert body == {"repo": DID, "collection": "app.bsky.feed.post"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.pop("createdAt"))
    text = "Café ☕ reopens\n\nhttps://cafe.example.com"
    start = len("Café ☕ reopens\n\n".encode())  # facets count UTF-8 bytes: é and ☕ are 2 and 3
    assert record == {
        "$type": "app.bsky.feed.post",
        "text": text,
        "facets": [
            {
                "index": {"byteStart": start, "byteEnd": start + 24},
                "features": [
                    {"$type": "app.bsky.richtext.facet#link", "uri": "https://cafe.example.com"}
                ],
            }
        ],
    }
    answer = httpx.Response(200, json={"uri": URI, "cid": "bafyrei", "validationStatus": "valid"})
    assert rt.adapter.message_id(answer) == URI


def test_the_session_is_kept_until_shortly_before_its_token_expires(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    adapter = BlueskyAdapter("brand.bsky.social", clock=lambda: now[0])
    with gateway(None, tmp_path, "bluesky") as gw:
        rt = runtime(gw)
        assert len(drive(adapter.prepare(rt), [session(now[0] + 7200)])[0]) == 1
        assert drive(adapter.prepare(rt), []) == ([], None)  # kept: nothing to send
        now[0] += 7200 - 30  # within a minute of expiry: the token may lapse mid-attempt
        assert len(drive(adapter.prepare(rt), [session(now[0] + 7200)])[0]) == 1


def test_a_failed_sign_in_ends_the_attempt_with_its_answer(tmp_path: Path) -> None:
    refused = httpx.Response(
        401, json={"error": "AuthenticationRequired", "message": "Invalid identifier or password"}
    )
    with gateway(None, tmp_path, "bluesky") as gw:
        rt = runtime(gw)
        _, ended = drive(rt.adapter.prepare(rt), [refused])
        assert ended is refused  # the pipeline classifies it: a 401, not retried
        _, ended = drive(rt.adapter.prepare(rt), [httpx.Response(200, json={"handle": "x"})])
        assert ended.status_code == 502  # a 200 without a session is no success
        with pytest.raises(ResilientError, match="prepare"):  # never built without a session
            rt.adapter.build(Post(account="bluesky", text="hi"), rt, "op-1")


def test_the_record_uri_is_the_message_id_through_the_facade(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{PDS}/com.atproto.server.createSession").mock(return_value=session())
        record = mock.post(f"{PDS}/com.atproto.repo.createRecord").mock(
            return_value=httpx.Response(200, json={"uri": URI, "cid": "bafyrei"})
        )
        with gateway(None, tmp_path, "bluesky") as gw:
            result = gw.sync.social.post(Post(account="bluesky", text="hi"))
    assert record.calls.last.request.headers["authorization"] == f"Bearer {jwt(4102444800)}"
    assert result.value is not None
    assert result.value.message_id == URI


async def test_posts_end_to_end_on_one_session(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "bluesky")
    try:
        first = await post(gw, mode, Post(account="bluesky", text="one"))
        second = await post(gw, mode, Post(account="bluesky", text="two"))
    finally:
        await gw.aclose()
    assert (first.status, second.status) == ("delivered", "delivered")
    assert first.value is not None
    assert second.value is not None
    posts = networks["bluesky"].posts
    assert (posts[first.value.message_id]["text"], posts[second.value.message_id]["text"]) == (
        "one",
        "two",
    )
    assert networks["bluesky"].sessions_created == 1


async def test_a_short_lived_token_is_renewed_before_each_post(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    networks["bluesky"].access_ttl = 30.0  # shorter than the renewal margin
    gw = gateway(simulator, tmp_path, "bluesky")
    try:
        for text in ("one", "two"):
            assert (await post(gw, mode, Post(account="bluesky", text=text))).status == "delivered"
    finally:
        await gw.aclose()
    assert networks["bluesky"].sessions_created == 2
