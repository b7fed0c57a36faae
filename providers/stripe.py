"""Drop-in Stripe client: the official one, with every request on one provider's pipeline.

    from providers.stripe import StripeClient      # instead of: from stripe import StripeClient
    client = StripeClient("sk_live_...", gateway=gw)

Requests go through a `stripe.HTTPClient` subclass that sends over httpx, sync and async. Stripe's
own retry loop never runs; ours honours the same rules (Stripe-Should-Retry, 409 conflicts, 429,
5xx) and, since every POST carries one Idempotency-Key for all its attempts, retries even a POST
whose outcome is unknown: Stripe replays the first result instead of charging twice. Errors reach
the caller as the SDK's own (stripe.CardError, stripe.RateLimitError, ...); a provider with no
attempt left raises stripe.APIConnectionError.

For the module-level API: `stripe.default_http_client = ResilientHTTPClient(gw.provider("stripe"))`
and `stripe.max_network_retries = 0`.
"""

from __future__ import annotations

import ssl
import textwrap
import uuid
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import stripe

from providers._sdk import AsyncBridgeClients, bridge_client, configured, provider_runtime
from resilient.gateway import Gateway
from resilient.runtime import ProviderRuntime

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses

__all__ = ["ResilientHTTPClient", "StripeClient"]

_TIMEOUT = 80.0  # stripe-python's own request timeout


class ResilientHTTPClient(stripe.HTTPClient):
    """A stripe.HTTPClient sending over httpx through `runtime`'s pipeline, sync and async.

    Each answer is read whole within its attempt (`request_stream` too), so an answer cut midway
    is an outcome the pipeline retries under the same Idempotency-Key.
    """

    name = "resilient-httpx"

    def __init__(
        self,
        runtime: ProviderRuntime,
        *,
        timeout: float = _TIMEOUT,
        verify_ssl_certs: bool = True,
        proxy: str | None = None,
    ) -> None:
        super().__init__(verify_ssl_certs=verify_ssl_certs, proxy=proxy)
        self.resilient_provider = runtime
        verify: ssl.SSLContext | bool = False
        if verify_ssl_certs:
            verify = ssl.create_default_context(cafile=stripe.ca_bundle_path)
        https_proxy = self._proxy["https"] if self._proxy else None  # Stripe's API is HTTPS only
        options = {"timeout": timeout, "verify": verify, "proxy": https_proxy}
        self._client = bridge_client(runtime, **options)
        self._aclients = AsyncBridgeClients(runtime, **options)

    def _should_retry(self, *args: Any, **kwargs: Any) -> bool:
        return False  # one retry loop, ours: even a per-request max_network_retries adds none

    def request(  # type: ignore[override]  # bytes, as stripe's own clients return
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        response = self._send(method, url, headers, post_data)
        return response.content, response.status_code, response.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Iterable[bytes], int, Mapping[str, str]]:
        response = self._send(method, url, headers, post_data)
        return response.iter_bytes(), response.status_code, response.headers

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        response = await self._asend(method, url, headers, post_data)
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterable[bytes], int, Mapping[str, str]]:
        response = await self._asend(method, url, headers, post_data)
        return response.aiter_bytes(), response.status_code, response.headers

    def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, url, headers=_with_key(method, headers), content=post_data
            )
        except httpx.TransportError as exc:
            _connection_error(exc)

    async def _asend(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> httpx.Response:
        try:
            return await self._aclients.current().request(
                method, url, headers=_with_key(method, headers), content=post_data
            )
        except httpx.TransportError as exc:
            _connection_error(exc)

    def close(self) -> None:
        self._client.close()

    async def close_async(self) -> None:
        await self._aclients.aclose()


def _with_key(method: str, headers: Mapping[str, str] | None) -> httpx.Headers:
    """The SDK's headers; a POST without an Idempotency-Key gets one, kept by every attempt."""
    merged = httpx.Headers(headers)
    if method.lower() == "post" and "idempotency-key" not in merged:
        merged["Idempotency-Key"] = str(uuid.uuid4())
    return merged


def _connection_error(exc: httpx.TransportError) -> NoReturn:
    """What stripe-python's own httpx client raises when no answer came."""
    message = textwrap.fill(
        "Unexpected error communicating with Stripe. If this problem persists, let us know at "
        "support@stripe.com."
    )
    raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
        f"{message}\n\n(Network error: A {type(exc).__name__} was raised: {exc})",
        should_retry=False,  # our pipeline already retried what could be
    ) from exc


class StripeClient(stripe.StripeClient):
    """stripe.StripeClient whose every request passes `provider`'s pipeline.

    Takes stripe.StripeClient's arguments, plus `gateway` and `provider` (the provider's name in
    the gateway's config). `api_key` and the API base address default to that provider's config;
    without a gateway, a private one serves a single provider with default policies.
    """

    resilient_provider: ProviderRuntime

    def __init__(
        self,
        api_key: str | None = None,
        *,
        gateway: Gateway | None = None,
        provider: str = "stripe",
        http_client: stripe.HTTPClient | None = None,
        proxy: str | None = None,
        verify_ssl_certs: bool = True,
        base_addresses: BaseAddresses | None = None,
        **kwargs: Any,
    ) -> None:
        addresses: BaseAddresses = {**(base_addresses or {})}
        if isinstance(http_client, ResilientHTTPClient):
            runtime = http_client.resilient_provider
        elif http_client is None:
            runtime = provider_runtime(gateway, provider, "stripe", addresses.get("api"))
            http_client = ResilientHTTPClient(
                runtime, proxy=proxy, verify_ssl_certs=verify_ssl_certs
            )
        else:
            raise TypeError(
                "http_client must be a providers.stripe.ResilientHTTPClient: another client "
                "would bypass the pipeline"
            )
        if gateway is not None:
            api_key = api_key or configured(runtime, "api_key")
            base_url = configured(runtime, "base_url")
            if base_url and "api" not in addresses:
                addresses["api"] = base_url
        self.resilient_provider = runtime
        super().__init__(
            api_key,  # type: ignore[arg-type]  # None: the SDK raises its AuthenticationError
            http_client=http_client,
            base_addresses=addresses,
            max_network_retries=0,
            **kwargs,
        )
