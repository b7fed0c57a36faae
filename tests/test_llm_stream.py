"""gw.llm.stream end to end on the simulator, sync and async, over an openai -> anthropic chain:
text and tool calls assembled; nothing committed before the first chunk (a slow first chunk, a
429 or a 503 are handled like a chat's); a stream that stalls or is cut after it starts over on
the next provider with the original request (or, with restart off, ends in StreamInterrupted,
whose message names the cut first even when the fallback rejects the request); malformed events
skipped and counted; a stream without its end marker finalized with its usage; usage and model
from the provider that finished the answer only; never parked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

# importing providers.llm registers the llm kinds and facade (providers.kinds does not yet)
from providers.llm import ContextLengthExceeded, Usage
from providers.llm.errors import ContentRejected
from providers.llm.stream_run import ChatStream, SyncChatStream
from providers.llm.streaming import ChatChunk, StreamInterrupted
from resilient.config import settings_from_mapping
from resilient.errors import ChainExhausted, ConfigError, FatalError
from resilient.gateway import Gateway
from resilient.telemetry import Event, FailedOver
from resilient.testing import Fault, SimRequest, SimResponse, Simulator
from resilient.testing.routes import anthropic as anthropic_routes
from resilient.testing.routes import openai as openai_routes
from resilient.testing.routes.anthropic import AnthropicState
from resilient.testing.routes.openai import OpenAIState
from tests.conftest import provider_table

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
WEATHER = {"name": "get_weather", "parameters": {"type": "object"}}
# limits a busy machine's streams always meet (the simulator sends without pauses) ...
LIMITS = {
    "timeout": {"connect": "1s", "attempt": "3s"},
    "first_token_timeout": "5s",
    "idle_timeout": "5s",
}
# ... and short ones for a provider made slow or silent, where the limit is under test
SHORT = {"first_token_timeout": "500ms", "idle_timeout": "500ms"}
Stream = ChatStream | SyncChatStream


def gateway(
    sim: Simulator,
    capability: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    **options: dict[str, Any],
) -> Gateway:
    """openai -> anthropic on `sim`; `options` adds keys to a provider's table."""
    providers = {
        "openai": provider_table(
            "openai",
            sim.url("/openai/v1"),
            api_key="sk-test-Zq81canary",
            models={"fast": "gpt-4o-mini"},
            **{**LIMITS, **options.get("openai", {})},
        ),
        "anthropic": provider_table(
            "anthropic",
            sim.url("/anthropic"),
            api_key="sk-ant-test-Zq81canary",
            models={"fast": "claude-3-5-haiku-latest"},
            **{**LIMITS, **options.get("anthropic", {})},
        ),
    }
    chain = {"chain": ["openai", "anthropic"], **(capability or {})}
    return Gateway(
        settings_from_mapping(
            {**(top or {}), "providers": providers, "capabilities": {"llm": chain}}
        )
    )


@pytest.fixture
def llms(simulator: Simulator) -> tuple[OpenAIState, AnthropicState]:
    return (
        openai_routes.mount(simulator, "/openai"),
        anthropic_routes.mount(simulator, "/anthropic"),
    )


async def collect(gw: Gateway, mode: str, **kwargs: Any) -> tuple[list[ChatChunk], Stream]:
    """Every chunk of one stream, read by gw.sync.llm in a thread or by gw.llm; and the stream."""
    if mode == "sync":

        def read() -> tuple[list[ChatChunk], Stream]:
            stream = gw.sync.llm.stream(ASK, **kwargs)
            return list(stream), stream

        return await asyncio.to_thread(read)
    stream = gw.llm.stream(ASK, **kwargs)
    return [chunk async for chunk in stream], stream


def answer(chunks: list[ChatChunk]) -> str:
    """The text as a caller assembles it: a restarted chunk throws away what came before."""
    text = ""
    for chunk in chunks:
        text = chunk.text if chunk.restarted else text + chunk.text
    return text


