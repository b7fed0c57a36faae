"""gw.llm end to end on the simulator, sync and async: an openai -> anthropic chain fails over
on a 503, a silent provider (after its first silent attempt) and a 429 asking for longer than the
call may wait; the caller sees the fallback's model and usage only. A prompt too long for the
model is not retried, and a chat is never parked."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

# importing providers.llm registers the llm kinds and facade (providers.kinds does not yet)
from providers.llm import ChatResponse, ContextLengthExceeded, Usage
from resilient.config import settings_from_mapping
from resilient.errors import ChainExhausted
from resilient.gateway import Gateway
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import anthropic as anthropic_routes
from resilient.testing.routes import openai as openai_routes
from resilient.testing.routes.anthropic import AnthropicState
from resilient.testing.routes.openai import OpenAIState

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


# Attempt timeouts a busy machine's answers always meet; a provider that is made silent gets
# a short one of its own (SILENT) where the wait is what the test is about.
PATIENT = {"connect": "5s", "attempt": "5s"}
SILENT = 0.5  # seconds


def gateway(
    sim: Simulator,
    retry: dict[str, Any] | None = None,
    classify_400: str | None = None,
    openai_timeout: dict[str, str] | None = None,
    **extra: Any,
) -> Gateway:
    """openai -> anthropic on `sim`; `extra` goes to the llm capability (`top`: top-level keys);
    `classify_400` makes config treat a 400 some other way (a prompt too long stays final)."""
    common: dict[str, Any] = {
        "retry": {"attempts": 3, "backoff": "10ms..20ms", **(retry or {})},
        "timeout": PATIENT,
    }
    if classify_400 is not None:
        common["classify"] = {"400": classify_400}
    return Gateway(
        settings_from_mapping(
            {
                **extra.pop("top", {}),
                "providers": {
                    "openai": {
                        "kind": "openai",
                        "api_key": "sk-test",
                        "base_url": sim.url("/openai/v1"),
                        "models": {"fast": "gpt-4o-mini"},
                        **common,
                        "timeout": openai_timeout or PATIENT,
                    },
                    "anthropic": {
                        "kind": "anthropic",
                        "api_key": "sk-ant-test",
                        "base_url": sim.url("/anthropic"),
                        "models": {"fast": "claude-3-5-haiku-latest"},
                        **common,
                    },
                },
                "capabilities": {"llm": {"chain": ["openai", "anthropic"], **extra}},
            }
        )
    )


@pytest.fixture
def llms(simulator: Simulator) -> tuple[OpenAIState, AnthropicState]:
    return (
        openai_routes.mount(simulator, "/openai"),
        anthropic_routes.mount(simulator, "/anthropic"),
    )


async def chat(gw: Gateway, mode: str, **kwargs: Any) -> Result[ChatResponse]:
    if mode == "sync":
        result: Result[ChatResponse] = await asyncio.to_thread(gw.sync.llm.chat, ASK, **kwargs)
    else:
        result = await gw.llm.chat(ASK, **kwargs)
    return result


def served_by_anthropic(result: Result[ChatResponse], anthropic: AnthropicState) -> None:
    """The fallback's answer, model and usage: nothing of the failed attempts."""
    assert result.status == "delivered"
    assert result.provider == "anthropic"
    assert len(anthropic.messages) == 1
    served = anthropic.messages[0]
    assert anthropic.requests[0]["model"] == "claude-3-5-haiku-latest"
    assert anthropic.requests[0]["system"] == "Be brief."
    assert result.value == ChatResponse(
        text="echo: Say hello",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(served["usage"]["input_tokens"], served["usage"]["output_tokens"]),
        provider="anthropic",
        model="claude-3-5-haiku-latest",
    )
    assert result.attempts[-1].provider == "anthropic"


