"""Bluesky (AT Protocol): a post record in the account's repository.

Two calls. `POST {pds}/xrpc/com.atproto.server.createSession` with `{"identifier", "password"}`
(the `handle` option and an app password, the provider's api_key) answers the account's `did`
and an `accessJwt` (https://docs.bsky.app/docs/api/com-atproto-server-create-session). Then
`POST {pds}/xrpc/com.atproto.repo.createRecord` with `Authorization: Bearer <accessJwt>` and
`{"repo": did, "collection": "app.bsky.feed.post", "record": {"$type", "text", "createdAt"}}`
answers the record's `uri`, the message id
(https://docs.bsky.app/docs/api/com-atproto-repo-create-record). Errors are
`{"error", "message"}` with 400 or 401.

The session is I/O, and `build` does none: `prepare` yields the createSession request for the
operation to send before `build`, and keeps the session until shortly before its token expires
(the JWT's `exp`), so posts share one session. The link, appended to the text, gets a link facet
so it shows as a link. createRecord takes no idempotency key.

Rules: the defaults. A bad app password is a 401 from createSession: not retried, the post
parks until ops fix it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import Field

from providers.adapter import Preparation, api_key, base_url, json_field
from providers.models import Post
from providers.social._common import Options, read_options, text_with_link
from resilient import registry
from resilient.errors import ResilientError
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

PDS = "https://bsky.social"
COLLECTION = "app.bsky.feed.post"
RENEW_BEFORE = 60.0  # seconds: a token this close to expiry may lapse mid-attempt
UNKNOWN_LIFETIME = 300.0  # a token whose expiry cannot be read is kept this long


class BlueskyOptions(Options):
    """Config keys of a "bluesky" provider: the account to sign in as (handle, DID or email)."""

    handle: str = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Session:
    did: str
    access_jwt: str
    renew_at: float  # wall-clock time after which a new session is created


class BlueskyAdapter:
    honours_idempotency_key = False

    def __init__(self, handle: str, clock: Callable[[], float] = time.time) -> None:
        self._handle = handle
        self._clock = clock
        self._session: Session | None = None  # replaced whole, so readers need no lock

    def prepare(self, provider: ProviderRuntime) -> Preparation:
        """Sign in unless the session in hand is still good."""
        session = self._session
        if session is not None and self._clock() < session.renew_at:
            return None
        response = yield httpx.Request(
            "POST",
            base_url(provider, PDS) + "/xrpc/com.atproto.server.createSession",
            json={"identifier": self._handle, "password": api_key(provider)},
        )
        if not response.is_success:
            return response
        session = self._read_session(response)
        if session is None:  # a 2xx without a usable session: as bad as a 502
            return httpx.Response(
                502,
                json={"error": "InvalidSession", "message": "createSession answered no session"},
                request=response.request,
            )
        self._session = session
        return None

    def build(self, model: Post, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        session = self._session
        if session is None:
            raise ResilientError(
                f"provider {provider.name!r}: no Bluesky session; the operation must run the "
                "adapter's prepare() before build()"
            )
        text = text_with_link(model)
        now = datetime.now(timezone.utc)  # the send time: an older createdAt shows as archived
        record: dict[str, Any] = {
            "$type": COLLECTION,
            "text": text,
            "createdAt": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if model.link is not None:
            record["facets"] = [link_facet(text, model.link)]
        return httpx.Request(
            "POST",
            base_url(provider, PDS) + "/xrpc/com.atproto.repo.createRecord",
            headers={"Authorization": f"Bearer {session.access_jwt}"},
            json={"repo": session.did, "collection": COLLECTION, "record": record},
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "uri")

    def _read_session(self, response: httpx.Response) -> Session | None:
        did, token = json_field(response, "did"), json_field(response, "accessJwt")
        if not did or not token:
            return None
        expires = jwt_expiry(token)
        now = self._clock()
        renew_at = now + UNKNOWN_LIFETIME if expires is None else expires - RENEW_BEFORE
        return Session(did, token, renew_at)


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (the PDS verifies; we only plan)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def link_facet(text: str, link: str) -> dict[str, Any]:
    """A richtext link facet over `link` in `text`: facets index UTF-8 bytes, not characters."""
    start = len(text[: text.index(link)].encode())
    return {
        "index": {"byteStart": start, "byteEnd": start + len(link.encode())},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}],
    }


def _factory(settings: ProviderSettings) -> BlueskyAdapter:
    return BlueskyAdapter(read_options(BlueskyOptions, settings).handle)


registry.register(registry.ProviderKind("bluesky", "social", BlueskyOptions, _factory))
