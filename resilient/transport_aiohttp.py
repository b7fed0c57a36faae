"""An httpx async transport on aiohttp, for throughput: `[gateway] async_client = "aiohttp"`.

httpcore's connection pool spends about a millisecond of CPU per request once tens of requests
are in flight; aiohttp's spends about a fifth of that (benchmark item 7), which is what lets one
replay worker drain thousands of deferred requests a second. The gateway still speaks httpx:
requests and responses are httpx's, and aiohttp's errors are raised as httpx's classes, so the
classifier reads them alike and keeps the one line that matters for side effects: a request
that provably never left (connect failures and timeouts) against one that may have been
received (everything after the connection was made). Unlike httpx's default transport it
reads no proxy settings from the environment; TLS is verified against the same CA bundle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

DEFAULT_LIMITS = httpx.Limits(max_connections=100, keepalive_expiry=5.0)
_CHUNK = 65536
# A body this small, with its length announced, is read with the headers: one read instead of
# httpx's streaming machinery. Streams (SSE) are chunked, so they never qualify.
EAGER_BODY = 65536


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx errors that mean the same (most specific first)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # a pooled connection or a new one: not sent
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # an answer that is not HTTP
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:  # reset mid-exchange and the rest: ambiguous
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx.AsyncByteStream):
    """The answer's body as aiohttp reads it: chunks as they arrive (streams see each event)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()  # back to the pool when read to the end, else closed


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, opened in the event loop of the first request (sessions belong to
    a loop: the gateway makes one transport per loop)."""

    def __init__(self, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 0,
            ssl=httpx.create_ssl_context(),  # the CA bundle httpx verifies with (certifi)
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes Content-Encoding itself, as with httpcore
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies are the httpx client's business
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        headers = request.headers.multi_items()
        if isinstance(request.stream, httpx.ByteStream):
            body: bytes | AsyncIterator[bytes] = request.content
        else:  # aiohttp frames a streamed body itself and refuses one that says it is framed
            body = _stream(request)
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        with _httpx_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
            headers_in = list(response.raw_headers)
            extensions = {"reason_phrase": (response.reason or "").encode()}
            length = response.content_length
            if length is not None and length <= EAGER_BODY:  # not a stream: read it now
                content = await response.read()
                response.release()
                return httpx.Response(
                    response.status,
                    headers=headers_in,
                    stream=httpx.ByteStream(content),  # a stream still, as callers expect
                    extensions=extensions,
                )
        return httpx.Response(
            response.status,
            headers=headers_in,
            stream=_Body(response, request),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await asyncio.sleep(0)  # let the connector's transports finish closing


async def _stream(request: httpx.Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream:  # type: ignore[union-attr]
        yield chunk
