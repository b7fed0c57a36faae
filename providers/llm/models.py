"""What a chat is: the request a caller makes, the normalized answer, its one error of its own,
and what a chat is to the pipeline (ChatCall, streamed or not).

Messages and tools come in one provider-neutral shape (OpenAI's, minus its wrappers), which each
adapter translates to what its provider documents:

- a message is `{"role": "system" | "user" | "assistant", "content": str}`; an assistant turn
  that called tools adds `"tool_calls": [{"id", "name", "arguments": {...}}]` (a ToolCall's
  fields); a tool's answer is `{"role": "tool", "tool_call_id": str, "content": str}`;
- a tool is `{"name", "description", "parameters": <JSON schema>}` (OpenAI's
  `{"type": "function", "function": {...}}` is accepted too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from providers.models import _CONTROL, _SURROGATE
from resilient.errors import FatalError, InvalidRequest, ResilientError

if TYPE_CHECKING:
    from resilient.runtime import ProviderRuntime

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
_ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model asked to be run. `arguments` is the parsed JSON object; it stays the raw
    string only when a model produced arguments that are not valid JSON."""

    id: str
    name: str
    arguments: dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of the attempt that answered (failed attempts are not counted)."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """`result.value` of `gw.llm.chat`: the answer of the provider and model that gave it."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage
    provider: str
    model: str  # the provider's own name of the model that answered


class ContextLengthExceeded(FatalError):
    """The prompt does not fit the model's context window: the same model is not retried."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat, checked on construction: bad input raises InvalidRequest before any attempt."""

    messages: tuple[Mapping[str, Any], ...]
    model: str  # a logical name (mapped per provider by its `models` option) or a provider's own
    temperature: float | None = None
    max_tokens: int | None = None
    tools: tuple[Tool, ...] = ()

    @classmethod
    def of(
        cls,
        messages: Sequence[Mapping[str, Any]],
        model: str,
        temperature: float | None,
        max_tokens: int | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> ChatRequest:
        if not isinstance(model, str) or not model:
            raise InvalidRequest(f"chat: a model name is required, got {model!r}")
        _encodable("the model name", model)
        if not _is_list(messages) or not messages:
            raise InvalidRequest("chat: messages must be a non-empty list")
        checked = tuple(_message(m) for m in messages)
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidRequest(
                f"chat: max_tokens must be a whole number >= 1, got {max_tokens!r}"
            )
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= 2
        ):
            raise InvalidRequest(f"chat: temperature must be within 0..2, got {temperature!r}")
        if tools is not None and not _is_list(tools):
            raise InvalidRequest(f"chat: tools must be a list, got {type(tools).__name__}")
        return cls(checked, model, temperature, max_tokens, tuple(_tool(t) for t in tools or ()))


def _encodable(what: str, value: object) -> None:
    """Text that UTF-8 can encode, as the JSON sent needs: a lone surrogate is refused here, not
    met as UnicodeEncodeError mid-send."""
    if isinstance(value, str) and _SURROGATE.search(value):
        raise InvalidRequest(f"chat: {what} contains a lone surrogate, which UTF-8 cannot encode")


def _json_encodable(what: str, value: object) -> None:
    """A structure the JSON sent can hold: plain JSON values, text UTF-8 can encode, no NaN."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"chat: {what} contains a lone surrogate, which UTF-8 cannot encode"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"chat: {what} are not plain JSON ({exc})") from None


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _message(message: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(message, Mapping):
        raise InvalidRequest(f"chat: a message must be a mapping, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequest(f"chat: unknown message role {role!r}; expected one of {_ROLES}")
    if role == "tool" and not message.get("tool_call_id"):
        raise InvalidRequest("chat: a tool message needs the tool_call_id it answers")
    calls = message.get("tool_calls")
    content = message.get("content")
    if content is None and calls is None:
        raise InvalidRequest(f"chat: a {role} message needs its content")
    if content is not None and not isinstance(content, str):
        raise InvalidRequest(f"chat: content must be text, got {type(content).__name__}")
    _encodable("content", content)
    if content and _CONTROL.search(content):
        raise InvalidRequest("chat: content contains control characters")
    _encodable("tool_call_id", message.get("tool_call_id"))
    if calls is not None:
        if role != "assistant":
            raise InvalidRequest("chat: only an assistant message carries tool_calls")
        if not _is_list(calls):
            raise InvalidRequest(f"chat: tool_calls must be a list, got {type(calls).__name__}")
        checked = [tool_call(c) for c in calls]
        for call in checked:
            _encodable("a tool call's id", call.id)
            _encodable("a tool call's name", call.name)
            _json_encodable("a tool call's arguments", call.arguments)
        return {**message, "tool_calls": checked}
    return dict(message)


def tool_call(call: ToolCall | Mapping[str, Any]) -> ToolCall:
    """A ToolCall from one, or from its fields (OpenAI's `function` wrapper accepted)."""
    if isinstance(call, ToolCall):
        return call
    if not isinstance(call, Mapping):
        raise InvalidRequest(f"chat: a tool call must be a mapping, got {type(call).__name__}")
    fields = call.get("function", call)
    name, call_id = fields.get("name"), call.get("id")
    if not name or not call_id:
        raise InvalidRequest(f"chat: a tool call needs an id and a name: {dict(call)!r}")
    return ToolCall(str(call_id), str(name), arguments(fields.get("arguments")))


def arguments(value: Any) -> dict[str, Any] | str:
    """Tool arguments as an object: parsed when given as JSON text (OpenAI sends a string)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) else value
    raise InvalidRequest(f"chat: tool arguments must be an object, got {type(value).__name__}")


def _tool(tool: Mapping[str, Any]) -> Tool:
    if not isinstance(tool, Mapping):
        raise InvalidRequest(f"chat: a tool must be a mapping, got {type(tool).__name__}")
    fields = tool.get("function", tool) if tool.get("type") == "function" else tool
    name = fields.get("name")
    if not name or not isinstance(name, str):
        raise InvalidRequest(f"chat: a tool needs a name: {dict(tool)!r}")
    _encodable("a tool's name", name)
    _encodable("a tool's description", fields.get("description"))
    parameters = fields.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise InvalidRequest(f"chat: tool {name!r}: parameters must be a JSON schema object")
    _json_encodable(f"tool {name!r}'s parameters", parameters)
    return Tool(name, fields.get("description"), parameters)


def mapped_model(options: Mapping[str, Any], model: str) -> str:
    """The provider's own name for logical model `model` (its `models` option), else `model`."""
    models: Mapping[str, str] = options.get("models") or {}
    return models.get(model, model)


class ChatCall:
    """What a chat is to the pipeline, streamed or not. It has no side effect: nothing to
    deduplicate (no ledger), a repeat on one provider is harmless, and a silent provider is
    left at once for the next, since retrying it only multiplies the wait."""

    ledger = False
    failover_when_ambiguous = True
    credential: str | None = None

    def __init__(self, chat: ChatRequest) -> None:
        self.chat = chat

    def idempotent_on(self, provider: ProviderRuntime) -> bool:
        return True

    @staticmethod
    def adapter(provider: ProviderRuntime, method: str, doing: str) -> Any:
        """The provider's adapter when it has `method`; else a clear error, before anything is
        sent (a provider of another capability put in an llm chain)."""
        adapter = provider.adapter
        if adapter is None or not hasattr(adapter, method):
            raise ResilientError(
                f"provider {provider.name!r} (kind {provider.settings.kind!r}) cannot {doing}"
            )
        return adapter
