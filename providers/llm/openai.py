"""OpenAI Chat Completions, and any OpenAI-compatible endpoint by base_url (Groq, Together,
Ollama, vLLM): `POST {base}/v1/chat/completions`, `Authorization: Bearer <api_key>`
(https://platform.openai.com/docs/api-reference/chat/create).

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

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url, json_field
from providers.llm.models import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ToolCall,
    Usage,
    mapped_model,
    tool_call,
)
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


class OpenAIChatAdapter:
    honours_idempotency_key = False  # a repeat is a new completion: harmless, chat has no effect

    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
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
            json=body(chat, mapped_model(provider.settings.options, chat.model)),
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
        """OpenAI's error code in the reason; a prompt too long for the model is final."""
        if default.outcome is Outcome.OK:
            return default
        code = json_field(response, "error", "code")
        if code == "context_length_exceeded":
            return dataclasses.replace(
                default, outcome=Outcome.FATAL, reason=f"{response.status_code} {code}"
            )
        if code:
            return dataclasses.replace(default, reason=f"{default.reason} {code}")
        return default


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


register_sdk_kind("openai", factory=lambda settings: OpenAIChatAdapter())
