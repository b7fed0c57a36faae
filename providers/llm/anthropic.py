"""Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and
`anthropic-version: 2023-06-01` (https://docs.anthropic.com/en/api/messages).

Translated from the neutral chat shape: system messages become the top-level `system`;
`max_tokens` is required (1024 unless the call says); an assistant's tool calls become
`tool_use` blocks and tool answers `tool_result` blocks in a user turn; tools go out with their
schema as `input_schema`. Back: text blocks joined, `tool_use` blocks as tool calls,
`stop_reason` mapped (end_turn/stop_sequence -> stop, max_tokens -> length, tool_use ->
tool_calls, refusal -> content_filter), usage input_tokens (cache reads and writes included)
and output_tokens. Errors are `{"type": "error", "error": {"type", "message"}}`; a 400
`invalid_request_error` saying the prompt is too long is final.

Streamed with `"stream": true` (https://docs.anthropic.com/en/docs/build-with-claude/streaming):
named events `message_start` (model, input tokens), then per content block
`content_block_start` / `content_block_delta` (`text_delta` text; `input_json_delta` pieces of
a tool call's input) / `content_block_stop`, then `message_delta` (stop_reason, output tokens
so far) and `message_stop`, the end marker; `ping` events keep the connection alive, an `error`
event (`overloaded_error`, ...) ends the stream unfinished, and unknown events are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx

from providers.adapter import api_key, base_url, json_field
from providers.llm.models import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ToolCall,
    Usage,
    arguments,
    mapped_model,
)
from providers.llm.streaming import (
    ChatChunk,
    DecoderBase,
    SseEvent,
    StreamOptions,
    event_json,
    malformed,
    stream_error,
)
from resilient import registry
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime

API = "https://api.anthropic.com"
VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicOptions(StreamOptions):
    """Config keys of an "anthropic" provider (the streaming limits included)."""

    models: dict[str, str] = {}  # logical model name -> Anthropic's model name


class AnthropicAdapter:
    honours_idempotency_key = False

    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, {})

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, {"stream": True})

    def decoder(self, provider: str, model: str) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(provider, model)

    def _request(
        self, chat: ChatRequest, provider: ProviderRuntime, extra: dict[str, Any]
    ) -> httpx.Request:
        base = base_url(provider, API)
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        return httpx.Request(
            "POST",
            url,
            headers={"x-api-key": api_key(provider), "anthropic-version": VERSION},
            json={**body(chat, mapped_model(provider.settings.options, chat.model)), **extra},
        )

    def parse(self, response: httpx.Response, provider: str, model: str) -> ChatResponse:
        data = response.json()
        blocks = data["content"]
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = [
            ToolCall(str(b["id"]), str(b["name"]), arguments(b.get("input")))
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        usage = data.get("usage") or {}
        finish = _STOP.get(str(data.get("stop_reason")), "tool_calls" if calls else "stop")
        return ChatResponse(
            text=text,
            tool_calls=calls,
            finish_reason=finish,
            usage=Usage(_input_tokens(usage), int(usage.get("output_tokens") or 0)),
            provider=provider,
            model=str(data.get("model") or model),
        )

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """Anthropic's error type in the reason; a prompt too long for the model is final."""
        if default.outcome is Outcome.OK:
            return default
        kind = json_field(response, "error", "type")
        message = (json_field(response, "error", "message") or "").lower()
        if kind == "invalid_request_error" and "prompt is too long" in message:
            return dataclasses.replace(
                default,
                outcome=Outcome.FATAL,
                reason=f"{response.status_code} context_length_exceeded",
            )
        if kind:
            return dataclasses.replace(default, reason=f"{default.reason} {kind}")
        return default


