"""OpenAI Chat Completions, and any OpenAI-compatible endpoint by base_url (Groq, Together,
Ollama, vLLM): `POST {base}/v1/chat/completions`, `Authorization: Bearer <api_key>`
(https://platform.openai.com/docs/api-reference/chat/create).

Streamed with `"stream": true, "stream_options": {"include_usage": true}`: server-sent `data:`
events, each a `chat.completion.chunk` whose `choices[0].delta` adds text, or fragments of tool
calls (by `index`: the id and name first, then the arguments' JSON text in pieces); the chunk
with `finish_reason` ends the choice, a last chunk with no choices carries `usage`, and
`data: [DONE]` ends the stream (https://platform.openai.com/docs/api-reference/chat-streaming).
An error inside the stream comes as a `data:` event holding OpenAI's `{"error": {...}}`.

The base URL may be given with or without its `/v1` (the drop-in SDK's convention includes
it). The logical model name is mapped by the provider's `models` option. Tool calls go out as
`{"type": "function", "function": {"name", "arguments": "<JSON text>"}}` and come back
normalized, arguments parsed. A 400 whose `error.code` is `context_length_exceeded` is final.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx

from providers._sdk import KINDS, OpenAIOptions
from providers.adapter import api_key, base_url, json_field
from providers.llm.models import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ToolCall,
    Usage,
    arguments,
    mapped_model,
    tool_call,
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

API = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIChatOptions(OpenAIOptions, StreamOptions):
    """Config keys of an "openai" provider: the drop-in SDK's, and the streaming limits."""


class OpenAIChatAdapter:
    honours_idempotency_key = False  # a repeat is a new completion: harmless, chat has no effect

    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, {})

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, STREAM)

    def decoder(self, provider: str, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(provider, model)

    def _request(
        self, chat: ChatRequest, provider: ProviderRuntime, extra: dict[str, Any]
    ) -> httpx.Request:
        base = base_url(provider, API)
        url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        headers = {"Authorization": f"Bearer {api_key(provider)}"}
        options = provider.settings.options
        for option, header in (
            ("organization", "OpenAI-Organization"),
            ("project", "OpenAI-Project"),
        ):
            if options.get(option):
                headers[header] = str(options[option])
        return httpx.Request(
            "POST",
            url,
            headers=headers,
            json={**body(chat, mapped_model(provider.settings.options, chat.model)), **extra},
        )

    def parse(self, response: httpx.Response, provider: str, model: str) -> ChatResponse:
        data = response.json()
        choice = data["choices"][0]
        message = choice.get("message") or {}
        calls = [tool_call(c) for c in message.get("tool_calls") or ()]
        usage = data.get("usage") or {}
        finish = _FINISH.get(str(choice.get("finish_reason")), "tool_calls" if calls else "stop")
        return ChatResponse(
            text=message.get("content") or "",
            tool_calls=calls,
            finish_reason=finish,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            provider=provider,
            model=str(data.get("model") or model),
        )

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """OpenAI's error code in the reason; a prompt too long for the model, or refused on
        content policy (Azure's `content_filter`), is final."""
        if default.outcome is Outcome.OK:
            return default
        code = json_field(response, "error", "code")
        if code in ("context_length_exceeded", "content_filter", "content_policy_violation"):
            return dataclasses.replace(
                default, outcome=Outcome.FATAL, reason=f"{response.status_code} {code}"
            )
        if code:
            return dataclasses.replace(default, reason=f"{default.reason} {code}")
        return default


STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


class OpenAIStreamDecoder(DecoderBase):
    """One streamed completion (choice 0): text deltas as they come; each tool call assembled
    from its fragments and given complete once the choice finishes; usage from the last chunk."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self._partial: dict[int, dict[str, Any]] = {}  # tool call index -> id, name, pieces

    def feed(self, event: SseEvent) -> list[ChatChunk]:
        if event.data.strip() == "[DONE]":
            self._done = True
            return self._complete_calls()
        data = event_json(event, _CHUNK)
        if data.get("error"):
            raise stream_error(data["error"], "code", "type")
        try:
            return self._chunks(data)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise malformed(event, _CHUNK) from None

    def _chunks(self, data: dict[str, Any]) -> list[ChatChunk]:
        self._model = str(data.get("model") or self._model)
        usage = data.get("usage")
        if usage:
            self._usage = Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
        out: list[ChatChunk] = []
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out.extend(self._said(str(text)))
            for piece in delta.get("tool_calls") or ():
                self._assemble(piece)
            finish = choice.get("finish_reason")
            if finish:
                self._finish = _FINISH.get(str(finish), "stop")
                out.extend(self._complete_calls())
        return out

    def _assemble(self, piece: dict[str, Any]) -> None:
        call = self._partial.setdefault(
            int(piece.get("index", len(self._partial))), {"id": "", "name": "", "pieces": []}
        )
        function = piece.get("function") or {}
        call["id"] = piece.get("id") or call["id"]
        call["name"] = function.get("name") or call["name"]
        if function.get("arguments"):
            call["pieces"].append(str(function["arguments"]))

    def _complete_calls(self) -> list[ChatChunk]:
        calls = [
            ToolCall(str(c["id"]), str(c["name"]), arguments("".join(c["pieces"])))
            for _, c in sorted(self._partial.items())
        ]
        self._partial.clear()
        if not calls:
            return []
        self._calls.extend(calls)
        return [self._chunk(tool_calls=tuple(calls))]


_CHUNK = "a chat.completion.chunk"


def body(chat: ChatRequest, model: str) -> dict[str, Any]:
    """The Chat Completions body of `chat`, for `model` (the provider's own name)."""
    payload: dict[str, Any] = {"model": model, "messages": [_message(m) for m in chat.messages]}
    if chat.temperature is not None:
        payload["temperature"] = chat.temperature
    if chat.max_tokens is not None:
        payload["max_tokens"] = chat.max_tokens  # what every compatible server takes
    if chat.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in chat.tools
        ]
    return payload


def _message(message: Any) -> dict[str, Any]:
    out = dict(message)
    calls: list[ToolCall] | None = out.pop("tool_calls", None)
    if calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments
                    if isinstance(call.arguments, str)
                    else json.dumps(call.arguments),
                },
            }
            for call in calls
        ]
        out.setdefault("content", None)
    return out


_KIND = KINDS["openai"]  # the drop-in SDK's kind, with the streaming keys added to its options
registry.register(
    registry.ProviderKind(
        _KIND.name,
        _KIND.capability,
        OpenAIChatOptions,
        factory=lambda settings: OpenAIChatAdapter(),
        classify=_KIND.classify,
    )
)
