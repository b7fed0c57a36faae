"""Mastodon on the simulator: `POST /api/v1/statuses` (JSON or form `status`) with a Bearer
token, answering 200 with a Status entity or Mastodon's `{"error": ...}` (401, 422, 429).

It honours `Idempotency-Key` as Mastodon does: a repeat with a key this account used in the
last hour answers the status already made and makes no new one. Every answer carries
`X-RateLimit-Limit`, `-Remaining` and `-Reset` (an ISO 8601 time); `state.exhaust(seconds)`
spends the window. Set `state.token` to accept only that token. Statuses made are on
`state.statuses`, by id.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

MAX_CHARS = 500
KEY_TTL = 3600.0  # Mastodon keeps idempotency keys for one hour
WINDOW = 300.0
LIMIT = 300


def error(status: int, message: str, headers: dict[str, str] | None = None) -> SimResponse:
    """An answer in Mastodon's error shape."""
    return SimResponse.json({"error": message}, status=status, headers=headers)


class MastodonState:
    def __init__(self, base: str = "https://mastodon.example") -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.token: str | None = None
        self._base = base
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}  # (token, key) -> (id, at)
        self._remaining = LIMIT
        self._reset = time.time() + WINDOW
        self._lock = threading.Lock()

    def exhaust(self, seconds: float) -> None:
        with self._lock:
            self._remaining = 0
            self._reset = time.time() + seconds

    def create(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request)
        if token is None or (self.token is not None and token != self.token):
            return error(401, "The access token is invalid")
        with self._lock:
            limited, headers = self._spend()
        if limited:
            return error(429, "Too many requests", headers)
        text = _status_text(request)
        if not text or not text.strip():
            return error(422, "Validation failed: Text can't be blank", headers)
        if len(text) > MAX_CHARS:
            return error(
                422, f"Validation failed: Text character limit of {MAX_CHARS} exceeded", headers
            )
        key = request.headers.get("idempotency-key")
        now = time.time()
        with self._lock:
            known = self._keys.get((token, key)) if key else None
            if known is not None and now - known[1] < KEY_TTL:
                return SimResponse.json(self.statuses[known[0]], headers=headers)
            status = self._status(text, now)
            self.statuses[status["id"]] = status
            if key:
                self._keys[(token, key)] = (status["id"], now)
        return SimResponse.json(status, headers=headers)

    def _status(self, text: str, now: float) -> dict[str, Any]:
        status_id = str(int(now * 1000) << 16 | secrets.randbelow(1 << 16))
        return {
            "id": status_id,
            "created_at": _iso(now),
            "content": f"<p>{html.escape(text)}</p>",
            "visibility": "public",
            "uri": f"{self._base}/users/brand/statuses/{status_id}",
            "url": f"{self._base}/@brand/{status_id}",
            "account": {"id": "1", "username": "brand", "acct": "brand"},
            "media_attachments": [],
            "mentions": [],
            "tags": [],
        }

    def _spend(self) -> tuple[bool, dict[str, str]]:
        now = time.time()
        if now >= self._reset:
            self._remaining, self._reset = LIMIT, now + WINDOW
        limited = self._remaining == 0
        if not limited:
            self._remaining -= 1
        headers = {
            "x-ratelimit-limit": str(LIMIT),
            "x-ratelimit-remaining": str(self._remaining),
            "x-ratelimit-reset": _iso(self._reset),
        }
        return limited, headers


def mount(sim: Simulator, prefix: str) -> MastodonState:
    state = MastodonState()
    sim.route("POST", f"{prefix}/api/v1/statuses", state.create)
    return state


def _status_text(request: SimRequest) -> str | None:
    if "json" in request.headers.get("content-type", ""):
        try:
            body = request.json()
        except ValueError:
            return None
        text = body.get("status") if isinstance(body, dict) else None
        return text if isinstance(text, str) else None
    values = parse_qs(request.body.decode(errors="replace")).get("status")
    return values[-1] if values else None


def _iso(timestamp: float) -> str:
    when = datetime.fromtimestamp(timestamp, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
