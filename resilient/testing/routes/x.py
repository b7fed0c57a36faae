"""X API v2 on the simulator: `POST /2/tweets` with a Bearer token, answering 201
`{"data": {"id", "text", "edit_history_tweet_ids"}}` or X's problem details
`{"title", "detail", "type", "status"}` (400 invalid, 401, 403 duplicate content, 429).

Every answer carries `x-rate-limit-limit`, `-remaining` and `-reset` (an epoch time, not
Retry-After). `state.exhaust(seconds)` spends the current window: posts get 429 until it resets.
Set `state.token` to accept only that token. Posts made are on `state.posts`, by id.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from typing import Any

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

WINDOW = 900.0  # X counts post creation per user in 15-minute windows
LIMIT = 100
MAX_CHARS = 280
_URL = re.compile(r"https?://\S+")
_INVALID = "https://api.twitter.com/2/problems/invalid-request"


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> SimResponse:
    """An answer in X's problem-details shape."""
    return SimResponse.json(
        {"title": title, "detail": detail, "type": kind, "status": status}, status=status
    )


def invalid(message: str) -> SimResponse:
    body = {
        "errors": [{"message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": _INVALID,
    }
    return SimResponse.json(body, status=400)


class XState:
    """The simulated account: its posts and its rate-limit window."""

    def __init__(self) -> None:
        self.posts: dict[str, dict[str, Any]] = {}
        self.token: str | None = None  # None: any bearer token is a valid one
        self._remaining = LIMIT
        self._reset = time.time() + WINDOW
        self._lock = threading.Lock()

    def exhaust(self, seconds: float) -> None:
        """Spend the window; it resets `seconds` from now."""
        with self._lock:
            self._remaining = 0
            self._reset = time.time() + seconds

    def create(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request)
        if token is None or (self.token is not None and token != self.token):
            return problem(401, "Unauthorized", "Unauthorized")
        with self._lock:
            limited = self._spend()
            headers = self._limit_headers()
        if limited:
            return _with(problem(429, "Too Many Requests", "Too Many Requests"), headers)
        return _with(self._post(request), headers)

    def _post(self, request: SimRequest) -> SimResponse:
        try:
            body = request.json()
        except ValueError:
            return invalid("Request body is not valid JSON")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return invalid("$.text: text or media is required")
        if len(_URL.sub("x" * 23, text)) > MAX_CHARS:  # X counts each link as 23 characters
            return invalid("$.text: Tweet text is too long")
        with self._lock:
            if any(post["text"] == text for post in self.posts.values()):
                return problem(
                    403,
                    "Forbidden",
                    "You are not allowed to create a Tweet with duplicate content.",
                )
            post_id = str(secrets.randbelow(9 * 10**18) + 10**18)
            self.posts[post_id] = {"id": post_id, "text": text, "edit_history_tweet_ids": [post_id]}
            return SimResponse.json({"data": self.posts[post_id]}, status=201)

    def _spend(self) -> bool:
        """Count one call in the window; True when the window was already spent."""
        now = time.time()
        if now >= self._reset:
            self._remaining, self._reset = LIMIT, now + WINDOW
        if self._remaining == 0:
            return True
        self._remaining -= 1
        return False

    def _limit_headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(LIMIT),
            "x-rate-limit-remaining": str(self._remaining),
            "x-rate-limit-reset": str(math.ceil(self._reset)),
        }


def mount(sim: Simulator, prefix: str) -> XState:
    state = XState()
    sim.route("POST", f"{prefix}/2/tweets", state.create)
    return state


def _with(response: SimResponse, headers: dict[str, str]) -> SimResponse:
    response.headers = {**response.headers, **headers}
    return response
