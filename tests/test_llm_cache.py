"""Degraded mode (providers.llm.cache): a cacheable chat's answer is served from the cache only
when no provider of the chain can answer (down, or every breaker open), marked stale with its
age; never for a chat that was not cacheable, a different chat, an expired answer or a refused
request; in memory (bounded) or in Redis, shared by gateways and free of keys and prompts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from providers.llm import ChatResponse, Usage
from providers.llm import cache as llm_cache
from providers.llm.cache import MemoryStore
from resilient.config import settings_from_mapping
from resilient.errors import ChainExhausted, ConfigError, FatalError
from resilient.gateway import Gateway
from resilient.result import Result
from resilient.settings import CacheSettings
from resilient.testing import Fault, Simulator
from resilient.testing.routes import anthropic as anthropic_routes
from resilient.testing.routes import openai as openai_routes

OPENAI_KEY = "sk-test-Ca17canary"
ANTHROPIC_KEY = "sk-ant-test-Ca28canary"
ASK = [{"role": "user", "content": "What are your opening hours?"}]


def gateway(sim: Simulator, cache: dict[str, Any] | None = None, **top: Any) -> Gateway:
    common = {"retry": {"attempts": 2, "backoff": "10ms..20ms"}, "timeout": "500ms"}
    capability: dict[str, Any] = {"chain": ["openai", "anthropic"]}
    if cache is not None:
        capability["cache"] = cache
    return Gateway(
        settings_from_mapping(
            {
                **top,
                "providers": {
                    "openai": {
                        "kind": "openai",
                        "api_key": OPENAI_KEY,
                        "base_url": sim.url("/openai/v1"),
                        "models": {"fast": "gpt-4o-mini"},
                        **common,
                    },
                    "anthropic": {
                        "kind": "anthropic",
                        "api_key": ANTHROPIC_KEY,
                        "base_url": sim.url("/anthropic"),
                        "models": {"fast": "claude-3-5-haiku-latest"},
                        **common,
                    },
                },
                "capabilities": {"llm": capability},
            }
        )
    )


@pytest.fixture
def llms(simulator: Simulator) -> Simulator:
    openai_routes.mount(simulator, "/openai")
    anthropic_routes.mount(simulator, "/anthropic")
    return simulator


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The cache's wall clock, moved by hand: `clock[0] += 120`."""
    now = [1_700_000_000.0]
    monkeypatch.setattr(llm_cache, "_now", lambda: now[0])
    return now


async def chat(gw: Gateway, mode: str, messages: Any = ASK, **kwargs: Any) -> Result[ChatResponse]:
    if mode == "sync":
        result: Result[ChatResponse] = await asyncio.to_thread(gw.sync.llm.chat, messages, **kwargs)
    else:
        result = await gw.llm.chat(messages, temperature=kwargs.pop("temperature", None), **kwargs)
    return result


async def test_served_stale_only_when_the_chain_is_down(
    llms: Simulator, mode: str, clock: list[float]
) -> None:
    gw = gateway(llms)
    try:
        fresh = await chat(gw, mode, cacheable=True)
        again = await chat(gw, mode, cacheable=True)  # up: asked again, not served stored
        clock[0] += 120
        llms.inject(Fault.status(503))  # every provider down
        stale = await chat(gw, mode, cacheable=True)
        with pytest.raises(ChainExhausted):  # a different chat has nothing stored
            await chat(gw, mode, [{"role": "user", "content": "Something else?"}], cacheable=True)
        with pytest.raises(ChainExhausted):  # the same chat for another model neither
            await chat(gw, mode, model="gpt-4o", cacheable=True)
    finally:
        await gw.aclose()
    assert fresh.stale_age is None and again.stale_age is None
    assert len(llms.effects(prefix="/openai")) == 2
    assert stale.status == "delivered"
    assert stale.stale_age == 120.0  # how old: since the last answer was stored
    assert stale.value == again.value
    assert stale.provider == "openai"  # who gave the answer, back then
    assert stale.attempts and all(a.outcome.value != "ok" for a in stale.attempts)
    assert {a.provider for a in stale.attempts} == {"openai", "anthropic"}


async def test_every_breaker_open_serves_stale(llms: Simulator, mode: str) -> None:
    gw = gateway(llms)
    try:
        await chat(gw, mode, cacheable=True)
        for name in ("openai", "anthropic"):
            gw.provider(name).breaker.hold("open")
        stale = await chat(gw, mode, cacheable=True)
    finally:
        await gw.aclose()
    assert stale.stale_age is not None
    assert [a.reason for a in stale.attempts] == ["breaker open", "breaker open"]
    assert len(llms.requests()) == 1  # nothing sent while the breakers were open


