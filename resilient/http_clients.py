"""The pooled httpx clients a provider sends through, minus per-request work the gateway never uses.

Every request the gateway sends is complete when it is sent: an absolute URL, its own headers,
its own per-attempt timeouts, no auth flow and no redirects to follow (a redirect is an answer
the pipeline classifies). httpx's `send` still runs its auth and redirect generators, wraps the
body to time it, copies cookies into the client's jar and formats a log line per request: about
190 µs of CPU per async call here, more than the whole resilience pipeline. These clients send
straight to the transport instead. What changes for callers: no cookie jar carried from one
provider call to the next (API clients should not carry one) and no `httpx` INFO log line per
request (the gateway's own events say more). Anything else (an auth or a redirect policy,
on the call or on the client, or event hooks) takes httpx's full path.
"""

from __future__ import annotations

from typing import Any

import httpx
from httpx._client import USE_CLIENT_DEFAULT, ClientState  # httpx is pinned below 0.29


def _lean(client: httpx.Client | httpx.AsyncClient, auth: Any, follow_redirects: Any) -> bool:
    """Whether nothing but the transport is needed: no auth, redirects or hooks anywhere."""
    hooks = client._event_hooks
    return (
        auth is USE_CLIENT_DEFAULT
        and follow_redirects is USE_CLIENT_DEFAULT
        and client._auth is None
        and not client.follow_redirects
        and not hooks["request"]
        and not hooks["response"]
    )


def _opened(client: httpx.Client | httpx.AsyncClient) -> None:
    if client._state == ClientState.CLOSED:
        raise RuntimeError("Cannot send a request, as the client has been closed.")
    client._state = ClientState.OPENED


class LeanClient(httpx.Client):
    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not _lean(self, auth, follow_redirects):
            return super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        _opened(self)
        self._set_timeout(request)
        response = self._transport_for_url(request.url).handle_request(request)
        response.request = request
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response


class LeanAsyncClient(httpx.AsyncClient):
    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not _lean(self, auth, follow_redirects):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        _opened(self)
        self._set_timeout(request)
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response
