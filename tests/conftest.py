"""Shared helpers: gateways over the simulator, driven through the sync or the async executor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from resilient.gateway import Gateway
from resilient.result import Result
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.testing import SimResponse, Simulator

FAST_RETRY = RetrySettings(attempts=3, backoff_base=0.01, backoff_cap=0.05)


@pytest.fixture(autouse=True)
def _own_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in a directory of its own: gateways keep their spool, ledger and overrides
    under `.resilient/` by default, and one test's operations must not be another's."""
    monkeypatch.chdir(tmp_path)


def provider(name: str, base_url: str, **overrides: Any) -> ProviderSettings:
    """A provider with test-sized timeouts and backoff unless overridden."""
    values: dict[str, Any] = {
        "timeouts": TimeoutSettings(connect=0.5, read=1.0, write=1.0, attempt=1.0),
        "retry": FAST_RETRY,
        "breaker": BreakerSettings(min_calls=5, window=5.0, open_for=0.3, open_for_max=1.0),
    }
    values.update(overrides)
    return ProviderSettings(name=name, kind="http", base_url=base_url, **values)


def gateway_for(*providers: ProviderSettings, timeout: float | None = None) -> Gateway:
    chain = tuple(p.name for p in providers)
    return Gateway(
        GatewaySettings(
            providers={p.name: p for p in providers},
            capabilities={"http": CapabilitySettings("http", chain, timeout=timeout)},
        )
    )


Call = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every end-to-end behaviour runs through both executors."""
    return str(request.param)


def caller(gw: Gateway, mode: str) -> Callable[..., Any]:
    """`await call("POST", "/x", json=...)` through gw.http (async) or gw.sync.http in a thread."""

    async def call(method: str, url: str, **kwargs: Any) -> Result[httpx.Response]:
        if mode == "sync":
            return await asyncio.to_thread(gw.sync.http.request, method, url, **kwargs)
        return await gw.http.request(method, url, **kwargs)  # type: ignore[no-any-return]

    return call


def provider_table(kind: str, base_url: str | None, **fields: Any) -> dict[str, Any]:
    """A provider's config table with test-sized retries; without `base_url`, its public API
    (which respx intercepts)."""
    table: dict[str, Any] = {
        "kind": kind,
        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
        **fields,
    }
    if base_url is not None:
        table["base_url"] = base_url
    return table


def capability_gateway(capability: str, chain: list[str], **providers: dict[str, Any]) -> Gateway:
    """A gateway whose `capability` chain is `chain`, from provider config tables."""
    from resilient.config import settings_from_mapping

    return Gateway(
        settings_from_mapping(
            {"providers": providers, "capabilities": {capability: {"chain": chain}}}
        )
    )


async def send_message(gw: Gateway, mode: str, message: Any, **kwargs: Any) -> Any:
    """Send an Email or Sms through its capability's facade: blocking in a thread, or awaited."""
    facade = message.capability
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.capability(facade).send, message, **kwargs)
    return await gw.capability(facade).send(message, **kwargs)


def receipt(result: Result[Any]) -> Any:
    """The Receipt of a delivered result."""
    assert result.value is not None
    return result.value


@pytest.fixture
def two_providers(simulator: Simulator) -> Iterator[Simulator]:
    """The simulator serving POST/GET /a/v1/things and /b/v1/things with 200 JSON."""
    for prefix in ("/a", "/b"):
        for method in ("GET", "POST"):
            simulator.route(
                method,
                f"{prefix}/v1/things",
                lambda request, _p=prefix: SimResponse.json({"served_by": _p[1:]}),
            )
    yield simulator
