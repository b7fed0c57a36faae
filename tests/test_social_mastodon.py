"""Mastodon (statuses): the wire format with its Idempotency-Key, end to end over loopback, and
what the key buys: a post that may have gone out is retried without posting twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from providers import Post
from resilient.config import settings_from_mapping
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.testing import Fault, Simulator
from tests.test_social_support import (
    MASTODON_INSTANCE,
    gateway,
    mount_networks,
    post,
)


@pytest.fixture
def networks(simulator: Simulator) -> dict[str, Any]:
    return mount_networks(simulator)


def test_wire_format_is_what_mastodon_documents(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{MASTODON_INSTANCE}/api/v1/statuses").mock(
            return_value=httpx.Response(200, json={"id": "109382", "content": "<p>hi</p>"})
        )
        with gateway(None, tmp_path, "mastodon") as gw:
            result = gw.sync.social.post(
                Post(
                    account="mastodon",
                    text="We're back",
                    link="https://status.example.com",
                    idempotency_key="post-42",
                )
            )
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer masto-token-5a0b"
    assert request.headers["idempotency-key"] == "post-42"  # the operation id
    assert json.loads(request.content) == {"status": "We're back\n\nhttps://status.example.com"}
    assert result.value is not None
    assert result.value.message_id == "109382"


def test_an_account_without_an_instance_is_refused_when_the_gateway_is_built() -> None:
    settings = settings_from_mapping(
        {
            "providers": {"mastodon": {"kind": "mastodon", "api_key": "t"}},
            "capabilities": {"social": {"chain": ["mastodon"]}},
        }
    )
    with pytest.raises(ResilientError, match="base_url"):
        Gateway(settings)


async def test_posts_end_to_end(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "mastodon")
    try:
        result = await post(gw, mode, Post(account="mastodon", text="Maintenance at 02:00 UTC"))
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.value is not None
    status = networks["mastodon"].statuses[result.value.message_id]
    assert status["content"] == "<p>Maintenance at 02:00 UTC</p>"


async def test_a_reset_after_posting_is_retried_with_the_same_key_and_posts_once(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    # The status is made, then the connection drops before the answer: the outcome is
    # ambiguous. Mastodon honours the key, so the retry is safe and returns the same status.
    simulator.inject(Fault.reset(after_effect=True), prefix="/mastodon", times=1)
    gw = gateway(simulator, tmp_path, "mastodon", background_replay=False)
    try:
        result = await post(gw, mode, Post(account="mastodon", text="Deploy done"))
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    requests = simulator.requests(prefix="/mastodon")
    assert len(requests) == 2
    assert len({r.idempotency_key for r in requests}) == 1
    assert result.value is not None
    assert list(networks["mastodon"].statuses) == [result.value.message_id]


async def test_429_with_an_iso_rate_limit_reset_parks_the_post_until_then(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    networks["mastodon"].exhaust(120)  # X-RateLimit-Reset: an ISO 8601 time two minutes out
    gw = gateway(simulator, tmp_path, "mastodon", background_replay=False)
    try:
        result = await post(gw, mode, Post(account="mastodon", text="later"))
        account = gw.provider("mastodon")
        reset = account.limiter.paused_for(account.clock())
    finally:
        await gw.aclose()
    assert result.status == "deferred"
    assert len(simulator.requests(prefix="/mastodon")) == 1
    assert 100 < reset <= 120  # every caller of this account waits for the reset
