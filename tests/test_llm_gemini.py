"""gw.llm on Google Gemini: the generateContent wire format pinned with respx (URL, key header,
systemInstruction, user/model roles, generationConfig, tools and tool answers both ways, finish
reasons, usage), its errors (a prompt too long, blocked, rate limited), the streaming half
(request and decoder, on recorded events and on the simulator's stream), and fail-over
openai -> gemini and gemini -> anthropic end to end on the simulator, sync and async, for
chats and for streams (a gemini stream cut mid-way starting over on anthropic)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx

from providers.llm import ChatResponse, ContextLengthExceeded, ToolCall, Usage
from providers.llm.errors import ContentRejected
from providers.llm.gemini import GeminiAdapter, GeminiDecoder
from providers.llm.models import ChatRequest
from providers.llm.sse import SseParser
from providers.llm.streaming import ChatChunk, MalformedEvent, SseEvent, StreamError
from resilient.config import settings_from_mapping
from resilient.errors import FatalError
from resilient.gateway import Gateway
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import anthropic as anthropic_routes
from resilient.testing.routes import gemini as gemini_routes
from resilient.testing.routes import openai as openai_routes

KEY = "AIza-test-Gm41canary"
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def gateway(**extra: Any) -> Gateway:
    """One gemini provider at Google's address (which respx intercepts)."""
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "gemini": {
                        "kind": "gemini",
                        "api_key": KEY,
                        "retry": {"attempts": 3, "backoff": "10ms..20ms"},
                        "models": {"fast": "gemini-2.0-flash"},
                        **extra,
                    }
                },
                "capabilities": {"llm": {"chain": ["gemini"]}},
            }
        )
    )


def answer(*parts: dict[str, Any], finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": list(parts) or [{"text": "Hi there"}]},
                "finishReason": finish,
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 9,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 2,
            "totalTokenCount": 14,
        },
        "modelVersion": "gemini-2.0-flash-001",
    }


async def test_wire_format() -> None:
    gw = gateway()
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=answer()))
        result = await gw.llm.chat(CONVERSATION, model="fast", temperature=0.2, max_tokens=50)
    await gw.aclose()

    request = route.calls.last.request
    assert request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers
    assert "key=" not in str(request.url)  # the key stays out of URLs (and so of logs)
    assert json.loads(request.content) == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50},
    }
    assert result.status == "delivered"
    assert result.value == ChatResponse(
        text="Hi there",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(9, 5),  # thinking tokens are output tokens, as billed
        provider="gemini",
        model="gemini-2.0-flash-001",
    )


TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_2", "name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
]


def test_tool_calls_both_ways() -> None:
    gw = gateway()
    reply = answer(
        {"text": "Let me look."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
    )
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=reply))
        result = gw.sync.llm.chat(TOOL_TURNS, tools=[{"type": "function", "function": WEATHER}])
    gw.close()

    body = json.loads(route.calls.last.request.content)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parametersJsonSchema": WEATHER["parameters"],  # full JSON Schema kept
                }
            ]
        }
    ]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking both."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",  # both answers in one turn, each named after the call it answers
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "24C"}}},
            ],
        },
    ]
    value = result.value
    assert value is not None
    assert value.finish_reason == "tool_calls"  # Gemini says STOP; a call was made
    assert value.text == "Let me look."
    [call] = value.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Oslo"})
    assert call.id.startswith("call_")  # Gemini sent no id: one is made up for the answer


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
    ],
)
def test_finish_reasons(finish: str, expected: str) -> None:
    """A candidate stopped by a filter is an answer (finish content_filter), not an error."""
    gw = gateway()
    with respx.mock() as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=answer(finish=finish)))
        result = gw.sync.llm.chat([{"role": "user", "content": "Hi"}])
    gw.close()
    assert result.value is not None
    assert result.value.finish_reason == expected
    assert route.call_count == 1


async def test_a_prompt_too_long_is_final() -> None:
    error = {
        "error": {
            "code": 400,
            "message": "The input token count (1200293) exceeds the maximum number of tokens "
            "allowed (1048576).",
            "status": "INVALID_ARGUMENT",
        }
    }
    gw = gateway(classify={"400": "retryable"})
    with respx.mock() as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(400, json=error))
        with pytest.raises(ContextLengthExceeded, match="gemini") as raised:
            await gw.llm.chat([{"role": "user", "content": "long " * 10}])
    await gw.aclose()
    assert route.call_count == 1
    assert [a.reason for a in raised.value.attempts] == ["400 context_length_exceeded"]


