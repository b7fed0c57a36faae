"""Facebook Graph API on the simulator: `POST /v{version}/{page_id}/feed` with `message` and/or
`link` and a Page `access_token` (form, query or `Authorization: Bearer`), answering 200
`{"id": "{page_id}_{post_id}"}` or the Graph error `{"error": {"message", "type", "code",
"fbtrace_id"}}` with Facebook's statuses: 400 for a bad token (190, with `WWW-Authenticate`),
a missing message (100) or a duplicate (506).

Set `state.token` to accept only that token. Posts made are on `state.posts`, by id.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

_VERSION = re.compile(r"v\d+\.\d+")


def error(
    status: int, code: int, message: str, kind: str = "OAuthException", **headers: str
) -> SimResponse:
    """An answer in the Graph API's error shape."""
    body = {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": _trace()}}
    return SimResponse.json(body, status=status, headers=headers)


class FacebookState:
    def __init__(self) -> None:
        self.posts: dict[str, dict[str, Any]] = {}
        self.token: str | None = None
        self._lock = threading.Lock()

    def feed(self, request: SimRequest) -> SimResponse:
        version, page = request.params["version"], request.params["page"]
        if not _VERSION.fullmatch(version) or not page.isdigit():
            return error(400, 2500, f"Unknown path components: /{version}/{page}/feed")
        params = _params(request)
        token = params.get("access_token") or bearer_token(request)
        if not token:
            return error(
                400,
                2500,
                "An active access token must be used to query information about the current user.",
            )
        if self.token is not None and token != self.token:
            reason = "Invalid OAuth access token - Cannot parse access token"
            challenge = f'OAuth "Facebook Platform" "invalid_token" "{reason}"'
            return error(400, 190, reason, **{"www-authenticate": challenge})
        message, link = params.get("message"), params.get("link")
        if not message and not link:
            return error(400, 100, "(#100) Missing message or attachment")
        with self._lock:
            if message and any(p["message"] == message for p in self.posts.values()):
                return error(400, 506, "(#506) Duplicate status message")
            post_id = f"{page}_{secrets.randbelow(9 * 10**15) + 10**15}"
            self.posts[post_id] = {"id": post_id, "message": message, "link": link}
        return SimResponse.json({"id": post_id})


def mount(sim: Simulator, prefix: str) -> FacebookState:
    state = FacebookState()
    sim.route("POST", f"{prefix}/{{version}}/{{page}}/feed", state.feed)
    return state


def _params(request: SimRequest) -> dict[str, str]:
    """Graph parameters from the query and the body, form-encoded or JSON (the body wins)."""
    params = {key: values[-1] for key, values in parse_qs(request.query).items()}
    if "json" in request.headers.get("content-type", ""):
        try:
            body = request.json()
        except ValueError:
            body = {}
        params.update({k: str(v) for k, v in body.items()} if isinstance(body, dict) else {})
    else:
        form = parse_qs(request.body.decode(errors="replace"))
        params.update({key: values[-1] for key, values in form.items()})
    return params


def _trace() -> str:
    return secrets.token_urlsafe(8)
