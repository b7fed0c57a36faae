"""Anthropic on the simulator: the Messages API (`POST {prefix}/v1/messages`), plain and
streamed (`"stream": true`: Anthropic's named server-sent events, one flushed part each:
message_start, ping, content_block_start / content_block_delta / content_block_stop per block,
message_delta, message_stop), with Anthropic's headers, answer and error shapes. Point a
provider's base_url at `sim.url(prefix)`. The reply echoes the last user text unless
`state.reply` says otherwise; with `state.tool_use` set (a tool name and its input) and tools in
the request, it calls that tool. A prompt longer than `state.context_window` tokens (words,
here) is refused the way Anthropic refuses one: 400 `invalid_request_error`, "prompt is too
long".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

from resilient.testing.routes import new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

Messages = list[dict[str, Any]]
VERSION = "2023-06-01"


def echo(messages: Messages) -> str:
    """The default reply: the last message's text, echoed."""
    content = messages[-1].get("content") if messages else None
    if isinstance(content, list):
        content = " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return f"echo: {content or ''}"


def error(status: int, type: str, message: str) -> SimResponse:
    """An answer in Anthropic's error shape; also handy as a fault body in tests."""
    request_id = new_id("req_", 24)
    body = {"type": "error", "error": {"type": type, "message": message}, "request_id": request_id}
    return SimResponse.json(body, status=status, headers={"request-id": request_id})


class AnthropicState:
    """What the simulated Anthropic answered, and how it answers."""

    def __init__(self) -> None:
        self.reply: Callable[[Messages], str] = echo
        self.tool_use: tuple[str, dict[str, Any]] | None = None
        self.context_window: int | None = None
        self.requests: list[dict[str, Any]] = []  # every body it answered, in order
        self.messages: list[dict[str, Any]] = []  # every message it served
        self._lock = threading.Lock()

    def create(self, request: SimRequest) -> SimResponse:
        if not request.headers.get("x-api-key"):
            return error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = request.json()
        except ValueError:
            return error(400, "invalid_request_error", "There was an error parsing the body.")
        if not isinstance(body, dict):
            return error(400, "invalid_request_error", "body: Input should be an object")
        problem = _invalid(body)
        if problem is not None:
            return problem
        messages: Messages = body["messages"]
        prompt = _words(body.get("system")) + sum(_words(m.get("content")) for m in messages)
        window = self.context_window
        if window is not None and prompt > window:
            return error(
                400,
                "invalid_request_error",
                f"prompt is too long: {prompt} tokens > {window} maximum",
            )
        content: list[dict[str, Any]] = []
        stop = "end_turn"
        text = self.reply(messages)
        words = text.split()
        if len(words) > body["max_tokens"]:
            text, stop = " ".join(words[: body["max_tokens"]]), "max_tokens"
        content.append({"type": "text", "text": text})
        if self.tool_use is not None and body.get("tools") and stop == "end_turn":
            name, arguments = self.tool_use
            content.append(
                {"type": "tool_use", "id": new_id("toolu_", 24), "name": name, "input": arguments}
            )
            stop = "tool_use"
        message = {
            "id": new_id("msg_", 24),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": len(text.split()),
                "service_tier": "standard",
            },
        }
        with self._lock:
            self.requests.append(body)
            self.messages.append(message)
        headers = {"request-id": new_id("req_", 24)}
        if body.get("stream"):
            return SimResponse.stream(
                (f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in _events(message)),
                headers=headers,
            )
        return SimResponse.json(message, headers=headers)


def mount(sim: Simulator, prefix: str) -> AnthropicState:
    state = AnthropicState()
    sim.route("POST", f"{prefix}/v1/messages", state.create)
    return state


def _invalid(body: dict[str, Any]) -> SimResponse | None:
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return error(400, "invalid_request_error", f"{field}: Field required")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return error(400, "invalid_request_error", "max_tokens: Input should be greater than 0")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return error(400, "invalid_request_error", "messages: at least one message is required")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return error(
                400,
                "invalid_request_error",
                f'messages.{index}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.',
            )
    return None


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`message` as Anthropic streams it: text word by word, a tool's input in three pieces."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [
                {"type": "text_delta", "text": word if n == 0 else " " + word}
                for n, word in enumerate(words)
            ]
        else:
            opened = {**block, "input": {}}
            text = json.dumps(block["input"])
            third = max(1, len(text) // 3)
            deltas = [
                {"type": "input_json_delta", "partial_json": text[at : at + third]}
                for at in range(0, len(text), third)
            ]
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": opened,
            },
        )
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(
            _words(part.get("text") or part.get("content"))
            for part in content
            if isinstance(part, dict)
        )
    return 0
