"""gw.llm wire formats, pinned with respx: OpenAI Chat Completions and Anthropic Messages (URL,
headers, body, the logical model mapped per provider, Anthropic's top-level system prompt),
tool calls translated both ways, and a prompt too long for the model never retried."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

# importing providers.llm registers the llm kinds and facade (providers.kinds does not yet)
from providers.llm import ChatResponse, ContextLengthExceeded, ToolCall, Usage
from resilient.config import settings_from_mapping
from resilient.errors import FatalError
from resilient.gateway import Gateway

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def gateway(kind: str, **extra: Any) -> Gateway:
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    kind: {
                        "kind": kind,
                        "api_key": f"{kind}-key",
                        "retry": {"attempts": 3, "backoff": "10ms..20ms"},
                        "models": {"fast": f"{kind}-fast-model"},
                        **extra,
                    }
                },
                "capabilities": {"llm": {"chain": [kind]}},
            }
        )
    )


def openai_answer(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there", **message},
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def anthropic_answer(*content: dict[str, Any], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": list(content) or [{"type": "text", "text": "Hi there"}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 4},
    }


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]


async def test_openai_wire_format() -> None:
    gw = gateway("openai")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_answer()))
        result = await gw.llm.chat(CONVERSATION, model="fast", temperature=0.2, max_tokens=50)
    await gw.aclose()

    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer openai-key"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "model": "openai-fast-model",  # "fast" mapped by the provider's `models`
        "messages": CONVERSATION,
        "temperature": 0.2,
        "max_tokens": 50,
    }
    assert result.status == "delivered"
    assert result.value == ChatResponse(
        text="Hi there",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(12, 3),
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
    )


def test_openai_compatible_endpoint_and_unmapped_model() -> None:
    """A base_url with or without /v1; a model not in the map is the provider's own name."""
    for base in ("http://localhost:11434", "http://localhost:11434/v1/"):
        gw = gateway("openai", base_url=base)
        with respx.mock(assert_all_called=True) as mock:
            url = "http://localhost:11434/v1/chat/completions"
            route = mock.post(url).mock(return_value=httpx.Response(200, json=openai_answer()))
            gw.sync.llm.chat([{"role": "user", "content": "Hi"}], model="llama3.1:8b")
        gw.close()
        body = json.loads(route.calls.last.request.content)
        assert body == {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Hi"}]}


async def test_anthropic_wire_format() -> None:
    gw = gateway("anthropic")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(ANTHROPIC_URL).mock(
            return_value=httpx.Response(200, json=anthropic_answer())
        )
        result = await gw.llm.chat(CONVERSATION, model="fast", temperature=0.2)
    await gw.aclose()

    request = route.calls.last.request
    assert request.headers["x-api-key"] == "anthropic-key"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "model": "anthropic-fast-model",
        "system": "Be brief.",  # out of the messages, where Anthropic refuses a system role
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1024,  # required by Anthropic: our default when the call gives none
        "temperature": 0.2,
    }
    assert result.value == ChatResponse(
        text="Hi there",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(20, 4),
        provider="anthropic",
        model="claude-3-5-haiku-20241022",
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop")],
)
def test_anthropic_stop_reasons(stop: str, finish: str) -> None:
    gw = gateway("anthropic")
    with respx.mock() as mock:
        mock.post(ANTHROPIC_URL).mock(
            return_value=httpx.Response(200, json=anthropic_answer(stop=stop))
        )
        result = gw.sync.llm.chat([{"role": "user", "content": "Hi"}], max_tokens=5)
    gw.close()
    assert result.value is not None
    assert result.value.finish_reason == finish


# -- tool calls, both ways ---------------------------------------------------------------------

TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_2", "name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
]


async def test_openai_tool_calls_both_ways() -> None:
    gw = gateway("openai")
    answer = openai_answer(
        content=None,
        tool_calls=[
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    )
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=answer))
        result = await gw.llm.chat(TOOL_TURNS, model="gpt-4o", tools=[WEATHER])
    await gw.aclose()

    body = json.loads(route.calls.last.request.content)
    assert body["tools"] == [{"type": "function", "function": WEATHER}]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    }
    assert body["messages"][2:] == TOOL_TURNS[2:]
    assert result.value is not None
    assert result.value.finish_reason == "tool_calls"
    assert result.value.text == ""
    assert result.value.tool_calls == [ToolCall("call_9", "get_weather", {"city": "Oslo"})]


async def test_anthropic_tool_calls_both_ways() -> None:
    gw = gateway("anthropic")
    answer = anthropic_answer(
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
        stop="tool_use",
    )
    # OpenAI's tool wrapper is accepted as input too
    tools = [{"type": "function", "function": WEATHER}]
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=answer))
        result = await gw.llm.chat(TOOL_TURNS, model="claude-x", tools=tools)
    await gw.aclose()

    body = json.loads(route.calls.last.request.content)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["parameters"],
        }
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",  # both tool answers in one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
            ],
        },
    ]
    assert result.value is not None
    assert result.value.finish_reason == "tool_calls"
    assert result.value.text == "Checking."
    assert result.value.tool_calls == [ToolCall("toolu_9", "get_weather", {"city": "Oslo"})]


