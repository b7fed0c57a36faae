"""Shared by the social tests (no tests of its own): gateways over the simulated networks, a post
through either executor, and probes for the core changes the social adapters rely on.

"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from providers import Post
from providers.facades import Receipt
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.result import Result
from resilient.testing import Simulator
from resilient.testing.routes import mount

NETWORKS = ("x", "linkedin", "facebook", "mastodon", "bluesky")
TOKENS = {
    "x": "x-user-token-8c1f",
    "linkedin": "li-member-token-41d2",
    "facebook": "fb-page-token-9e77",
    "mastodon": "masto-token-5a0b",
    "bluesky": "bsky-app-pass-3c6d",
}
OPTIONS: dict[str, dict[str, str]] = {
    "linkedin": {"author": "urn:li:organization:5515715"},
    "facebook": {"page_id": "1234567890"},
    "bluesky": {"handle": "brand.bsky.social"},
}
CREATE_PATHS = {  # the endpoint that makes the post, under the network's prefix
    "x": "/2/tweets",
    "linkedin": "/rest/posts",
    "facebook": "/v24.0/1234567890/feed",
    "mastodon": "/api/v1/statuses",
    "bluesky": "/xrpc/com.atproto.repo.createRecord",
}
MASTODON_INSTANCE = "https://mastodon.example"


def account(name: str, base_url: str | None, **overrides: Any) -> dict[str, Any]:
    """The config table of provider `name` (of kind `name`), with test-sized policies."""
    table: dict[str, Any] = {
        "kind": name,
        "api_key": TOKENS[name],
        "timeout": "1s",
        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
        "breaker": {"min_calls": 3, "window": "5s", "open_for": "300ms", "open_for_max": "300ms"},
        **OPTIONS.get(name, {}),
    }
    if base_url is not None:
        table["base_url"] = base_url
    elif name == "mastodon":
        table["base_url"] = MASTODON_INSTANCE
    return {**table, **overrides}


def gateway(
    sim: Simulator | None,
    tmp_path: Path,
    *names: str,
    background_replay: bool = True,
    **overrides: Any,
) -> Gateway:
    """A gateway whose "social" chain is `names`, each at `/<name>` on `sim` (or at its public
    API when `sim` is None), deferring into a spool under `tmp_path`."""
    settings = settings_from_mapping(
        {
            "gateway": {"spool_path": str(tmp_path / "spool.db")},
            "providers": {
                name: account(name, None if sim is None else sim.url(f"/{name}"), **overrides)
                for name in names
            },
            "capabilities": {"social": {"chain": list(names), "defer": True}},
        }
    )
    return Gateway(settings, background_replay=background_replay)


async def post(gw: Gateway, mode: str, model: Post, **kwargs: Any) -> Result[Receipt]:
    """`await gw.social.post(...)`, or `gw.sync.social.post(...)` in a thread."""
    if mode == "sync":
        result: Result[Receipt] = await asyncio.to_thread(gw.sync.social.post, model, **kwargs)
    else:
        result = await gw.social.post(model, **kwargs)
    return result


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def pending(gw: Gateway) -> int:
    """Parked requests not yet settled."""
    stats = gw.deferral.spool.stats()  # type: ignore[attr-defined]
    return int(stats["ready"] + stats["leased"])


def mount_networks(sim: Simulator) -> dict[str, Any]:
    """Every network's routes at `/<name>`, by name; Bluesky has the configured account."""
    states = {name: mount(sim, name, prefix=f"/{name}") for name in NETWORKS}
    states["bluesky"].add_account(OPTIONS["bluesky"]["handle"], TOKENS["bluesky"])
    return states


# -- probes for the proposed core changes ------------------------------------------------------
