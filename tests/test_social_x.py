"""X (API v2 posts): the wire format, end to end over loopback, and X's own rules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from providers import Post
from resilient.errors import FatalError
from resilient.testing import Simulator
from tests.test_social_support import gateway, mount_networks, post


@pytest.fixture
def networks(simulator: Simulator) -> dict[str, Any]:
    return mount_networks(simulator)


def test_wire_format_is_what_x_documents(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.x.com/2/tweets").mock(
            return_value=httpx.Response(
                201, json={"data": {"id": "1445880548472328192", "text": "We're back"}}
            )
        )
        with gateway(None, tmp_path, "x") as gw:
            result = gw.sync.social.post(
                Post(account="x", text="We're back", link="https://status.example.com")
            )
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer x-user-token-8c1f"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"text": "We're back\n\nhttps://status.example.com"}
    assert "idempotency-key" not in request.headers  # X has none to offer
    assert result.value is not None
    assert result.value.message_id == "1445880548472328192"


async def test_posts_end_to_end(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "x")
    try:
        result = await post(gw, mode, Post(account="x", text="Hello from the gateway"))
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.provider == "x"
    assert result.value is not None
    assert networks["x"].posts[result.value.message_id]["text"] == "Hello from the gateway"


async def test_duplicate_content_is_final_not_parked(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "x", background_replay=False)
    try:
        await post(gw, mode, Post(account="x", text="Same words"))
        with pytest.raises(FatalError):  # 403: a replay would only meet the same refusal
            await post(gw, mode, Post(account="x", text="Same words"))
    finally:
        await gw.aclose()
    assert len(simulator.requests(prefix="/x")) == 2
    assert len(networks["x"].posts) == 1


def test_the_kind_reads_x_rate_limit_reset_as_the_wait(tmp_path: Path) -> None:
    # x-rate-limit-reset is an epoch time, not Retry-After's delay: the wait is reset - now
    now = time.time()
    headers = {"x-rate-limit-reset": str(int(now) + 10), "x-rate-limit-remaining": "0"}
    with gateway(None, tmp_path, "x") as gw:
        verdict = gw.provider("x").classifier.response(429, headers, now=now)
    assert verdict.server_delay is not None
    assert 9.0 <= verdict.server_delay <= 10.0


async def test_429_with_x_rate_limit_reset_holds_every_post_until_the_reset(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    networks["x"].exhaust(120)  # the window resets in two minutes, past max_server_delay
    gw = gateway(simulator, tmp_path, "x", background_replay=False)
    try:
        first = await post(gw, mode, Post(account="x", text="one"))
        sent = len(simulator.requests(prefix="/x"))
        second = await post(gw, mode, Post(account="x", text="two"))
    finally:
        await gw.aclose()
    assert (first.status, second.status) == ("deferred", "deferred")
    assert sent == 1  # not retried into a spent window
    assert len(simulator.requests(prefix="/x")) == 1  # the next post waited too: nothing sent
