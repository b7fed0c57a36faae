"""Facebook Pages (Graph API feed): the wire format, end to end over loopback, and its rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

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


def test_wire_format_is_what_the_graph_api_documents(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://graph.facebook.com/v24.0/1234567890/feed").mock(
            return_value=httpx.Response(200, json={"id": "1234567890_987654321"})
        )
        with gateway(None, tmp_path, "facebook") as gw:
            result = gw.sync.social.post(
                Post(account="facebook", text="Open today 9-5", link="https://shop.example.com")
            )
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers  # the Page token travels as access_token
    assert parse_qs(request.content.decode()) == {
        "message": ["Open today 9-5"],
        "link": ["https://shop.example.com"],  # the Graph API has a field for it
        "access_token": ["fb-page-token-9e77"],
    }
    assert result.value is not None
    assert result.value.message_id == "1234567890_987654321"


def test_the_graph_version_is_an_option(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://graph.facebook.com/v21.0/42/feed").mock(
            return_value=httpx.Response(200, json={"id": "42_1"})
        )
        with gateway(None, tmp_path, "facebook", version="v21.0", page_id="42") as gw:
            gw.sync.social.post(Post(account="facebook", text="hi"))
    assert route.called


async def test_posts_end_to_end(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "facebook")
    try:
        result = await post(
            gw, mode, Post(account="facebook", text="New menu", link="https://menu.example.com")
        )
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.value is not None
    assert result.value.message_id.startswith("1234567890_")
    made = networks["facebook"].posts[result.value.message_id]
    assert (made["message"], made["link"]) == ("New menu", "https://menu.example.com")


async def test_an_invalid_page_token_is_final_and_not_retried(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    # The Graph API answers an invalid token (code 190) with a 400, like an invalid post: by
    # status alone it is final, so it is raised rather than parked (see the report)
    networks["facebook"].token = "a-different-token"
    gw = gateway(simulator, tmp_path, "facebook", background_replay=False)
    try:
        with pytest.raises(FatalError) as failed:
            await post(gw, mode, Post(account="facebook", text="hello"))
    finally:
        await gw.aclose()
    assert len(simulator.requests(prefix="/facebook")) == 1
    assert failed.value.response is not None
    assert failed.value.response.json()["error"]["code"] == 190
