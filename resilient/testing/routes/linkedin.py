"""LinkedIn Posts API on the simulator: `POST /rest/posts` with a Bearer token, a
`LinkedIn-Version` and `X-Restli-Protocol-Version: 2.0.0`, answering 201 with an empty body and
the post's URN in `x-restli-id`, or LinkedIn's `{"status", "code", "message"}` errors (400, 401,
422 for a duplicate or an invalid post, 426 for a version that is not active).

Set `state.token` to accept only that token, and add to `state.inactive_versions` to sunset one.
Posts made are on `state.posts`, by URN.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

MAX_CHARS = 3000
_VERSION = re.compile(r"\d{6}(\.\d{2})?")
_AUTHOR = re.compile(r"urn:li:(organization|person):[^\s:]+")


def error(status: int, code: str, message: str) -> SimResponse:
    """An answer in LinkedIn's REST error shape."""
    return SimResponse.json({"status": status, "code": code, "message": message}, status=status)


class LinkedInState:
    def __init__(self) -> None:
        self.posts: dict[str, dict[str, Any]] = {}
        self.token: str | None = None
        self.inactive_versions: set[str] = set()
        self._lock = threading.Lock()

    def create(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request)
        if token is None or (self.token is not None and token != self.token):
            return error(401, "INVALID_ACCESS_TOKEN", "Invalid access token")
        version = request.headers.get("linkedin-version")
        if not version:
            return error(
                400,
                "VERSION_MISSING",
                "A version must be present. Please specify a version by adding the "
                "LinkedIn-Version header.",
            )
        if not _VERSION.fullmatch(version) or version in self.inactive_versions:
            return error(426, "NONEXISTENT_VERSION", f"Requested version {version} is not active")
        if request.headers.get("x-restli-protocol-version") != "2.0.0":
            return error(400, "ILLEGAL_ARGUMENT", "X-Restli-Protocol-Version 2.0.0 is required")
        try:
            body = request.json()
        except ValueError:
            return error(400, "ILLEGAL_ARGUMENT", "Request body is not valid JSON")
        problem = _problem(body)
        if problem is not None:
            return error(422, "UNPROCESSABLE_ENTITY", problem)
        with self._lock:
            for urn, post in self.posts.items():
                if post["author"] == body["author"] and post["commentary"] == body["commentary"]:
                    return error(422, "DUPLICATE_POST", f"Content is a duplicate of {urn}")
            urn = f"urn:li:share:{secrets.randbelow(9 * 10**18) + 10**18}"
            self.posts[urn] = body
        return SimResponse(201, {"x-restli-id": urn, "x-linkedin-id": urn}, b"")


def mount(sim: Simulator, prefix: str) -> LinkedInState:
    state = LinkedInState()
    sim.route("POST", f"{prefix}/rest/posts", state.create)
    return state


def _problem(body: Any) -> str | None:
    """What makes `body` an invalid post, as LinkedIn's validation message says it."""
    if not isinstance(body, dict):
        return "/ :: expected a record"
    missing = [
        field
        for field in ("author", "commentary", "visibility", "distribution", "lifecycleState")
        if field not in body
    ]
    if missing:
        return f"/{missing[0]} :: field is required but not found and has no default value"
    if not isinstance(body["author"], str) or not _AUTHOR.fullmatch(body["author"]):
        return f"/author :: {body['author']!r} is not a valid organization or person URN"
    commentary = body["commentary"]
    if not isinstance(commentary, str) or len(commentary) > MAX_CHARS:
        return f"/commentary :: must be text of at most {MAX_CHARS} characters"
    if body["lifecycleState"] != "PUBLISHED" or body["visibility"] not in (
        "PUBLIC",
        "CONNECTIONS",
        "LOGGED_IN",
    ):
        return "/lifecycleState :: a post is created PUBLISHED with a known visibility"
    return None
