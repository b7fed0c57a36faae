"""Google Gemini on the simulator: `POST {prefix}/v1beta/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse` (server-sent events, each a GenerateContentResponse chunk, the
last with finishReason and usageMetadata; no end marker), with the `x-goog-api-key` header and
Gemini's answer and error shapes. Point a provider's base_url at `sim.url(prefix)`.

The reply echoes the last user text unless `state.reply` says otherwise; with
`state.function_call` set (a function name and its args) and tools in the request, the model
calls it. A prompt longer than `state.context_window` tokens (words, here) is refused as Gemini
refuses one (400 INVALID_ARGUMENT, "The input token count ... exceeds the maximum ..."); with
`state.block_reason` set, the prompt is blocked (a 200 with `promptFeedback.blockReason` and no
candidates).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

from resilient.testing.simulator import SimRequest, SimResponse, Simulator

Contents = list[dict[str, Any]]


def echo(contents: Contents) -> str:
    """The default reply: the last turn's text, echoed."""
    parts = (contents[-1].get("parts") or []) if contents else []
    text = " ".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p)
    return f"echo: {text}"


def error(code: int, status: str, message: str) -> SimResponse:
    """An answer in Gemini's error shape; also handy as a fault body in tests."""
    return SimResponse.json(
        {"error": {"code": code, "message": message, "status": status}}, status=code
    )


class GeminiState:
    """What the simulated Gemini answered, and how it answers."""

    def __init__(self) -> None:
        self.reply: Callable[[Contents], str] = echo
        self.function_call: tuple[str, dict[str, Any]] | None = None
        self.context_window: int | None = None
        self.block_reason: str | None = None
        self.requests: list[dict[str, Any]] = []  # every body it answered, in order
        self.responses: list[dict[str, Any]] = []  # every answer, whole (a stream's joined)
        self._lock = threading.Lock()

    def generate(self, request: SimRequest) -> SimResponse:
        model, _, method = request.params["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return error(404, "NOT_FOUND", f"Method {method!r} not found for models/{model}.")
        if not request.headers.get("x-goog-api-key"):
            return error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        try:
            body = request.json()
        except ValueError:
            return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = _invalid(body)
        if problem is not None:
            return problem
        answer = self._answer(model, body)
        if isinstance(answer, SimResponse):
            return answer
        with self._lock:
            self.requests.append(body)
            self.responses.append(answer)
        if method == "generateContent":
            return SimResponse.json(answer)
        if "alt=sse" not in request.query.split("&"):
            return SimResponse.json([answer])  # without alt=sse Gemini streams one JSON array
        return SimResponse.stream(f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in _chunks(answer))

    def _answer(self, model: str, body: dict[str, Any]) -> dict[str, Any] | SimResponse:
        contents: Contents = body["contents"]
        system = (body.get("systemInstruction") or {}).get("parts") or []
        prompt = sum(_words(c.get("parts")) for c in contents) + _words(system)
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if self.context_window is not None and prompt > self.context_window:
            return error(
                400,
                "INVALID_ARGUMENT",
                f"The input token count ({prompt}) exceeds the maximum number of tokens "
                f"allowed ({self.context_window}).",
            )
        if self.block_reason is not None:
            feedback = {"blockReason": self.block_reason, "safetyRatings": []}
            return {"promptFeedback": feedback, "usageMetadata": usage, "modelVersion": model}
        words = self.reply(contents).split()
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        finish = "STOP"
        if isinstance(limit, int) and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        parts: list[dict[str, Any]] = [{"text": " ".join(words)}]
        if self.function_call is not None and body.get("tools") and finish == "STOP":
            name, args = self.function_call
            parts.append({"functionCall": {"name": name, "args": args}})
        usage["candidatesTokenCount"] = len(words)
        usage["totalTokenCount"] = prompt + len(words)
        return {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": usage,
            "modelVersion": model,
        }


def mount(sim: Simulator, prefix: str) -> GeminiState:
    state = GeminiState()
    sim.route("POST", f"{prefix}/v1beta/models/{{call}}", state.generate)
    return state


def _invalid(body: Any) -> SimResponse | None:
    if not isinstance(body, dict):
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return error(
            400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified"
        )
    for index, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"Please use a valid role: user, model. (contents[{index}].role: {role!r})",
            )
        if not content.get("parts"):
            return error(
                400,
                "INVALID_ARGUMENT",
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be "
                "empty.",
            )
    return None


def _chunks(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answer as Gemini streams it: its text a word at a time, function calls whole, the
    finish reason and the final usage on the last chunk."""
    if "candidates" not in answer:
        yield answer  # a blocked prompt: one chunk, the feedback
        return
    candidate = answer["candidates"][0]
    parts = candidate["content"]["parts"]
    words = parts[0]["text"].split(" ") if parts[0]["text"] else []
    pieces: list[dict[str, Any]] = [
        {"text": word if index == 0 else " " + word} for index, word in enumerate(words)
    ]
    pieces.extend(parts[1:])
    prompt = answer["usageMetadata"]["promptTokenCount"]
    for index, piece in enumerate(pieces or [{"text": ""}]):
        last = index == max(len(pieces), 1) - 1
        chunk: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": 0}
        if last:
            chunk["finishReason"] = candidate["finishReason"]
        yield {
            "candidates": [chunk],
            "usageMetadata": answer["usageMetadata"] if last else {"promptTokenCount": prompt},
            "modelVersion": answer["modelVersion"],
        }


def _words(parts: Any) -> int:
    if not isinstance(parts, list):
        return 0
    return sum(len(str(p.get("text", "")).split()) for p in parts if isinstance(p, dict))