class AnthropicStreamDecoder(DecoderBase):
    """One streamed message: text deltas as they come, each tool_use block given complete (its
    input's JSON pieces joined) when the block stops; usage from message_start and
    message_delta (cumulative counts: the latest wins)."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self._tools: dict[int, dict[str, Any]] = {}  # block index -> id, name, input pieces

    def feed(self, event: SseEvent) -> list[ChatChunk]:
        data = event_json(event, _EVENT)
        kind = data.get("type") or event.event
        if kind == "error":
            raise stream_error(data.get("error"), "type")
        try:
            return self._read(kind, data)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise malformed(event, _EVENT) from None

    def _read(self, kind: Any, data: dict[str, Any]) -> list[ChatChunk]:
        if kind == "message_start":
            message = data["message"]
            self._model = str(message.get("model") or self._model)
            self._count(message.get("usage") or {})
        elif kind == "content_block_start":
            block = data["content_block"]
            if block["type"] == "tool_use":
                self._tools[int(data["index"])] = {
                    "id": block["id"],
                    "name": block["name"],
                    "pieces": [],
                    "input": block.get("input"),
                }
            elif block["type"] == "text" and block.get("text"):
                return self._said(str(block["text"]))
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                return self._said(str(delta["text"]))
            if delta["type"] == "input_json_delta":
                self._tools[int(data["index"])]["pieces"].append(str(delta["partial_json"]))
        elif kind == "content_block_stop":
            tool = self._tools.pop(int(data["index"]), None)
            if tool is not None:
                pieces = "".join(tool["pieces"])
                call = ToolCall(
                    str(tool["id"]), str(tool["name"]), arguments(pieces or tool["input"])
                )
                self._calls.append(call)
                return [self._chunk(tool_calls=(call,))]
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                self._finish = _STOP.get(str(stop), "tool_calls" if self._calls else "stop")
            self._count(data.get("usage") or {})
        elif kind == "message_stop":
            self._done = True
        return []  # ping, and event types added after this was written

    def _count(self, usage: Mapping[str, Any]) -> None:
        counted = self._usage or Usage(0, 0)
        if any(key in usage for key in _INPUT_KEYS):
            counted = Usage(_input_tokens(usage), counted.output_tokens)
        if "output_tokens" in usage:
            counted = Usage(counted.input_tokens, int(usage["output_tokens"] or 0))
        self._usage = counted


_EVENT = "a Messages stream event"
_INPUT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _input_tokens(usage: Mapping[str, Any]) -> int:
    """Every input token, cache reads and writes included."""
    return sum(int(usage.get(key) or 0) for key in _INPUT_KEYS)


def body(chat: ChatRequest, model: str) -> dict[str, Any]:
    """The Messages body of `chat`, for `model` (Anthropic's own name)."""
    system = [str(m.get("content") or "") for m in chat.messages if m["role"] == "system"]
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages(chat.messages),
    }
    if system:
        payload["system"] = "\n\n".join(system)
    if chat.temperature is not None:
        payload["temperature"] = min(chat.temperature, 1.0)  # Anthropic's range is 0..1
    if chat.tools:
        payload["tools"] = [
            {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": dict(tool.parameters),
            }
            for tool in chat.tools
        ]
    return payload


def messages(neutral: tuple[Mapping[str, Any], ...]) -> list[dict[str, Any]]:
    """User and assistant turns in Anthropic's shape; consecutive turns of one role merged
    (tool answers following one another share one user turn, as Anthropic expects)."""
    out: list[dict[str, Any]] = []
    for message in neutral:
        role = message["role"]
        if role == "system":
            continue
        blocks = _blocks(message)
        anthropic_role = "assistant" if role == "assistant" else "user"
        if out and out[-1]["role"] == anthropic_role:
            out[-1]["content"] = [*_as_blocks(out[-1]["content"]), *blocks]
        elif len(blocks) == 1 and blocks[0]["type"] == "text" and role != "tool":
            out.append({"role": anthropic_role, "content": blocks[0]["text"]})
        else:
            out.append({"role": anthropic_role, "content": blocks})
    return out


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if message["role"] == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": str(message["tool_call_id"]),
                "content": content if isinstance(content, (str, list)) else str(content or ""),
            }
        ]
    blocks = _as_blocks(content) if content else []
    calls: list[ToolCall] = message.get("tool_calls") or []
    blocks.extend(
        {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": call.arguments if isinstance(call.arguments, dict) else {},
        }
        for call in calls
    )
    return blocks


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):  # already content parts
        return [dict(part) for part in content]
    return [{"type": "text", "text": str(content)}]


registry.register(
    registry.ProviderKind(
        "anthropic", "llm", AnthropicOptions, factory=lambda settings: AnthropicAdapter()
    )
)
