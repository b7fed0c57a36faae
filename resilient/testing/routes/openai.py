"""OpenAI on the simulator: chat completions, plain and streamed (server-sent events in OpenAI's
chunk format, one flushed part per event, ending `data: [DONE]`), with OpenAI's error shape.
Point a client at `sim.url(prefix + "/v1")`. The reply echoes the last message unless
`state.reply` says otherwise; with `state.tool_call` set (a tool name and its arguments) and
tools in the request, it calls that tool (streamed: the arguments' JSON in three fragments).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from resilient.testing.routes import bearer_token, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

Messages = list[dict[str, Any]]


def echo(messages: Messages) -> str:
    """The default reply: the last message's text, echoed."""
    content = messages[-1].get("content") if messages else None
    if isinstance(content, list):  # content parts: keep the text ones
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return f"echo: {content or ''}"


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> SimResponse:
    """An answer in OpenAI's error shape; also handy as a fault body in tests."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return SimResponse.json(body, status=status, headers={"x-request-id": new_id("req_", 32)})


class OpenAIState:
    """What the simulated OpenAI answered, and how it answers."""

    def __init__(self) -> None:
        self.reply: Callable[[Messages], str] = echo
        self.tool_call: tuple[str, dict[str, Any]] | None = None
        self.completions: list[dict[str, Any]] = []  # every completion served, streamed or not
        self._lock = threading.Lock()

    def chat_completions(self, request: SimRequest) -> SimResponse:
        if bearer_token(request) is None:
            return error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        try:
            body = request.json()
        except ValueError:
            return error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return error(400, "Invalid type for request body: expected an object.")
        problem = _invalid(body)
        if problem is not None:
            return problem
        messages: Messages = body["messages"]
        completion = {
            "id": new_id("chatcmpl-", 24),
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_sim",
            "content": self.reply(messages),
            "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
            "tool_call": None,
        }
        if self.tool_call is not None and body.get("tools"):
            name, arguments = self.tool_call
            completion["tool_call"] = {
                "id": new_id("call_", 24),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        with self._lock:
            self.completions.append(completion)
        headers = {"x-request-id": new_id("req_", 32), "openai-processing-ms": "1"}
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
            events = [f"data: {json.dumps(chunk)}\n\n" for chunk in _chunks(completion, usage)]
            return SimResponse.stream([*events, "data: [DONE]\n\n"], headers=headers)
        return SimResponse.json(_completion(completion), headers=headers)


def mount(sim: Simulator, prefix: str) -> OpenAIState:
    state = OpenAIState()
    sim.route("POST", f"{prefix}/v1/chat/completions", state.chat_completions)
    return state


def _invalid(body: dict[str, Any]) -> SimResponse | None:
    if not body.get("model"):
        return error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        return error(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return error(400, "Invalid type for 'messages': expected an array of objects.")
    if not messages:
        return error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    return None


def _finish(completion: dict[str, Any]) -> str:
    return "tool_calls" if completion["tool_call"] else "stop"


def _usage(completion: dict[str, Any]) -> dict[str, int]:
    prompt, answer = completion["prompt_tokens"], len(completion["content"].split())
    return {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}


def _completion(completion: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": completion["model"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": completion["content"],
                    "refusal": None,
                    "annotations": [],
                    **(
                        {"tool_calls": [completion["tool_call"]]} if completion["tool_call"] else {}
                    ),
                },
                "logprobs": None,
                "finish_reason": _finish(completion),
            }
        ],
        "usage": _usage(completion),
        "service_tier": "default",
        "system_fingerprint": completion["system_fingerprint"],
    }


def _chunks(completion: dict[str, Any], usage: bool) -> Iterator[dict[str, Any]]:
    """The completion as OpenAI streams it: the role, then the text word by word, then a tool
    call's id and name and its arguments in fragments, then the finish reason, then (when asked
    for) a usage chunk with no choices."""

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _chunk(completion, [choice], usage)

    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    words = completion["content"].split(" ")
    for index, word in enumerate(words):
        yield chunk({"content": word if index == 0 else " " + word}, None)
    call = completion["tool_call"]
    if call is not None:
        head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        yield chunk({"tool_calls": [{"index": 0, **head}]}, None)
        text = call["function"]["arguments"]
        third = max(1, len(text) // 3)
        for start in range(0, len(text), third):
            piece = {"index": 0, "function": {"arguments": text[start : start + third]}}
            yield chunk({"tool_calls": [piece]}, None)
    yield chunk({}, _finish(completion))
    if usage:
        yield {**_chunk(completion, [], usage), "usage": _usage(completion)}


def _chunk(completion: dict[str, Any], choices: list[Any], usage: bool) -> dict[str, Any]:
    chunk = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "service_tier": "default",
        "system_fingerprint": completion["system_fingerprint"],
        "choices": choices,
    }
    if usage:
        chunk["usage"] = None
    return chunk
