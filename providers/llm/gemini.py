"""Google Gemini API: `POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`
(https://ai.google.dev/api/generate-content), streamed by `:streamGenerateContent?alt=sse`, whose
every `data:` event is one GenerateContentResponse chunk.

Translated from the neutral chat shape: system messages become `systemInstruction`; roles are
`user` and `model` (consecutive turns of one role merged); text goes in `contents[].parts[].text`;
tools go out as `tools[].functionDeclarations` with their JSON schema as `parametersJsonSchema`
(full JSON Schema, where `parameters` takes only an OpenAPI subset and refuses keys such as
`additionalProperties`); an assistant's tool calls become `functionCall` parts and tool answers
`functionResponse` parts (`{"output": <content>}`, named after the call they answer) in a user
turn (https://ai.google.dev/gemini-api/docs/function-calling); temperature and max_tokens go in
`generationConfig`. Back: text parts joined (thought parts left out), `functionCall` parts as
tool calls (Gemini often sends no call id: one is made up), `finishReason` mapped, usage from
`usageMetadata` (prompt tokens; candidate plus thinking tokens, as billed), the model from
`modelVersion`.

Errors are `{"error": {"code", "message", "status"}}`: RESOURCE_EXHAUSTED (429) waits as its
`RetryInfo.retryDelay` says when no Retry-After came; an INVALID_ARGUMENT (400) saying the input
token count exceeds the maximum is context_length_exceeded (final). A prompt blocked by
`promptFeedback.blockReason` (a 200 with no candidates) is a content-policy rejection (final).
A stream has no end marker of its own: it is finished once a candidate has a finishReason.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from providers.adapter import api_key, base_url, json_field
from providers.llm.errors import CONTENT_FILTER, ContentRejected
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

__all__ = ["ContentRejected", "GeminiAdapter", "GeminiDecoder", "body"]

API = "https://generativelanguage.googleapis.com"
VERSION = "v1beta"
_TOO_LONG = ("input token count", "exceeds the maximum")

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


class GeminiOptions(StreamOptions):
    """Config keys of a "gemini" provider: its models, and how its streams may run."""

    models: dict[str, str] = {}  # logical model name -> Gemini's model name


class GeminiAdapter:
    honours_idempotency_key = False  # a repeat is a new answer: harmless, chat has no effect

    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, "generateContent")

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, "streamGenerateContent", {"alt": "sse"})

    def _request(
        self,
        chat: ChatRequest,
        provider: ProviderRuntime,
        method: str,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        base = base_url(provider, API)
        root = base if base.endswith(f"/{VERSION}") else f"{base}/{VERSION}"
        model = mapped_model(provider.settings.options, chat.model)
        resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return httpx.Request(
            "POST",
            f"{root}/{resource}:{method}",
            params=params,
            headers={"x-goog-api-key": api_key(provider)},
            json=body(chat),
        )

    def parse(self, response: httpx.Response, provider: str, model: str) -> ChatResponse:
        data = response.json()
        candidate = data["candidates"][0]
        text, calls = _parts(candidate)
        return ChatResponse(
            text=text,
            tool_calls=calls,
            finish_reason=_finish(candidate.get("finishReason"), calls),
            usage=_usage(data.get("usageMetadata")),
            provider=provider,
            model=str(data.get("modelVersion") or model),
        )

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """Gemini's error status in the reason; a prompt too long for the model, or blocked by
        its safety filters, is final."""
        if default.outcome is Outcome.OK:
            if b'"blockReason"' not in response.content:  # spares a JSON parse of every answer
                return default
            block = json_field(response, "promptFeedback", "blockReason")
            if not block:
                return default
            return Verdict(
                Outcome.FATAL, response.status_code, f"{default.reason} {CONTENT_FILTER} {block}"
            )
        status = json_field(response, "error", "status")
        message = (json_field(response, "error", "message") or "").lower()
        if status == "INVALID_ARGUMENT" and all(words in message for words in _TOO_LONG):
            return dataclasses.replace(
                default,
                outcome=Outcome.FATAL,
                reason=f"{response.status_code} context_length_exceeded",
            )
        delay = default.server_delay
        if delay is None and response.status_code == 429:
            delay = _retry_delay(response)
        reason = f"{default.reason} {status}" if status else default.reason
        return dataclasses.replace(default, reason=reason, server_delay=delay)

    def decoder(self, provider: str, model: str) -> GeminiDecoder:
        return GeminiDecoder(provider, model)


class GeminiDecoder(DecoderBase):
    """One streamed answer: each event a GenerateContentResponse chunk whose text parts are
    deltas; the chunk whose candidate has a finishReason ends it (usage: the latest seen). An
    `error` object in the stream is Gemini saying the answer will not complete (StreamError)."""

    @property
    def finished(self) -> bool:
        return self._finish is not None  # Gemini sends no end marker of its own

    def feed(self, event: SseEvent) -> list[ChatChunk]:
        if self.finished or not event.data.strip():
            return []
        data = event_json(event, _RESPONSE)
        if data.get("error"):
            raise stream_error(data["error"], "status")
        self._model = str(data.get("modelVersion") or self._model)
        if data.get("usageMetadata"):
            self._usage = _usage(data["usageMetadata"])
        candidates = data.get("candidates")
        if not candidates:
            if (data.get("promptFeedback") or {}).get("blockReason"):
                self._finish = "content_filter"  # the prompt was blocked: nothing will come
                return [self._piece("", [])]
            return []
        try:
            candidate = candidates[0]
            text, calls = _parts(candidate)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise malformed(event, "a readable candidate") from None
        self._text.append(text)
        self._calls.extend(calls)
        if candidate.get("finishReason"):
            self._finish = _finish(candidate["finishReason"], self._calls)
        elif not text and not calls:
            return []
        return [self._piece(text, calls)]

    def _piece(self, text: str, calls: list[ToolCall]) -> ChatChunk:
        """A chunk of the answer; the last one carries the finish and the usage."""
        return self._chunk(
            text=text,
            tool_calls=tuple(calls),
            finish_reason=self._finish,
            usage=self._usage if self.finished else None,
        )


_RESPONSE = "a GenerateContentResponse"


def body(chat: ChatRequest) -> dict[str, Any]:
    """The GenerateContentRequest of `chat` (the model goes in the URL, not the body)."""
    payload: dict[str, Any] = {"contents": contents(chat.messages)}
    system = [str(m.get("content") or "") for m in chat.messages if m["role"] == "system"]
    if system:
        payload["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config: dict[str, Any] = {}
    if chat.temperature is not None:
        config["temperature"] = chat.temperature
    if chat.max_tokens is not None:
        config["maxOutputTokens"] = chat.max_tokens
    if config:
        payload["generationConfig"] = config
    if chat.tools:
        payload["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": tool.name,
                        **({"description": tool.description} if tool.description else {}),
                        "parametersJsonSchema": dict(tool.parameters),
                    }
                    for tool in chat.tools
                ]
            }
        ]
    return payload


def contents(neutral: tuple[Mapping[str, Any], ...]) -> list[dict[str, Any]]:
    """User and model turns in Gemini's shape; consecutive turns of one role merged (answers
    to parallel calls share one user turn, as Gemini expects)."""
    names: dict[str, str] = {}  # tool call id -> the function it called
    out: list[dict[str, Any]] = []
    for message in neutral:
        role = message["role"]
        if role == "system":
            continue
        calls: list[ToolCall] = message.get("tool_calls") or []
        names.update((call.id, call.name) for call in calls)
        parts = _message_parts(message, calls, names)
        gemini_role = "model" if role == "assistant" else "user"
        if out and out[-1]["role"] == gemini_role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": gemini_role, "parts": parts})
    return out


def _message_parts(
    message: Mapping[str, Any], calls: list[ToolCall], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    content = message.get("content")
    if message["role"] == "tool":
        call_id = str(message["tool_call_id"])
        name = names.get(call_id) or str(message.get("name") or call_id)
        return [{"functionResponse": {"name": name, "response": {"output": content}}}]
    parts = _text_parts(content)
    parts.extend(
        {
            "functionCall": {
                "name": call.name,
                "args": call.arguments if isinstance(call.arguments, dict) else {},
            }
        }
        for call in calls
    )
    return parts


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if not content:
        return []
    if isinstance(content, list):  # OpenAI-style content parts: their text, Gemini's as they are
        return [
            {"text": str(part.get("text", ""))} if part.get("type") == "text" else dict(part)
            for part in content
        ]
    return [{"text": str(content)}]


def _parts(candidate: Mapping[str, Any]) -> tuple[str, list[ToolCall]]:
    """A candidate's answer text (thought summaries left out) and tool calls."""
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(str(p["text"]) for p in parts if "text" in p and not p.get("thought"))
    calls = [
        ToolCall(
            str(p["functionCall"].get("id") or "call_" + secrets.token_hex(12)),
            str(p["functionCall"]["name"]),
            arguments(p["functionCall"].get("args")),
        )
        for p in parts
        if "functionCall" in p
    ]
    return text, calls


def _finish(reason: Any, calls: list[ToolCall]) -> FinishReason:
    finish = _FINISH.get(str(reason), "stop")
    return "tool_calls" if calls and finish == "stop" else finish


def _usage(metadata: Any) -> Usage:
    metadata = metadata or {}
    output = int(metadata.get("candidatesTokenCount") or 0)
    return Usage(
        int(metadata.get("promptTokenCount") or 0),
        output + int(metadata.get("thoughtsTokenCount") or 0),
    )


def _retry_delay(response: httpx.Response) -> float | None:
    """Seconds from the error's google.rpc.RetryInfo detail (`"retryDelay": "23s"`)."""
    try:
        details = response.json()["error"].get("details") or []
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    for detail in details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


registry.register(
    registry.ProviderKind("gemini", "llm", GeminiOptions, factory=lambda settings: GeminiAdapter())
)
