"""The built-in "http" capability: plain HTTP calls across a chain of interchangeable endpoints
(regions, mirrors, self-hosted fallbacks), each provider prefixing its own base_url."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from resilient.deferral import register_operation
from resilient.errors import InvalidRequest
from resilient.registry import FacadeKinds, register_facade
from resilient.result import Result
from resilient.runtime import ProviderRuntime
from resilient.transport import SAFE_METHODS

if TYPE_CHECKING:
    from resilient.caller import Caller


# Never parked: credentials are resolved from config at replay, not stored with the request.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_PARKABLE_ARGUMENTS = frozenset({"json", "content", "params", "headers", "data"})


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """A parsed URL, kept: parsing is half the cost of building a request, and the same few
    endpoints are called again and again (httpx URLs are immutable, safe to share)."""
    return httpx.URL(text)


class HttpOperation:
    """One HTTP request, rebuilt for each provider so each gets its own base URL and key."""

    kind = "http"
    ledger = False  # a raw request: its Idempotency-Key header, if any, is the provider's
    __slots__ = (
        "_idempotent",
        "_operation_id",
        "credential",
        "failover_when_ambiguous",
        "kwargs",
        "method",
        "url",
    )

    def __init__(self, method: str, url: str, kwargs: dict[str, Any]) -> None:
        if "timeout" in kwargs:
            raise InvalidRequest(
                "timeout= is not taken per call: attempt timeouts come from the provider's "
                "config; pass deadline= to bound the whole call"
            )
        self.method = method.upper()
        self.url = url
        self.kwargs = kwargs
        headers = kwargs.get("headers")
        key = httpx.Headers(headers).get("idempotency-key") if headers else None
        self._idempotent = self.method in SAFE_METHODS or key is not None
        self.failover_when_ambiguous = self.method in SAFE_METHODS
        self.credential: str | None = None
        self._operation_id: str | None = key  # made only when asked (deferral), not per call

    @property
    def operation_id(self) -> str:
        if self._operation_id is None:
            self._operation_id = uuid.uuid4().hex
        return self._operation_id

    def idempotent_on(self, provider: ProviderRuntime) -> bool:
        return self._idempotent

    def payload(self) -> dict[str, Any]:
        """What a parked request stores: JSON-safe, credential headers left out."""
        unsupported = set(self.kwargs) - _PARKABLE_ARGUMENTS
        if unsupported:
            raise InvalidRequest(
                f"cannot defer a request with {', '.join(sorted(unsupported))}: "
                f"only {', '.join(sorted(_PARKABLE_ARGUMENTS))} can be parked"
            )
        body: dict[str, Any] = {"method": self.method, "url": self.url, "id": self.operation_id}
        for name in ("json", "params", "data"):
            if name in self.kwargs:
                body[name] = self.kwargs[name]
        content = self.kwargs.get("content")
        if content is not None:
            raw = content.encode() if isinstance(content, str) else content
            if not isinstance(raw, bytes):
                raise InvalidRequest("cannot defer a streamed body: pass bytes or str content")
            body["content_b64"] = base64.b64encode(raw).decode()
        headers = httpx.Headers(self.kwargs.get("headers"))
        body["headers"] = [
            [name, value]
            for name, value in headers.multi_items()
            if name not in _CREDENTIAL_HEADERS
        ]
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"cannot defer a request whose body is not JSON-safe: {exc}"
            ) from exc
        return body

    @classmethod
    def from_payload(cls, body: Mapping[str, Any]) -> HttpOperation:
        kwargs: dict[str, Any] = {"headers": [tuple(h) for h in body.get("headers", ())]}
        for name in ("json", "params", "data"):
            if name in body:
                kwargs[name] = body[name]
        if "content_b64" in body:
            kwargs["content"] = base64.b64decode(body["content_b64"])
        op = cls(str(body["method"]), str(body["url"]), kwargs)
        op._operation_id = str(body["id"])
        return op

    def _request(
        self, client: httpx.Client | httpx.AsyncClient, rt: ProviderRuntime, timeout: float
    ) -> httpx.Request:
        key = rt.settings.api_key
        base = str(client.base_url)  # "http://h" for an empty path, else ending in "/"
        if base and not base.endswith("/"):
            base += "/"
        if not base or "://" in self.url or not set(self.kwargs) <= _PARKABLE_ARGUMENTS:
            request = client.build_request(
                self.method, self.url, timeout=rt.attempt_timeout(timeout), **self.kwargs
            )
            if key and "authorization" not in request.headers:
                request.headers["Authorization"] = f"Bearer {key.reveal()}"
            return request
        # What build_request makes of a relative URL and these arguments, for about half the
        # CPU: the base URL joined as a string, the client's defaults merged as a list.
        given = httpx.Headers(self.kwargs.get("headers")).raw
        taken = {name.lower() for name, _ in given}
        headers = [(k, v) for k, v in client.headers.raw if k.lower() not in taken] + given
        if key and b"authorization" not in taken:
            headers.append((b"Authorization", f"Bearer {key.reveal()}".encode()))
        return httpx.Request(
            self.method,
            _url(base + self.url.lstrip("/")),
            headers=headers,
            extensions={"timeout": rt.attempt_timeout(timeout).as_dict()},
            **{k: v for k, v in self.kwargs.items() if k != "headers"},
        )

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        client = provider.client
        return client.send(self._request(client, provider, timeout))

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        client = provider.aclient
        return await client.send(self._request(client, provider, timeout))


class HttpFacade:
    """`gw.<capability>` for a chain of "http" providers."""

    def __init__(self, gateway: Caller, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
        **kwargs: Any,
    ) -> Result[httpx.Response]:
        """Like httpx's `request()` (url relative to each provider's base_url), made resilient.

        `defer`: park the request when every provider fails (None: as the capability says).
        """
        op = HttpOperation(method, url, kwargs)
        return await self._gateway.acall(self.capability, op, deadline=deadline, defer=defer)


class SyncHttpFacade:
    """`gw.sync.<capability>`: the same, blocking."""

    def __init__(self, gateway: Caller, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
        **kwargs: Any,
    ) -> Result[httpx.Response]:
        op = HttpOperation(method, url, kwargs)
        return self._gateway.call(self.capability, op, deadline=deadline, defer=defer)


register_facade("http", FacadeKinds(HttpFacade, SyncHttpFacade))
register_operation(HttpOperation.kind, HttpOperation.from_payload)
