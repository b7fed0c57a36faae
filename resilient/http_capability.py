"""The built-in "http" capability: plain HTTP calls across a chain of interchangeable endpoints
(regions, mirrors, self-hosted fallbacks), each provider prefixing its own base_url."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from resilient.registry import FacadeKinds, register_facade
from resilient.result import Result
from resilient.runtime import ProviderRuntime
from resilient.transport import SAFE_METHODS

if TYPE_CHECKING:
    from resilient.gateway import Gateway


class HttpOperation:
    """One HTTP request, rebuilt for each provider so each gets its own base URL and key."""

    __slots__ = ("credential", "failover_when_ambiguous", "idempotent", "kwargs", "method", "url")

    def __init__(self, method: str, url: str, kwargs: dict[str, Any]) -> None:
        self.method = method.upper()
        self.url = url
        self.kwargs = kwargs
        headers = httpx.Headers(kwargs.get("headers"))
        self.idempotent = self.method in SAFE_METHODS or "idempotency-key" in headers
        self.failover_when_ambiguous = self.method in SAFE_METHODS
        self.credential: str | None = None

    def _request(
        self, client: httpx.Client | httpx.AsyncClient, rt: ProviderRuntime, timeout: float
    ) -> httpx.Request:
        request = client.build_request(
            self.method, self.url, timeout=rt.attempt_timeout(timeout), **self.kwargs
        )
        key = rt.settings.api_key
        if key and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {key.reveal()}"
        return request

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        client = provider.client
        return client.send(self._request(client, provider, timeout))

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        client = provider.aclient
        return await client.send(self._request(client, provider, timeout))


class HttpFacade:
    """`gw.<capability>` for a chain of "http" providers."""

    def __init__(self, gateway: Gateway, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    async def request(
        self, method: str, url: str, *, deadline: float | None = None, **kwargs: Any
    ) -> Result[httpx.Response]:
        """Like httpx's `request()` (url relative to each provider's base_url), made resilient."""
        op = HttpOperation(method, url, kwargs)
        return await self._gateway.acall(self.capability, op, deadline=deadline)


class SyncHttpFacade:
    """`gw.sync.<capability>`: the same, blocking."""

    def __init__(self, gateway: Gateway, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    def request(
        self, method: str, url: str, *, deadline: float | None = None, **kwargs: Any
    ) -> Result[httpx.Response]:
        op = HttpOperation(method, url, kwargs)
        return self._gateway.call(self.capability, op, deadline=deadline)


register_facade("http", FacadeKinds(HttpFacade, SyncHttpFacade))
