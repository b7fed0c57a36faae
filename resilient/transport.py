"""httpx transports that send every request of a client through one provider's pipeline.

Any SDK that speaks httpx gets timeouts, rate limits, the breaker and our retry loop by being
handed a client built on these (the SDK's own retries switched off). When the pipeline gives
up, the SDK sees what it would have seen without us: the provider's last response, the last
transport error, or — when no attempt was allowed — a `ProviderUnavailable`, which is an
`httpx.ConnectError`, so SDKs report their usual connection error.
"""

from __future__ import annotations

import httpx

from resilient.chain import ChainOutcome, chain_plan
from resilient.executors import run_async, run_sync
from resilient.pipeline import Operation, Plan
from resilient.runtime import ProviderRuntime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ProviderUnavailable(httpx.ConnectError):
    """No attempt was made: the breaker is open, the provider disabled, or its limits full."""


class _TransportOperation:
    ledger = False  # one request of an SDK's own: its SDK keys it, if anyone does
    __slots__ = ("_idempotent", "_inner", "credential", "failover_when_ambiguous", "request")

    def __init__(
        self, request: httpx.Request, inner: httpx.BaseTransport | httpx.AsyncBaseTransport
    ) -> None:
        self.request = request
        self._inner = inner
        self._idempotent = request.method in SAFE_METHODS or "idempotency-key" in request.headers
        self.failover_when_ambiguous = False  # one provider: nowhere to fail over to
        self.credential = request.headers.get("authorization")

    def idempotent_on(self, provider: ProviderRuntime) -> bool:
        return self._idempotent

    def _bound(self, provider: ProviderRuntime, timeout: float) -> None:
        """Tighten the client's own phase timeouts to what this attempt may take."""
        ours = provider.attempt_phases(timeout)  # shared: only copies go into requests
        theirs = self.request.extensions.get("timeout")
        self.request.extensions["timeout"] = (
            dict(ours)
            if not theirs
            else {
                phase: limit if theirs.get(phase) is None else min(limit, theirs[phase])
                for phase, limit in ours.items()
            }
        )

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        assert isinstance(self._inner, httpx.BaseTransport)
        self._bound(provider, timeout)
        return self._inner.handle_request(self.request)

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        assert isinstance(self._inner, httpx.AsyncBaseTransport)
        self._bound(provider, timeout)
        return await self._inner.handle_async_request(self.request)


def _deliver(
    provider: ProviderRuntime, request: httpx.Request, end: ChainOutcome
) -> httpx.Response:
    if end.response is not None:
        return end.response
    if isinstance(end.error, TimeoutError):  # our attempt timeout: raise what httpx would
        raise httpx.TimeoutException(
            "no response within the attempt timeout", request=request
        ) from end.error
    if end.error is not None:
        raise end.error
    reason = end.attempts[-1].reason if end.attempts else "unavailable"
    raise ProviderUnavailable(f"provider {provider.name!r} not tried: {reason}", request=request)


def provider_plan_for(rt: ProviderRuntime, op: Operation) -> Plan:
    """A transport's plan: one provider, bounded by what its own policies allow."""
    return chain_plan(rt.name, (rt,), op, rt.clock() + rt.natural_deadline(), rt.bus)


class ResilientTransport(httpx.BaseTransport):
    def __init__(self, provider: ProviderRuntime, inner: httpx.BaseTransport | None = None) -> None:
        self.provider = provider
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # a streamed body could not be sent twice
        rt = self.provider
        op = _TransportOperation(request, self._inner)
        return _deliver(rt, request, run_sync(provider_plan_for(rt, op), op))

    def close(self) -> None:
        self._inner.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, provider: ProviderRuntime, inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.provider = provider
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        rt = self.provider
        op = _TransportOperation(request, self._inner)
        return _deliver(rt, request, await run_async(provider_plan_for(rt, op), op))

    async def aclose(self) -> None:
        await self._inner.aclose()
