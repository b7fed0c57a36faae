"""resilient.transport for clients on httpx2 (openai 3.x): the same pipeline, httpx2's classes.

httpx2 is a fork of httpx with classes of its own, so its clients need transports of its kind.
These mirror resilient.transport: the same operation (idempotency, credential, per-attempt
timeouts), the same plan, the same executors; only the request, response and error classes
differ. The pipeline reads an answer by its status and headers and may close it, which an
httpx2 response does as an httpx one: it travels through the pipeline as it is.
"""

from __future__ import annotations

from typing import cast

import httpx
import httpx2

from resilient.chain import ChainOutcome
from resilient.executors import run_async, run_sync
from resilient.runtime import ProviderRuntime
from resilient.transport import _TransportOperation, provider_plan_for


class ProviderUnavailable(httpx2.ConnectError):
    """No attempt was made: the breaker is open, the provider disabled, or its limits full. An
    httpx2.ConnectError, so SDKs report their usual connection error."""


class _Operation(_TransportOperation):
    """The transport operation over an httpx2 request, which reads like an httpx one where the
    operation looks (method, headers, timeout extensions); only sending differs."""

    __slots__ = ()

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        self._bound(provider, timeout)
        inner = cast(httpx2.BaseTransport, self._inner)
        return cast(httpx.Response, inner.handle_request(cast(httpx2.Request, self.request)))

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        self._bound(provider, timeout)
        inner = cast(httpx2.AsyncBaseTransport, self._inner)
        answer = await inner.handle_async_request(cast(httpx2.Request, self.request))
        return cast(httpx.Response, answer)


def _operation(
    request: httpx2.Request, inner: httpx2.BaseTransport | httpx2.AsyncBaseTransport
) -> _Operation:
    return _Operation(cast(httpx.Request, request), cast(httpx.BaseTransport, inner))


def _deliver(
    provider: ProviderRuntime, request: httpx2.Request, end: ChainOutcome
) -> httpx2.Response:
    if end.response is not None:
        return cast(httpx2.Response, end.response)
    if isinstance(end.error, TimeoutError):  # our attempt timeout: raise what httpx2 would
        raise httpx2.TimeoutException(
            "no response within the attempt timeout", request=request
        ) from end.error
    if end.error is not None:
        raise end.error
    reason = end.attempts[-1].reason if end.attempts else "unavailable"
    raise ProviderUnavailable(f"provider {provider.name!r} not tried: {reason}", request=request)


class ResilientTransport(httpx2.BaseTransport):
    def __init__(
        self, provider: ProviderRuntime, inner: httpx2.BaseTransport | None = None
    ) -> None:
        self.provider = provider
        self._inner = inner or httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()  # a streamed body could not be sent twice
        rt = self.provider
        op = _operation(request, self._inner)
        return _deliver(rt, request, run_sync(provider_plan_for(rt, op), op))

    def close(self) -> None:
        self._inner.close()


class AsyncResilientTransport(httpx2.AsyncBaseTransport):
    def __init__(
        self, provider: ProviderRuntime, inner: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        self.provider = provider
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        rt = self.provider
        op = _operation(request, self._inner)
        return _deliver(rt, request, await run_async(provider_plan_for(rt, op), op))

    async def aclose(self) -> None:
        await self._inner.aclose()