async def test_another_invalid_argument_names_its_status() -> None:
    error = {"error": {"code": 400, "message": "Invalid value", "status": "INVALID_ARGUMENT"}}
    gw = gateway()
    with respx.mock() as mock:
        mock.post(URL).mock(return_value=httpx.Response(400, json=error))
        with pytest.raises(FatalError) as raised:
            await gw.llm.chat([{"role": "user", "content": "hi"}])
    await gw.aclose()
    assert not isinstance(raised.value, (ContextLengthExceeded, ContentRejected))
    assert raised.value.attempts[-1].reason == "400 INVALID_ARGUMENT"


async def test_a_blocked_prompt_is_rejected_with_its_reason_and_not_retried() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        "modelVersion": "gemini-2.0-flash-001",
    }
    gw = gateway()
    with respx.mock() as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, json=blocked))
        with pytest.raises(ContentRejected, match="PROHIBITED_CONTENT") as raised:
            await gw.llm.chat([{"role": "user", "content": "something"}])
    await gw.aclose()
    assert route.call_count == 1
    assert raised.value.reason == "PROHIBITED_CONTENT"
    assert raised.value.attempts[-1].outcome is Outcome.FATAL


def test_resource_exhausted_waits_as_its_retry_info_says() -> None:
    """Without Retry-After, the delay comes from the error's google.rpc.RetryInfo."""
    body = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "23s"},
            ],
        }
    }
    response = httpx.Response(429, json=body)
    verdict = GeminiAdapter().verdict(response, Verdict(Outcome.RETRYABLE, 429, "429"))
    assert verdict == Verdict(Outcome.RETRYABLE, 429, "429 RESOURCE_EXHAUSTED", 23.0)
    told = Verdict(Outcome.RETRYABLE, 429, "429", server_delay=2.0)  # Retry-After wins
    assert GeminiAdapter().verdict(response, told).server_delay == 2.0


# -- streaming ---------------------------------------------------------------------------------

RECORDED = (
    'data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},'
    '"index": 0}],"usageMetadata": {"promptTokenCount": 4},'
    '"modelVersion": "gemini-2.0-flash-001"}\r\n\r\n'
    'data: {"candidates": [{"content": {"parts": [{"text": "lo there"}],"role": "model"},'
    '"index": 0}],"usageMetadata": {"promptTokenCount": 4},'
    '"modelVersion": "gemini-2.0-flash-001"}\r\n\r\n'
    'data: {"candidates": [{"content": {"parts": [{"text": "!"}],"role": "model"},'
    '"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 4,'
    '"candidatesTokenCount": 3,"totalTokenCount": 7},'
    '"modelVersion": "gemini-2.0-flash-001"}\r\n\r\n'
)


def decode(text: str, decoder: GeminiDecoder) -> list[ChatChunk]:
    chunks: list[ChatChunk] = []
    for event in SseParser().feed(text.encode()):
        chunks.extend(decoder.feed(event))
    return chunks


def test_decoder_reads_recorded_events() -> None:
    decoder = GeminiDecoder("gemini", "fast")
    chunks = decode(RECORDED, decoder)
    assert [c.text for c in chunks] == ["Hel", "lo there", "!"]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    assert [c.usage for c in chunks] == [None, None, Usage(4, 3)]  # usage on the last only
    assert decoder.finished  # a finishReason ends it: Gemini has no end marker
    assert decoder.final() == ChatResponse(
        "Hello there!", [], "stop", Usage(4, 3), "gemini", "gemini-2.0-flash-001"
    )


def test_decoder_is_not_finished_without_a_finish_reason() -> None:
    """A stream cut before its last chunk must not pass for a complete answer."""
    decoder = GeminiDecoder("gemini", "fast")
    first_two = RECORDED.split("\r\n\r\n")[:2]
    decode("\r\n\r\n".join(first_two) + "\r\n\r\n", decoder)
    assert not decoder.finished
    assert decoder.final().text == "Hello there"


def test_decoder_skips_what_it_cannot_read() -> None:
    decoder = GeminiDecoder("gemini", "fast")
    with pytest.raises(MalformedEvent):
        decoder.feed(SseEvent(None, "{this is not json"))
    with pytest.raises(MalformedEvent):
        decoder.feed(SseEvent(None, '["a list, not a response"]'))
    assert decode(RECORDED, decoder)[-1].finish_reason == "stop"  # and goes on