async def test_nothing_is_cached_unless_the_chat_is_cacheable(llms: Simulator, mode: str) -> None:
    gw = gateway(llms, cache={"ttl": "1h"})
    try:
        await chat(gw, mode)  # answered, but not marked cacheable: not stored
        await chat(gw, mode, temperature=0.0, cacheable=True)  # stored, for temperature 0
        llms.inject(Fault.status(503))
        with pytest.raises(ChainExhausted):
            await chat(gw, mode, cacheable=True)
        with pytest.raises(ChainExhausted):  # stored, but this call did not ask for the cache
            await chat(gw, mode, temperature=0.0)
        stale = await chat(gw, mode, temperature=0.0, cacheable=True)
    finally:
        await gw.aclose()
    assert stale.stale_age is not None


async def test_an_expired_answer_or_a_refused_request_is_not_served(
    llms: Simulator, clock: list[float]
) -> None:
    gw = gateway(llms, cache={"ttl": "10m"})
    try:
        await gw.llm.chat(ASK, cacheable=True)
        refused = llms.inject(Fault.status(400), prefix="/openai", times=1)
        with pytest.raises(FatalError):  # the request was refused: no stand-in for that
            await gw.llm.chat(ASK, cacheable=True)
        assert refused.hits == 1
        llms.inject(Fault.status(503))
        clock[0] += 601
        with pytest.raises(ChainExhausted):
            await gw.llm.chat(ASK, cacheable=True)
    finally:
        await gw.aclose()


def test_the_memory_store_keeps_the_most_recently_used(clock: list[float]) -> None:
    store = MemoryStore(CacheSettings(max_entries=2))
    answer: dict[str, Any] = {"text": "x"}
    store.put("a", clock[0], answer)
    store.put("b", clock[0], answer)
    assert store.get("a") is not None  # "a" used: "b" is now the least recent
    store.put("c", clock[0], answer)
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None


async def test_redis_backend_is_shared_by_gateways_and_holds_no_secrets(
    llms: Simulator, redis_url: str, mode: str
) -> None:
    import redis

    cache = {"backend": "redis", "ttl": "1h"}
    writer = gateway(llms, cache=cache, gateway={"redis_url": redis_url})
    reader = gateway(llms, cache=cache, gateway={"redis_url": redis_url})
    try:
        fresh = await chat(writer, mode, cacheable=True)
        llms.inject(Fault.status(503))
        stale = await chat(reader, mode, cacheable=True)  # another gateway, the same Redis
    finally:
        await writer.aclose()
        await reader.aclose()
    assert stale.stale_age is not None and stale.stale_age >= 0
    assert stale.value == fresh.value
    assert stale.value == ChatResponse(
        "echo: What are your opening hours?",
        [],
        "stop",
        Usage(5, 6),
        "openai",
        "gpt-4o-mini",
    )
    client = redis.Redis.from_url(redis_url)
    [key] = client.keys("resilient:llm-cache:*")
    assert 0 < client.ttl(key) <= 3600
    stored = client.get(key)
    assert isinstance(stored, bytes) and isinstance(key, bytes)
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, '"role"', '"messages"'):
        assert secret.encode() not in stored + key  # no credential, no request: the answer


async def test_a_store_out_of_reach_never_fails_the_call(llms: Simulator) -> None:
    """The cache's Redis down: the answer is returned all the same, just not kept."""
    gw = gateway(llms, cache={"backend": "redis"}, gateway={"redis_url": "redis://127.0.0.1:1/0"})
    try:
        result = await gw.llm.chat(ASK, cacheable=True)
        llms.inject(Fault.status(503))
        with pytest.raises(ChainExhausted):
            await gw.llm.chat(ASK, cacheable=True)
    finally:
        await gw.aclose()
    assert result.value is not None and result.stale_age is None


def test_a_redis_cache_needs_a_redis_url() -> None:
    with pytest.raises(ConfigError, match=r"capabilities\.llm\.cache\.backend"):
        settings_from_mapping(
            {
                "providers": {"openai": {"kind": "openai", "api_key": OPENAI_KEY}},
                "capabilities": {"llm": {"chain": ["openai"], "cache": {"backend": "redis"}}},
            }
        )
