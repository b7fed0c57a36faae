"""LinkedIn (Posts API): the wire format, end to end over loopback, options and LinkedIn's rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from providers import Post
from resilient.config import settings_from_mapping
from resilient.errors import ConfigError
from resilient.testing import Simulator
from tests.test_social_support import gateway, mount_networks, post


@pytest.fixture
def networks(simulator: Simulator) -> dict[str, Any]:
    return mount_networks(simulator)


def test_wire_format_is_what_linkedin_documents(tmp_path: Path) -> None:
    urn = "urn:li:share:6844785523593134080"
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.linkedin.com/rest/posts").mock(
            return_value=httpx.Response(201, headers={"x-restli-id": urn})
        )
        with gateway(None, tmp_path, "linkedin") as gw:
            result = gw.sync.social.post(
                Post(
                    account="linkedin",
                    text="Launch (beta) #1 @team",
                    link="https://example.com/a_b",
                )
            )
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer li-member-token-41d2"
    assert request.headers["linkedin-version"] == "202605"
    assert request.headers["x-restli-protocol-version"] == "2.0.0"
    assert json.loads(request.content) == {
        "author": "urn:li:organization:5515715",
        # "little" text: reserved characters escaped, or LinkedIn cuts the post at the first one
        "commentary": r"Launch \(beta\) \#1 \@team" + "\n\n" + r"https://example.com/a\_b",
        "visibility": "PUBLIC",
        "distribution": {
            "feedDistribution": "MAIN_FEED",
            "targetEntities": [],
            "thirdPartyDistributionChannels": [],
        },
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": False,
    }
    assert result.value is not None
    assert result.value.message_id == urn  # from the x-restli-id header: the body is empty


async def test_posts_end_to_end(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gw = gateway(simulator, tmp_path, "linkedin")
    try:
        result = await post(gw, mode, Post(account="linkedin", text="Hiring: SREs (remote)"))
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert result.value is not None
    made = networks["linkedin"].posts[result.value.message_id]
    assert made["commentary"] == r"Hiring: SREs \(remote\)"
    assert result.value.message_id.startswith("urn:li:share:")


def test_the_version_and_author_are_config_options(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.linkedin.com/rest/posts").mock(
            return_value=httpx.Response(201, headers={"x-restli-id": "urn:li:share:1"})
        )
        options = {"version": "202601", "author": "urn:li:person:8675309"}
        with gateway(None, tmp_path, "linkedin", **options) as gw:
            gw.sync.social.post(Post(account="linkedin", text="hi"))
    request = route.calls.last.request
    assert request.headers["linkedin-version"] == "202601"
    assert json.loads(request.content)["author"] == "urn:li:person:8675309"


def test_a_provider_without_an_author_is_refused_at_load() -> None:
    table = {"kind": "linkedin", "api_key": "t"}
    with pytest.raises(ConfigError, match=r"providers\.linkedin\.author"):
        settings_from_mapping(
            {"providers": {"linkedin": table}, "capabilities": {"social": {"chain": ["linkedin"]}}}
        )


async def test_an_inactive_version_parks_the_post_for_ops_to_fix(
    simulator: Simulator, networks: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    networks["linkedin"].inactive_versions.add("202605")
    gw = gateway(simulator, tmp_path, "linkedin", background_replay=False)
    try:
        result = await post(gw, mode, Post(account="linkedin", text="Quarterly update"))
    finally:
        await gw.aclose()
    # 426 is our config, like a bad token: parked (not raised as if the post were invalid),
    # and not retried against a version that will stay inactive
    assert result.status == "deferred"
    assert [r.status for r in simulator.requests(prefix="/linkedin")] == [426]