def test_decoder_reports_an_error_in_the_stream() -> None:
    decoder = GeminiDecoder("gemini", "fast")
    with pytest.raises(StreamError, match="INTERNAL"):
        decoder.feed(SseEvent(None, '{"error": {"code": 500, "status": "INTERNAL"}}'))
    assert not decoder.finished and decoder.finish_reason is None


def test_decoder_reads_tool_calls_and_a_blocked_prompt() -> None:
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "fc_1"}}
    event = {"candidates": [{"content": {"parts": [call]}, "finishReason": "STOP"}]}
    decoder = GeminiDecoder("gemini", "fast")
    [chunk] = decoder.feed(SseEvent(None, json.dumps(event)))
    assert chunk.tool_calls == (ToolCall("fc_1", "get_weather", {"city": "Oslo"}),)
    assert chunk.finish_reason == "tool_calls"

    blocked = {"promptFeedback": {"blockReason": "SAFETY"}}
    decoder = GeminiDecoder("gemini", "fast")
    [chunk] = decoder.feed(SseEvent(None, json.dumps(blocked)))
    assert chunk.finish_reason == "content_filter"
    assert decoder.finished


def test_stream_request() -> None:
    gw = gateway()
    request = GeminiAdapter().build_stream(
        ChatRequest.of(CONVERSATION, "fast", None, None, None),
        gw.provider("gemini"),
    )
    gw.close()
    assert str(request.url) == URL.replace(":generateContent", ":streamGenerateContent?alt=sse")
    assert request.headers["x-goog-api-key"] == KEY
    assert json.loads(request.content)["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


async def test_simulator_stream_decodes_to_the_whole_answer(simulator: Simulator) -> None:
    state = gemini_routes.mount(simulator, "/gemini")
    gw = gateway(base_url=simulator.url("/gemini"))
    chat = ChatRequest.of(CONVERSATION, "fast", None, None, None)
    request = GeminiAdapter().build_stream(chat, gw.provider("gemini"))
    decoder = GeminiDecoder("gemini", "fast")
    parser = SseParser()
    chunks: list[ChatChunk] = []
    async with httpx.AsyncClient() as client:
        response = await client.send(request, stream=True)
        assert response.headers["content-type"].startswith("text/event-stream")
        async for piece in response.aiter_bytes():
            for event in parser.feed(piece):
                chunks.extend(decoder.feed(event))
        await response.aclose()
    await gw.aclose()
    assert "".join(c.text for c in chunks) == "echo: Hello"
    assert len(chunks) == 2  # word by word
    assert decoder.finished
    served = state.responses[0]["usageMetadata"]
    assert decoder.final().usage == Usage(served["promptTokenCount"], 2)


# -- end to end on the simulator ---------------------------------------------------------------

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
COMMON = {
    "retry": {"attempts": 2, "backoff": "10ms..20ms"},
    "timeout": {"connect": "300ms", "attempt": "500ms"},
}


def chain_gateway(sim: Simulator, chain: list[str]) -> Gateway:
    providers = {
        "openai": {
            "kind": "openai",
            "api_key": "sk-test-Oa93canary",
            "base_url": sim.url("/openai/v1"),
            "models": {"fast": "gpt-4o-mini"},
        },
        "gemini": {
            "kind": "gemini",
            "api_key": KEY,
            "base_url": sim.url("/gemini"),
            "models": {"fast": "gemini-2.0-flash"},
        },
        "anthropic": {
            "kind": "anthropic",
            "api_key": "sk-ant-test-An55canary",
            "base_url": sim.url("/anthropic"),
            "models": {"fast": "claude-3-5-haiku-latest"},
        },
    }
    return Gateway(
        settings_from_mapping(
            {
                "providers": {name: {**providers[name], **COMMON} for name in chain},
                "capabilities": {"llm": {"chain": chain}},
            }
        )
    )


async def chat(gw: Gateway, mode: str, messages: Any = ASK, **kwargs: Any) -> Result[ChatResponse]:
    if mode == "sync":
        result: Result[ChatResponse] = await asyncio.to_thread(gw.sync.llm.chat, messages, **kwargs)
    else:
        result = await gw.llm.chat(messages, **kwargs)
    return result


async def test_fails_over_from_openai_to_gemini(simulator: Simulator, mode: str) -> None:
    openai = openai_routes.mount(simulator, "/openai")
    gemini = gemini_routes.mount(simulator, "/gemini")
    outage = simulator.inject(Fault.status(503), prefix="/openai")
    gw = chain_gateway(simulator, ["openai", "gemini"])
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    assert outage.hits == 2 and openai.completions == []
    assert [a.provider for a in result.attempts] == ["openai", "openai", "gemini"]
    assert result.provider == "gemini"
    [asked] = gemini.requests
    assert asked["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    [served] = gemini.responses
    assert result.value == ChatResponse(
        text="echo: Say hello",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(
            served["usageMetadata"]["promptTokenCount"],
            served["usageMetadata"]["candidatesTokenCount"],
        ),  # the fallback's usage only
        provider="gemini",
        model="gemini-2.0-flash",
    )


async def test_fails_over_from_gemini_to_anthropic(simulator: Simulator, mode: str) -> None:
    gemini = gemini_routes.mount(simulator, "/gemini")
    anthropic = anthropic_routes.mount(simulator, "/anthropic")
    limited = simulator.inject(
        Fault.status(429, json={"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}),
        prefix="/gemini",
    )
    gw = chain_gateway(simulator, ["gemini", "anthropic"])
    try:
        result = await chat(gw, mode)
    finally:
        await gw.aclose()
    assert limited.hits == 2 and gemini.responses == []
    assert [a.reason for a in result.attempts[:2]] == ["429 RESOURCE_EXHAUSTED"] * 2
    assert result.provider == "anthropic"
    assert result.value is not None
    assert result.value.model == "claude-3-5-haiku-latest"
    assert result.value.text == "echo: Say hello"
    assert len(anthropic.messages) == 1


async def test_tool_call_and_refusals_on_the_simulator(simulator: Simulator, mode: str) -> None:
    """A tool call comes back normalized; a blocked prompt and one too long are final, and
    never sent on to the next provider."""
    gemini = gemini_routes.mount(simulator, "/gemini")
    anthropic = anthropic_routes.mount(simulator, "/anthropic")
    gw = chain_gateway(simulator, ["gemini", "anthropic"])
    try:
        gemini.function_call = ("get_weather", {"city": "Oslo"})
        called = await chat(gw, mode, tools=[WEATHER])
        gemini.function_call = None
        gemini.block_reason = "SAFETY"
        with pytest.raises(ContentRejected, match="SAFETY"):
            await chat(gw, mode)
        gemini.block_reason = None
        gemini.context_window = 2
        with pytest.raises(ContextLengthExceeded, match="gemini"):
            await chat(gw, mode)
    finally:
        await gw.aclose()
    assert called.value is not None
    assert called.value.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in called.value.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert len(simulator.requests(prefix="/gemini")) == 3  # one each: nothing retried
    assert anthropic.messages == []


async def stream(gw: Gateway, mode: str) -> list[ChatChunk]:
    if mode == "sync":
        return await asyncio.to_thread(lambda: list(gw.sync.llm.stream(ASK)))
    return [chunk async for chunk in gw.llm.stream(ASK)]


async def test_a_stream_fails_over_from_openai_to_gemini(simulator: Simulator, mode: str) -> None:
    openai_routes.mount(simulator, "/openai")
    gemini = gemini_routes.mount(simulator, "/gemini")
    simulator.inject(Fault.status(503), prefix="/openai")
    gw = chain_gateway(simulator, ["openai", "gemini"])
    try:
        chunks = await stream(gw, mode)
    finally:
        await gw.aclose()
    assert "".join(c.text for c in chunks) == "echo: Say hello"
    assert {c.provider for c in chunks} == {"gemini"}
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    served = gemini.responses[0]["usageMetadata"]
    assert chunks[-1].usage == Usage(served["promptTokenCount"], served["candidatesTokenCount"])
    [asked] = simulator.requests(prefix="/gemini")
    assert asked.path == "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert asked.query == "alt=sse"


async def test_a_cut_gemini_stream_starts_over_on_anthropic(
    simulator: Simulator, mode: str
) -> None:
    """Cut after its first chunk: the answer starts over on the next provider, and the caller
    is told to drop what came before (never a truncated answer passed off as whole)."""
    gemini_routes.mount(simulator, "/gemini")
    anthropic_routes.mount(simulator, "/anthropic")
    simulator.inject(Fault.cut_stream(after=1), prefix="/gemini")
    gw = chain_gateway(simulator, ["gemini", "anthropic"])
    try:
        chunks = await stream(gw, mode)
    finally:
        await gw.aclose()
    restart = next(i for i, c in enumerate(chunks) if c.restarted)
    assert {c.provider for c in chunks[:restart]} == {"gemini"}
    assert {c.provider for c in chunks[restart:]} == {"anthropic"}
    assert "".join(c.text for c in chunks[restart:]) == "echo: Say hello"
    assert chunks[-1].finish_reason == "stop"