# -- context length exceeded -------------------------------------------------------------------

TOO_LONG = {
    "openai": (
        OPENAI_URL,
        {
            "error": {
                "message": "This model's maximum context length is 128000 tokens. However, your "
                "messages resulted in 130001 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    "anthropic": (
        ANTHROPIC_URL,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 208310 tokens > 200000 maximum",
            },
            "request_id": "req_1",
        },
    ),
}


@pytest.mark.parametrize("kind", list(TOO_LONG))
async def test_context_length_exceeded_is_final(kind: str) -> None:
    """Not retried on the same model, even where config retries 400s, and said clearly."""
    url, error = TOO_LONG[kind]
    gw = gateway(kind, classify={"400": "retryable"})
    with respx.mock() as mock:
        route = mock.post(url).mock(return_value=httpx.Response(400, json=error))
        with pytest.raises(ContextLengthExceeded, match="context_length_exceeded") as raised:
            await gw.llm.chat([{"role": "user", "content": "long " * 10}])
    await gw.aclose()
    assert route.call_count == 1
    assert [a.reason for a in raised.value.attempts] == ["400 context_length_exceeded"]


async def test_other_400_is_fatal_but_not_context_length() -> None:
    """The clearer error is kept for the prompt being too long only."""
    gw = gateway("anthropic")
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    with respx.mock() as mock:
        mock.post(ANTHROPIC_URL).mock(return_value=httpx.Response(400, json=error))
        with pytest.raises(FatalError) as raised:
            await gw.llm.chat([{"role": "user", "content": "hi"}])
    await gw.aclose()
    assert type(raised.value) is FatalError
    assert raised.value.attempts[-1].reason == "400 invalid_request_error"


# streaming


def sse(*events: tuple[str | None, Any]) -> httpx.Response:
    """A 200 text/event-stream answer of (event name or None, data) pairs."""
    text = "".join(
        (f"event: {name}\n" if name else "")
        + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        for name, data in events
    )
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [choice],
    }


def test_openai_stream_wire_format() -> None:
    """The streaming body (stream, include_usage), and an answer whose tool call arrives in
    fragments: its id and name first, its arguments' JSON text in pieces."""
    gw = gateway("openai")
    call_head = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    answer = sse(
        (None, openai_chunk({"role": "assistant", "content": ""})),
        (None, openai_chunk({"content": "Checking"})),
        (None, openai_chunk({"tool_calls": [call_head]})),
        (None, openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]})),
        (
            None,
            openai_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}
            ),
        ),
        (None, openai_chunk({}, "tool_calls")),
        (
            None,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            },
        ),
        (None, "[DONE]"),
    )
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI_URL).mock(return_value=answer)
        chunks = list(
            gw.sync.llm.stream(CONVERSATION, model="fast", max_tokens=50, tools=[WEATHER])
        )
    gw.close()

    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer openai-key"
    body = json.loads(request.content)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["messages"], body["max_tokens"]) == (
        "openai-fast-model",
        CONVERSATION,
        50,
    )
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert [c.text for c in chunks] == ["Checking", "", ""]
    assert chunks[1].tool_calls == (ToolCall("call_1", "get_weather", {"city": "Paris"}),)
    assert (chunks[2].finish_reason, chunks[2].usage) == ("tool_calls", Usage(12, 9))
    assert {(c.provider, c.model) for c in chunks} == {("openai", "gpt-4o-mini-2024-07-18")}


async def test_anthropic_stream_wire_format() -> None:
    """The streaming body (`"stream": true`, system on top) and Anthropic's documented event
    flow: pings and unknown events ignored, a tool's input assembled from its JSON pieces,
    usage from message_start (input, cache included) and message_delta (output)."""
    gw = gateway("anthropic")
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
    }
    answer = sse(
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me check"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("some_future_event", {"type": "some_future_event"}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 17},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(ANTHROPIC_URL).mock(return_value=answer)
        chunks = [c async for c in gw.llm.stream(CONVERSATION, model="fast", tools=[WEATHER])]
    await gw.aclose()

    request = route.calls.last.request
    assert request.headers["x-api-key"] == "anthropic-key"
    assert request.headers["anthropic-version"] == "2023-06-01"
    body = json.loads(request.content)
    assert body["stream"] is True
    assert (body["model"], body["max_tokens"]) == ("anthropic-fast-model", 1024)
    assert body["system"] == CONVERSATION[0]["content"]
    assert [c.text for c in chunks] == ["Let me check", "", ""]
    assert chunks[1].tool_calls == (ToolCall("toolu_1", "get_weather", {"city": "Paris"}),)
    assert (chunks[2].finish_reason, chunks[2].usage) == ("tool_calls", Usage(25, 17))
    assert chunks[2].malformed == 0
    assert chunks[0].model == "claude-3-5-haiku-20241022"
