"""Drop-in OpenAI clients: the official ones, with every request on one provider's pipeline.

    from providers.openai import OpenAI, AsyncOpenAI      # instead of: from openai import ...
    client = OpenAI(gateway=gw)                            # provider "openai" of gw's config
    client = OpenAI(api_key="sk-...")                      # a private gateway, default policies

The SDK reaches the network only through its `http_client`; we put the pipeline in front of that
client's transports (openai 3.x runs on httpx2, 2.x on httpx; a client of either kind may be
passed). Streams are returned at headers, so their bodies report breaks and stalls to the breaker.
The SDK's own retries are off: ours honour the same hints (retry-after-ms, Retry-After,
x-should-retry), and a provider with no attempt left raises openai.APIConnectionError.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import httpx
import openai

from providers._sdk import (
    AsyncSdkTransport,
    GuardedBody,
    SdkTransport,
    configured,
    provider_runtime,
    wrap_transports,
)
from resilient.gateway import Gateway
from resilient.runtime import ProviderRuntime

__all__ = ["AsyncOpenAI", "OpenAI"]

_DEFAULTS_FROM_CONFIG = ("api_key", "base_url", "organization", "project")

# (client class, the transport put in front of its transports), one pair per httpx flavour
_WRAPPERS: list[tuple[type[Any], type[Any]]] = [
    (httpx.Client, SdkTransport),
    (httpx.AsyncClient, AsyncSdkTransport),
]

if importlib.util.find_spec("httpx2") is not None:  # openai 3.x; 2.x runs on httpx alone
    import httpx2

    from resilient import transport_httpx2

    class _GuardedStream2(GuardedBody, httpx2.SyncByteStream, httpx2.AsyncByteStream):
        """GuardedBody for httpx2 responses."""

    class _SdkTransport2(transport_httpx2.ResilientTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            response = super().handle_request(request)
            response.stream = _GuardedStream2(response.stream, self.provider)
            return response

    class _AsyncSdkTransport2(transport_httpx2.AsyncResilientTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            response = await super().handle_async_request(request)
            response.stream = _GuardedStream2(response.stream, self.provider)
            return response

    _WRAPPERS += [(httpx2.Client, _SdkTransport2), (httpx2.AsyncClient, _AsyncSdkTransport2)]

_OURS = tuple(wrapper for _, wrapper in _WRAPPERS)


def _installed(client: Any) -> ProviderRuntime | None:
    """The provider whose pipeline `client` already sends through (a copied SDK client's)."""
    transport = getattr(client, "_transport", None)
    return transport.provider if isinstance(transport, _OURS) else None


def _install(client: Any, runtime: ProviderRuntime) -> None:
    """Put the pipeline in front of every transport `client` may use."""
    wrapper = next((w for cls, w in _WRAPPERS if isinstance(client, cls)), None)
    if wrapper is None:
        raise TypeError(f"http_client must be an httpx or httpx2 client, not {type(client)!r}")
    wrap_transports(client, lambda transport: wrapper(runtime, transport))


def _prepare(
    kwargs: dict[str, Any], client: Any, gateway: Gateway | None, provider: object
) -> ProviderRuntime:
    """Adjust the SDK's arguments in place: our client, its retries off, config's defaults."""
    if not isinstance(provider, str):  # openai's own provider object: the SDK's to use
        kwargs["provider"] = provider
        provider = "openai"
    runtime = _installed(client)
    if runtime is None:
        base_url = kwargs.get("base_url")
        runtime = provider_runtime(gateway, provider, "openai", str(base_url) if base_url else None)
        _install(client, runtime)
        if gateway is not None:
            for key in _DEFAULTS_FROM_CONFIG:
                if key == "base_url" and "provider" in kwargs:
                    continue  # the SDK's provider object chooses the endpoint
                value = configured(runtime, key)
                if kwargs.get(key) is None and value is not None:
                    kwargs[key] = value
    kwargs["http_client"] = client
    kwargs["max_retries"] = 0  # one retry loop: ours
    return runtime


class OpenAI(openai.OpenAI):
    """openai.OpenAI whose every request, streaming included, passes `provider`'s pipeline.

    Takes openai.OpenAI's arguments, plus `gateway` and `provider` (the provider's name in the
    gateway's config; a non-string `provider` is openai's own and goes to the SDK). Arguments not
    given (api_key, base_url, organization, project) come from that provider's config.
    """

    resilient_provider: ProviderRuntime

    def __init__(
        self, *, gateway: Gateway | None = None, provider: object = "openai", **kwargs: Any
    ) -> None:
        client = kwargs.get("http_client") or openai.DefaultHttpxClient()
        self.resilient_provider = _prepare(kwargs, client, gateway, provider)
        super().__init__(**kwargs)


class AsyncOpenAI(openai.AsyncOpenAI):
    """openai.AsyncOpenAI on `provider`'s pipeline; see OpenAI."""

    resilient_provider: ProviderRuntime

    def __init__(
        self, *, gateway: Gateway | None = None, provider: object = "openai", **kwargs: Any
    ) -> None:
        client = kwargs.get("http_client") or openai.DefaultAsyncHttpxClient()
        self.resilient_provider = _prepare(kwargs, client, gateway, provider)
        super().__init__(**kwargs)
