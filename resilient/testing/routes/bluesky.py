"""Bluesky (AT Protocol XRPC) on the simulator: `com.atproto.server.createSession` and
`com.atproto.repo.createRecord` for `app.bsky.feed.post`, answering in the PDS's shapes:
a session `{"did", "handle", "accessJwt", "refreshJwt", "active"}`, a record
`{"uri", "cid", "commit", "validationStatus"}`, or `{"error", "message"}` with 400 or 401
(AuthenticationRequired, InvalidToken, ExpiredToken, InvalidRequest).

Accounts exist once added: `did = state.add_account("brand.bsky.social", "app-password")`.
Access tokens are JWTs whose `exp` is `state.access_ttl` seconds out. Sessions created are
counted in `state.sessions_created`; posts made are on `state.posts`, by URI.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

MAX_GRAPHEMES = 300
_POST = "app.bsky.feed.post"
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def error(status: int, name: str, message: str) -> SimResponse:
    """An answer in the XRPC error shape."""
    return SimResponse.json({"error": name, "message": message}, status=status)


class BlueskyState:
    def __init__(self) -> None:
        self.posts: dict[str, dict[str, Any]] = {}
        self.sessions_created = 0
        self.access_ttl = 7200.0
        self._accounts: dict[str, tuple[str, str, str]] = {}  # identifier -> did, handle, pw
        self._tokens: dict[str, tuple[str, float]] = {}  # accessJwt -> did, expires at
        self._lock = threading.Lock()

    def add_account(self, handle: str, app_password: str) -> str:
        """Create an account that signs in with `handle` (or its DID) and `app_password`."""
        did = "did:plc:" + "".join(secrets.choice(_TID_ALPHABET) for _ in range(24))
        with self._lock:
            self._accounts[handle] = self._accounts[did] = (did, handle, app_password)
        return did

    def create_session(self, request: SimRequest) -> SimResponse:
        body = _json(request)
        if body is None:
            return error(400, "InvalidRequest", "Input must be a JSON object")
        for field in ("identifier", "password"):
            if not isinstance(body.get(field), str):
                return error(400, "InvalidRequest", f'Input must have the property "{field}"')
        with self._lock:
            account = self._accounts.get(body["identifier"])
            if account is None or account[2] != body["password"]:
                return error(401, "AuthenticationRequired", "Invalid identifier or password")
            did, handle, _ = account
            now = time.time()
            access = _jwt(did, now + self.access_ttl)
            self._tokens[access] = (did, now + self.access_ttl)
            self.sessions_created += 1
        session = {
            "did": did,
            "handle": handle,
            "accessJwt": access,
            "refreshJwt": _jwt(did, now + 90 * 86400),
            "active": True,
        }
        return SimResponse.json(session)

    def create_record(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request)
        if token is None:
            return error(401, "AuthenticationRequired", "Authentication Required")
        with self._lock:
            session = self._tokens.get(token)
        if session is None:
            return error(401, "InvalidToken", "Token could not be verified")
        did, expires = session
        if time.time() >= expires:
            return error(400, "ExpiredToken", "Token has expired")
        body = _json(request)
        if body is None:
            return error(400, "InvalidRequest", "Input must be a JSON object")
        if body.get("repo") != did:
            return error(400, "InvalidRequest", "Input/repo must be the session's DID")
        if body.get("collection") != _POST:
            return error(400, "InvalidRequest", f"Input/collection: only {_POST} is simulated")
        problem = _record_problem(body.get("record"))
        if problem is not None:
            return error(400, "InvalidRequest", f"Invalid {_POST} record: {problem}")
        uri = f"at://{did}/{_POST}/{_tid()}"
        cid = "bafyrei" + "".join(secrets.choice(_TID_ALPHABET) for _ in range(52))
        with self._lock:
            self.posts[uri] = body["record"]
        commit = {"cid": cid, "rev": _tid()}
        return SimResponse.json(
            {"uri": uri, "cid": cid, "commit": commit, "validationStatus": "valid"}
        )


def mount(sim: Simulator, prefix: str) -> BlueskyState:
    state = BlueskyState()
    sim.route("POST", f"{prefix}/xrpc/com.atproto.server.createSession", state.create_session)
    sim.route("POST", f"{prefix}/xrpc/com.atproto.repo.createRecord", state.create_record)
    return state


def _json(request: SimRequest) -> dict[str, Any] | None:
    try:
        body = request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _record_problem(record: Any) -> str | None:
    """Why `record` is not a valid post, in the PDS's validation wording."""
    if not isinstance(record, dict):
        return "Record must be an object"
    if record.get("$type") != _POST:
        return f'Record/$type must be "{_POST}"'
    text = record.get("text")
    if not isinstance(text, str):
        return 'Record must have the property "text"'
    if not isinstance(record.get("createdAt"), str):
        return 'Record must have the property "createdAt"'
    if len(text) > MAX_GRAPHEMES:  # characters stand in for graphemes
        return f"Record/text must not be longer than {MAX_GRAPHEMES} graphemes"
    size = len(text.encode())
    for facet in record.get("facets", []):
        index = facet.get("index", {}) if isinstance(facet, dict) else {}
        start, end = index.get("byteStart"), index.get("byteEnd")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= size):
            return "Record/facets/index must lie within the text's bytes"
    return None


def _jwt(did: str, expires: float) -> str:
    """An unsigned-looking token the shape of the PDS's: only its claims matter here."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "scope": "com.atproto.appPass",
        "sub": did,
        "iat": int(time.time()),
        "exp": int(expires),
    }
    return f"{part({'typ': 'at+jwt', 'alg': 'ES256K'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


def _tid() -> str:
    """A record key in TID form: 13 base32-sortable characters from a microsecond clock."""
    value = (time.time_ns() // 1000) << 10 | secrets.randbelow(1024)
    return "".join(_TID_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(13)))