async def test_openai_serves_when_up(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    openai, anthropic = llms
    gw = gateway(simulator)
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    assert result.provider == "openai"
    assert result.value is not None
    assert result.value.model == "gpt-4o-mini"
    assert result.value.text == "echo: Say hello"
    assert result.value.usage == Usage(4, 3)  # the simulator counts words
    assert len(openai.completions) == 1
    assert anthropic.messages == []


async def test_fails_over_on_a_503(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    openai, anthropic = llms
    outage = simulator.inject(Fault.status(503), prefix="/openai")
    gw = gateway(simulator)
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    served_by_anthropic(result, anthropic)
    assert outage.hits == 3  # retried on openai within its attempts first
    assert [a.provider for a in result.attempts] == ["openai"] * 3 + ["anthropic"]
    assert openai.completions == []


async def test_fails_over_after_the_first_silent_attempt(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    _, anthropic = llms
    silent = simulator.inject(Fault.hang(), prefix="/openai")
    gw = gateway(simulator, openai_timeout={"attempt": f"{SILENT}s"})
    started = time.monotonic()
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    elapsed = time.monotonic() - started
    served_by_anthropic(result, anthropic)
    assert silent.hits == 1  # a silent provider is not asked again: the wait would multiply
    assert [a.provider for a in result.attempts] == ["openai", "anthropic"]
    assert elapsed < 3 * SILENT  # one attempt timeout, not three


async def test_a_reset_before_headers_is_retried_then_failed_over(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """A connection reset before any answer: retried on openai (a chat can be asked again),
    then, still reset, failed over: served by anthropic after every openai attempt."""
    _, anthropic = llms
    reset = simulator.inject(Fault.reset(), prefix="/openai")
    gw = gateway(simulator)
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    served_by_anthropic(result, anthropic)
    assert reset.hits == 3  # every configured attempt, then the next provider
    assert [a.provider for a in result.attempts] == ["openai"] * 3 + ["anthropic"]


async def test_a_429_longer_than_the_deadline_fails_over_at_once(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """Retry-After 10 s is within what the provider would wait (max_server_delay 60 s) but
    beyond the call's 5 s deadline: the call moves on instead of waiting."""
    _, anthropic = llms
    limited = simulator.inject(Fault.rate_limited(retry_after=10), prefix="/openai")
    gw = gateway(simulator, retry={"max_server_delay": "60s"})
    started = time.monotonic()
    try:
        result = await chat(gw, mode, deadline=5.0)
    finally:
        await gw.aclose()
    elapsed = time.monotonic() - started
    served_by_anthropic(result, anthropic)
    assert limited.hits == 1
    assert elapsed < 3.0  # neither the 10 s asked for nor the deadline's 5 s


TOO_LONG_AT_OPENAI = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130001 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


async def test_context_length_exceeded_at_openai_is_not_retried(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    _, anthropic = llms
    refusal = simulator.inject(Fault.status(400, json=TOO_LONG_AT_OPENAI), prefix="/openai")
    gw = gateway(simulator, retry={"retry_ambiguous": True}, classify_400="retryable")
    try:
        with pytest.raises(ContextLengthExceeded, match="openai") as raised:
            await chat(gw, mode)
    finally:
        await gw.aclose()
    assert refusal.hits == 1
    assert anthropic.messages == []
    assert [(a.provider, a.reason) for a in raised.value.attempts] == [
        ("openai", "400 context_length_exceeded")
    ]


async def test_context_length_exceeded_at_anthropic_is_not_retried(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    _, anthropic = llms
    anthropic.context_window = 3  # "Be brief." and "Say hello" are four words
    simulator.inject(Fault.status(503), prefix="/openai")
    gw = gateway(simulator, classify_400="retryable")
    try:
        with pytest.raises(ContextLengthExceeded, match="anthropic") as raised:
            await chat(gw, mode)
    finally:
        await gw.aclose()
    asked = simulator.requests(prefix="/anthropic")
    assert len(asked) == 1
    assert [r.status for r in asked] == [400]
    assert raised.value.attempts[-1].reason == "400 context_length_exceeded"


async def test_a_chat_is_never_parked(
    simulator: Simulator,
    llms: tuple[OpenAIState, AnthropicState],
    mode: str,
    tmp_path: Path,
) -> None:
    """Even on a capability that defers by default: an answer later is no answer."""
    simulator.inject(Fault.status(503))
    gw = gateway(simulator, defer=True, top={"gateway": {"spool_path": str(tmp_path / "s.db")}})
    try:
        with pytest.raises(ChainExhausted):
            await chat(gw, mode)
        stats = gw.deferral.spool.stats()  # type: ignore[attr-defined]
    finally:
        await gw.aclose()
    assert stats["ready"] + stats["leased"] == 0
    assert {r.path.split("/")[1] for r in simulator.requests()} == {"openai", "anthropic"}
