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

Either way a whole answer is read under the provider's `max_response_bytes`, counted after
decompression, so neither a huge body nor a compression bomb can take the process's memory:
past it the attempt fails with ResponseTooLarge and the connection is closed unread. An answer
that announces its length, uncompressed and within the cap, is read as httpx reads it (h11 never
reads past a Content-Length); any other is read chunk by chunk and handed on decoded, without
its Content-Encoding.
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


class ResponseTooLarge(httpx.ReadError):
    """An answer larger than the provider's `max_response_bytes` (decompressed). It came after
    the request was sent, so the attempt is classified as maybe done, like any read error."""


def _announced_within(response: httpx.Response, cap: int) -> bool | None:
    """True: read it as it is (identity encoding, a Content-Length within the cap). False: it
    says it is larger than the cap. None: only reading it tells."""
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if int(length) > cap:
        return False
    return True if "content-encoding" not in response.headers else None


def too_large(response: httpx.Response, cap: int) -> ResponseTooLarge:
    """The error for `response` past `cap` bytes."""
    return ResponseTooLarge(
        f"answer larger than max_response_bytes ({cap} bytes)", request=response.request
    )


def _decoded(response: httpx.Response, body: bytes) -> httpx.Response:
    """The answer with its body read and decoded: a new response, as httpx keeps its read body
    only through its own `read`, which has no bound."""
    headers = [
        (name, value)
        for name, value in response.headers.raw
        if name.lower() not in (b"content-encoding", b"content-length")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )


def read_capped(response: httpx.Response, cap: int) -> httpx.Response:
    """`response` read whole, within `cap` bytes decompressed; closed either way."""
    fits = _announced_within(response, cap)
    if fits:
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        return response
    chunks: list[bytes] = []
    try:
        if fits is False:
            raise too_large(response, cap)
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise too_large(response, cap)
            chunks.append(chunk)
    finally:
        response.close()
    return _decoded(response, b"".join(chunks))


async def aread_capped(response: httpx.Response, cap: int) -> httpx.Response:
    """`read_capped` for an async response."""
    fits = _announced_within(response, cap)
    if fits:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response
    chunks: list[bytes] = []
    try:
        if fits is False:
            raise too_large(response, cap)
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise too_large(response, cap)
            chunks.append(chunk)
    finally:
        await response.aclose()
    return _decoded(response, b"".join(chunks))


class LeanClient(httpx.Client):
    def __init__(self, *, max_response_bytes: int, **options: Any) -> None:
        super().__init__(**options)
        self.max_response_bytes = max_response_bytes

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not _lean(self, auth, follow_redirects):
            response = super().send(
                request, stream=True, auth=auth, follow_redirects=follow_redirects
            )
        else:
            _opened(self)
            self._set_timeout(request)
            response = self._transport_for_url(request.url).handle_request(request)
            response.request = request
        return response if stream else read_capped(response, self.max_response_bytes)


class LeanAsyncClient(httpx.AsyncClient):
    def __init__(self, *, max_response_bytes: int, **options: Any) -> None:
        super().__init__(**options)
        self.max_response_bytes = max_response_bytes

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not _lean(self, auth, follow_redirects):
            response = await super().send(
                request, stream=True, auth=auth, follow_redirects=follow_redirects
            )
        else:
            _opened(self)
            self._set_timeout(request)
            response = await self._transport_for_url(request.url).handle_async_request(request)
            response.request = request
        return response if stream else await aread_capped(response, self.max_response_bytes)