def asked(sim: Simulator, prefix: str) -> list[dict[str, Any]]:
    return [r.json() for r in sim.requests(prefix=prefix)]


async def test_openai_streams_text(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert [c.text for c in chunks[:-1]] == ["echo:", " Say", " hello"]  # word by word
    final = chunks[-1]
    assert (final.finish_reason, final.usage) == ("stop", Usage(4, 3))
    assert {(c.provider, c.model) for c in chunks} == {("openai", "gpt-4o-mini")}
    assert [c.finish_reason for c in chunks[:-1]] == [None] * 3
    assert not any(c.restarted for c in chunks)
    assert stream.answer is not None and stream.answer.text == "echo: Say hello"
    (body,) = asked(simulator, "/openai")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_anthropic_streams_text(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    gw = gateway(simulator, capability={"chain": ["anthropic"]})
    try:
        chunks, _ = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert [c.text for c in chunks[:-1]] == ["echo:", " Say", " hello"]
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("stop", Usage(4, 3))
    assert chunks[-1].model == "claude-3-5-haiku-latest"
    (body,) = asked(simulator, "/anthropic")
    assert body["stream"] is True
    assert body["system"] == "Be brief."


@pytest.mark.parametrize("chain", [["openai"], ["anthropic"]])
async def test_tool_calls_come_assembled(
    simulator: Simulator,
    llms: tuple[OpenAIState, AnthropicState],
    mode: str,
    chain: list[str],
) -> None:
    """The arguments arrive in fragments; the caller gets one complete call, parsed."""
    openai, anthropic = llms
    arguments = {"city": "Paris", "unit": "celsius"}
    openai.tool_call = ("get_weather", arguments)
    anthropic.tool_use = ("get_weather", arguments)
    gw = gateway(simulator, capability={"chain": chain})
    try:
        chunks, stream = await collect(gw, mode, tools=[WEATHER])
    finally:
        await gw.aclose()
    calls = [call for chunk in chunks for call in chunk.tool_calls]
    assert len(calls) == 1
    assert (calls[0].name, calls[0].arguments) == ("get_weather", arguments)
    assert calls[0].id
    assert chunks[-1].finish_reason == "tool_calls"
    assert stream.answer is not None and stream.answer.tool_calls == calls
    (body,) = asked(simulator, f"/{chain[0]}")
    assert body["tools"] and body["stream"] is True


async def test_a_slow_first_chunk_fails_over(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """The head comes at once, the first chunk 2 s later: past the 500 ms time-to-first-token
    limit, though within the 3 s attempt timeout. The attempt fails over at once, unretried."""
    slow = simulator.inject(Fault.slow_first_token(2.0), prefix="/openai")
    gw = gateway(simulator, openai=SHORT)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert slow.hits == 1
    assert {c.provider for c in chunks} == {"anthropic"}
    assert not any(c.restarted for c in chunks)  # nothing was committed before: no restart
    assert answer(chunks) == "echo: Say hello"
    assert [(a.provider, a.reason) for a in stream.attempts] == [
        ("openai", "200 no first chunk within 0.5s"),
        ("anthropic", "200"),
    ]


async def test_a_stall_restarts_on_the_next_provider_without_prefill(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """openai sends its role chunk and two words, then goes silent: after the 500 ms idle
    limit the answer starts over on anthropic, with the original messages only."""
    openai, _ = llms
    openai.reply = lambda messages: "one two three four five"
    simulator.inject(Fault.stall_stream(after=3), prefix="/openai")
    gw = gateway(simulator, openai=SHORT)
    events: list[Event] = []
    gw.events.subscribe(events.append)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert [(c.text, c.provider, c.restarted) for c in chunks[:3]] == [
        ("one", "openai", False),
        (" two", "openai", False),
        ("echo:", "anthropic", True),
    ]
    assert answer(chunks) == "echo: Say hello"
    assert chunks[-1].provider == "anthropic"
    (restart,) = asked(simulator, "/anthropic")
    assert restart["messages"] == [{"role": "user", "content": "Say hello"}]  # no prefill
    assert restart["system"] == "Be brief."
    assert stream.restarts == 1
    assert [(a.provider, a.reason) for a in stream.attempts] == [
        ("openai", "200"),
        ("openai", "stalled (nothing for 0.5s) after 2 chunks"),
        ("anthropic", "200"),
    ]
    assert any(isinstance(e, FailedOver) and e.provider == "openai" for e in events)
    assert gw.llm.stream_stats.restarts == 1


async def test_a_cut_restarts_on_the_next_provider(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    cut = simulator.inject(Fault.cut_stream(after=3), prefix="/openai")
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert cut.hits == 1  # not retried on the provider that cut it: the answer moved on
    assert [c.provider for c in chunks if c.restarted] == ["anthropic"]
    assert answer(chunks) == "echo: Say hello"
    assert stream.attempts[1].provider == "openai"
    assert stream.attempts[1].reason.startswith("cut (")


async def test_repeated_cuts_open_the_breaker_and_later_streams_skip_the_provider(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """Each cut stream started well (a success for openai's breaker) and was then cut, which
    turns that success into a failure: two of them reach min_calls 2 at ratio 1, so the third
    stream goes straight to anthropic, with no request to openai and nothing to restart."""
    cut = simulator.inject(Fault.cut_stream(after=3), prefix="/openai")
    breaker = {"min_calls": 2, "failure_ratio": 0.6, "open_for": "30s", "open_for_max": "30s"}
    gw = gateway(simulator, openai={"breaker": breaker})
    try:
        for _ in range(2):
            chunks, stream = await collect(gw, mode)
            assert stream.restarts == 1 and answer(chunks) == "echo: Say hello"
        state = gw.provider("openai").breaker.state
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert state == "open"
    assert cut.hits == 2  # the third stream never reached openai
    assert {c.provider for c in chunks} == {"anthropic"}
    assert not any(c.restarted for c in chunks)
    assert [(a.provider, a.reason) for a in stream.attempts] == [
        ("openai", "breaker open"),
        ("anthropic", "200"),
    ]


async def test_a_cut_with_restart_off_is_a_clear_error(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    simulator.inject(Fault.cut_stream(after=3), prefix="/openai")
    gw = gateway(simulator)
    try:
        with pytest.raises(StreamInterrupted) as raised:
            await collect(gw, mode, restart=False)
    finally:
        await gw.aclose()
    error = raised.value
    assert str(error).startswith("llm: the answer from openai was cut (")
    assert "restart is off" in str(error)
    assert error.provider == "openai"
    assert [a.provider for a in error.attempts] == ["openai", "openai"]
    assert simulator.requests(prefix="/anthropic") == []
    assert gw.llm.stream_stats.interrupted == 1


async def test_restart_off_in_config(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    simulator.inject(Fault.stall_stream(after=3), prefix="/openai")
    gw = gateway(simulator, openai={**SHORT, "restart": False})
    try:
        with pytest.raises(StreamInterrupted, match="stalled"):
            await collect(gw, mode)
    finally:
        await gw.aclose()
    assert simulator.requests(prefix="/anthropic") == []


async def test_the_cut_is_named_first_when_the_fallback_rejects_the_request(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    simulator.inject(Fault.cut_stream(after=3), prefix="/openai")
    refusal = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    simulator.inject(Fault.status(400, json=refusal), prefix="/anthropic")
    gw = gateway(simulator)
    try:
        with pytest.raises(StreamInterrupted) as raised:
            await collect(gw, mode)
    finally:
        await gw.aclose()
    error = raised.value
    assert str(error).startswith("llm: the answer from openai was cut (")
    assert "starting over failed: FatalError" in str(error)
    assert isinstance(error.restart_error, FatalError)
    assert error.__cause__ is error.restart_error
    assert [(a.provider, a.outcome.value) for a in error.attempts] == [
        ("openai", "ok"),
        ("openai", "failover"),
        ("anthropic", "fatal"),
    ]


async def test_the_last_provider_cut_is_a_clear_error(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    simulator.inject(Fault.status(503), prefix="/openai")
    simulator.inject(Fault.cut_stream(after=5), prefix="/anthropic")
    gw = gateway(simulator)
    try:
        with pytest.raises(StreamInterrupted, match="no provider left to start over on"):
            await collect(gw, mode)
    finally:
        await gw.aclose()
    assert len(simulator.requests(prefix="/anthropic")) == 1  # not back to openai either


async def test_a_malformed_event_is_skipped_and_counted(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    simulator.inject(Fault.malformed_event(at=2), prefix="/openai")
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert {c.provider for c in chunks} == {"openai"}  # the stream went on
    assert answer(chunks) == "echo: Say hello"
    assert chunks[-1].malformed == 1
    assert stream.malformed == 1
    assert gw.llm.stream_stats.malformed_events == 1


@pytest.mark.parametrize("prefix", ["/openai", "/anthropic"])
async def test_a_stream_without_its_end_marker_is_finalized_with_its_usage(
    simulator: Simulator,
    llms: tuple[OpenAIState, AnthropicState],
    mode: str,
    prefix: str,
) -> None:
    """No `data: [DONE]` / `message_stop`, but the finish (and usage) came: a whole answer."""
    simulator.inject(Fault.no_end_marker(), prefix=prefix)
    gw = gateway(simulator, capability={"chain": [prefix[1:]]})
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert answer(chunks) == "echo: Say hello"
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("stop", Usage(4, 3))
    assert stream.restarts == 0


async def test_a_stream_ending_before_its_finish_is_a_cut(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """[DONE], the usage chunk and the finish chunk left out: the body ends cleanly, but the
    answer was not finished, so it starts over."""
    simulator.inject(Fault.no_end_marker(drop=3), prefix="/openai")
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert chunks[-1].provider == "anthropic"
    assert [c.provider for c in chunks if c.restarted] == ["anthropic"]
    assert "ended without its end marker" in stream.attempts[1].reason


async def test_usage_and_model_come_from_the_provider_that_finished(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    openai, anthropic = llms
    openai.reply = lambda messages: "a long answer that will never be finished by openai"
    anthropic.reply = lambda messages: "short"
    simulator.inject(Fault.cut_stream(after=6), prefix="/openai")
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    served = anthropic.messages[0]["usage"]
    assert chunks[-1].usage == Usage(served["input_tokens"], 1)
    assert (chunks[-1].provider, chunks[-1].model) == ("anthropic", "claude-3-5-haiku-latest")
    assert stream.answer is not None
    assert (stream.answer.text, stream.answer.usage) == ("short", chunks[-1].usage)


async def test_a_429_with_retry_after_is_waited_for_before_the_first_chunk(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    limited = simulator.inject(Fault.rate_limited(retry_after=0.2), prefix="/openai", times=1)
    gw = gateway(simulator)
    try:
        chunks, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert limited.hits == 1
    assert {c.provider for c in chunks} == {"openai"}
    assert [(a.provider, a.status_code) for a in stream.attempts] == [
        ("openai", 429),
        ("openai", 200),
    ]
    first, second = simulator.requests(prefix="/openai")
    assert second.received_at - first.received_at >= 0.2  # as told, not a tight loop


async def test_a_429_longer_than_allowed_fails_over(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    limited = simulator.inject(Fault.rate_limited(retry_after=120), prefix="/openai")
    gw = gateway(simulator)
    try:
        chunks, _ = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert limited.hits == 1
    assert {c.provider for c in chunks} == {"anthropic"}


async def test_5xx_before_the_first_chunk_is_retried_then_failed_over(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    once = simulator.inject(Fault.status(503), prefix="/openai", times=1)
    gw = gateway(simulator)
    try:
        chunks, _ = await collect(gw, mode)
        assert once.hits == 1
        assert {c.provider for c in chunks} == {"openai"}  # retried on the same provider
        down = simulator.inject(Fault.status(503), prefix="/openai")
        chunks, _ = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert down.hits == 2  # its two attempts, then the fallback
    assert {c.provider for c in chunks} == {"anthropic"}
    assert not any(c.restarted for c in chunks)


async def test_an_error_event_before_the_first_chunk_is_retried(
    simulator: Simulator, mode: str
) -> None:
    """Anthropic's `overloaded_error` inside a 200 stream, before any text: a failed attempt."""
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    def overloaded_stream(request: SimRequest) -> SimResponse:
        return SimResponse.stream([f"event: error\ndata: {json.dumps(overloaded)}\n\n"])

    simulator.route("POST", "/anthropic/v1/messages", overloaded_stream)
    gw = gateway(simulator, capability={"chain": ["anthropic"]})
    try:
        with pytest.raises(ChainExhausted) as raised:
            await collect(gw, mode)
    finally:
        await gw.aclose()
    assert [a.reason for a in raised.value.attempts if a.provider == "anthropic"] == [
        "200 stream error overloaded_error"
    ] * 2


async def test_the_idle_limit_applies_after_the_first_chunk_only(
    simulator: Simulator, mode: str
) -> None:
    """A first-chunk limit shorter than the pauses between chunks does not cut the stream: from
    the first chunk on, only the idle limit (here 3 s) bounds a silence."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("slow", " but", " steady")
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    simulator.route(
        "POST",
        "/openai/v1/chat/completions",
        lambda request: SimResponse.stream(events, delay=[0.0, 1.2, 1.2, 0.0, 0.0]),
    )
    gw = gateway(simulator, openai={"first_token_timeout": "1s", "idle_timeout": "3s"})
    try:
        got, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert answer(got) == "slow but steady"
    assert stream.restarts == 0


async def test_a_stream_is_never_parked(
    simulator: Simulator,
    llms: tuple[OpenAIState, AnthropicState],
    mode: str,
    tmp_path: Path,
) -> None:
    simulator.inject(Fault.status(503))
    gw = gateway(
        simulator,
        capability={"defer": True},
        top={"gateway": {"spool_path": str(tmp_path / "s.db")}},
    )
    try:
        with pytest.raises(ChainExhausted):
            await collect(gw, mode)
        stats = gw.deferral.spool.stats()  # type: ignore[attr-defined]
    finally:
        await gw.aclose()
    assert stats["ready"] + stats["leased"] == 0


async def test_leaving_early_closes_the_stream(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState]
) -> None:
    gw = gateway(simulator)
    try:
        async with gw.llm.stream(ASK) as stream:
            first = await anext(stream)
        with gw.sync.llm.stream(ASK) as sync_stream:
            sync_first = next(sync_stream)
    finally:
        await gw.aclose()
    assert first.text == sync_first.text == "echo:"
    assert stream.answer is None and sync_stream.answer is None  # left before the end
    assert stream._run.stream is not None and stream._run.stream.response.is_closed
    assert sync_stream._run.stream is not None and sync_stream._run.stream.response.is_closed


def test_stream_limits_are_checked_in_config(simulator: Simulator) -> None:
    with pytest.raises(ConfigError, match="first_token_timeout"):
        gateway(simulator, openai={"first_token_timeout": "soon"})
    with pytest.raises(ConfigError, match="idle_timeout"):
        gateway(simulator, anthropic={"idle_timeout": 0})


async def test_refusals_before_the_first_chunk_read_as_a_chat_s(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """A prompt too long, or refused on content policy: final, never retried, the provider's
    words reach the caller."""
    too_long = {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    policy = {
        "error": {
            "message": "flagged by policy",
            "type": "invalid_request_error",
            "code": "content_policy_violation",
        }
    }
    refusals = simulator.inject(Fault.status(400, json=too_long), prefix="/openai", times=1)
    gw = gateway(simulator)
    try:
        with pytest.raises(ContextLengthExceeded):
            await collect(gw, mode)
        simulator.inject(Fault.status(400, json=policy), prefix="/openai", times=1)
        with pytest.raises(ContentRejected) as raised:
            await collect(gw, mode)
    finally:
        await gw.aclose()
    assert refusals.hits == 1
    assert raised.value.reason == "flagged by policy"
    assert len(simulator.requests(prefix="/openai")) == 2
    assert simulator.requests(prefix="/anthropic") == []


def test_an_event_past_its_bound_breaks_the_stream_like_a_cut() -> None:
    from providers.llm.sse import EventTooLarge, SseParser

    parser = SseParser(max_event=100)
    assert [e.data for e in parser.feed(b"data: " + b"x" * 90 + b"\n\n")] == ["x" * 90]
    with pytest.raises(EventTooLarge):
        for _ in range(10):  # one line that never ends, as a hostile server sends it
            parser.feed(b"data: " + b"x" * 30)


async def test_an_endless_event_fails_the_stream_over_within_the_size_cap(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """OpenAI starts an event and never ends it: past its max_response_bytes the stream is cut
    there (memory stays bounded) and the answer comes from Anthropic."""
    endless = SimResponse.stream([b"data: {" + b"x" * 4096] * 64, delay=0.0)
    simulator.route("POST", "/openai/v1/chat/completions", lambda r: endless)
    gw = gateway(simulator, openai={"max_response_bytes": 16384})
    try:
        chunks, _ = await collect(gw, mode)
    finally:
        await gw.aclose()
    assert {c.provider for c in chunks} == {"anthropic"}
    assert answer(chunks) == "echo: Say hello"


def endless_openai_stream(sim: Simulator) -> None:
    """OpenAI answers a word every 100 ms for 30 s: never silent long enough to stall."""
    word = {"choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None}]}
    events = [f"data: {json.dumps(word)}\n\n"] * 300
    sim.route(
        "POST",
        "/openai/v1/chat/completions",
        lambda request: SimResponse.stream(events, delay=0.1),
    )


async def test_a_stream_that_never_ends_is_cut_at_its_stream_timeout(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """Each word well within the idle limit, the whole past `stream_timeout`: the stream is cut
    there (as a stall is) and the answer starts over on the next provider."""
    endless_openai_stream(simulator)
    gw = gateway(simulator, openai={"stream_timeout": "1s"})
    started = asyncio.get_running_loop().time()
    try:
        got, stream = await collect(gw, mode)
    finally:
        await gw.aclose()
    elapsed = asyncio.get_running_loop().time() - started
    assert answer(got) == "echo: Say hello"  # anthropic's, from the start
    assert stream.restarts == 1
    cut = stream.attempts[1]
    assert cut.provider == "openai" and "stream_timeout (1s)" in cut.reason
    assert elapsed < 10  # cut near 1 s, not after the 30 s the provider would go on for


async def test_the_callers_deadline_bounds_the_whole_stream(
    simulator: Simulator, llms: tuple[OpenAIState, AnthropicState], mode: str
) -> None:
    """`deadline=` bounds the stream, not only its start: past it the stream ends in
    StreamInterrupted (no time is left to start over elsewhere)."""
    endless_openai_stream(simulator)
    gw = gateway(simulator)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(StreamInterrupted, match=r"call's deadline.*no time left"):
            await collect(gw, mode, deadline=1.0)
    finally:
        await gw.aclose()
    assert asyncio.get_running_loop().time() - started < 10  # about 1 s, not 30
