"""What the drop-in SDK clients share: their provider kinds, how a client finds its provider, and
the httpx transports that put every request an SDK makes on that provider's pipeline.

Importing this module registers the kinds "openai", "stripe", "sendgrid" and "twilio". It imports
no SDK, so config accepts those kinds whichever SDKs are installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from resilient import registry
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.http_clients import LeanAsyncClient, LeanClient, too_large
from resilient.per_loop import PerLoop
from resilient.runtime import ProviderRuntime
from resilient.settings import GatewaySettings, ProviderSettings, RetrySettings
from resilient.transport import AsyncResilientTransport, ResilientTransport
from resilient.transport_deadline import deadline_transport


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAIOptions(_Options):
    """Config keys of an "openai" provider, used when the client is not given them."""

    organization: str | None = None
    project: str | None = None
    models: dict[str, str] = {}  # gw.llm: logical model name -> this provider's model name


class TwilioOptions(_Options):
    """Config keys of a "twilio" provider: `api_key` is the auth token of this account."""

    account_sid: str | None = None
    sender: str | None = None  # `From` when an Sms names none: a number or an alphanumeric id


@dataclass(frozen=True, slots=True)
class SdkKind:
    """A provider kind served through an official SDK, and what its private gateway starts with."""

    name: str
    capability: str
    base_url: str  # the SDK's default endpoint
    options: type[BaseModel] | None = None
    classify: tuple[tuple[str, str], ...] = ()  # statuses the SDK retries that our table does not
    retry_ambiguous: bool = False  # the SDK repeats calls that may have run (timeouts, 500s)


KINDS = {
    kind.name: kind
    for kind in (
        # openai-python retries 409 (lock timeouts), timeouts and 500s on every endpoint
        SdkKind(
            "openai",
            "llm",
            "https://api.openai.com/v1",
            OpenAIOptions,
            (("409", "retryable"),),
            retry_ambiguous=True,
        ),
        # stripe-python retries 409 conflicts; its POSTs carry idempotency keys, so an ambiguous
        # outcome is retried as idempotent anyway
        SdkKind("stripe", "payments", "https://api.stripe.com", None, (("409", "retryable"),)),
        SdkKind("sendgrid", "email", "https://api.sendgrid.com"),
        SdkKind("twilio", "sms", "https://api.twilio.com", TwilioOptions),
    )
}


def register_sdk_kind(name: str, **adapter: Any) -> None:
    """Register SDK kind `name` with its options and rules, plus an adapter when given one
    (`factory=` and more `classify=` rules), so the drop-in client and the facade share it."""
    kind = KINDS[name]
    registry.register(
        registry.ProviderKind(
            kind.name,
            kind.capability,
            kind.options,
            adapter.get("factory"),
            (*kind.classify, *adapter.get("classify", ())),
        )
    )


def provider_runtime(
    gateway: Gateway | None, provider: str, kind: str, base_url: str | None = None
) -> ProviderRuntime:
    """`provider` of `gateway`; without a gateway, a private one holding only that provider, with
    default policies, the SDK's base URL (or `base_url`) and the SDK's own retry rules."""
    if gateway is None:
        sdk = KINDS[kind]
        settings = ProviderSettings(
            name=provider,
            kind=kind,
            base_url=base_url or sdk.base_url,
            retry=RetrySettings(retry_ambiguous=sdk.retry_ambiguous),
            classify=sdk.classify,
        )
        gateway = Gateway(GatewaySettings(providers={provider: settings}))
    runtime = gateway.provider(provider)
    if runtime.settings.kind not in (kind, "http"):
        raise ResilientError(
            f"provider {provider!r} is of kind {runtime.settings.kind!r}; "
            f"a {kind} client needs a provider of kind {kind!r} (or 'http')"
        )
    return runtime


def configured(runtime: ProviderRuntime, key: str) -> str | None:
    """A provider's configured `api_key`, `base_url` or kind option: the SDK's default argument."""
    settings = runtime.settings
    if key == "api_key":
        return settings.api_key.reveal() if settings.api_key else None
    if key == "base_url":
        return settings.base_url
    value = settings.options.get(key)
    return None if value is None else str(value)


class GuardedBody:
    """A response body that reports breaking or stalling mid-way to its provider's breaker.

    The transport returns at headers, so the pipeline judged the attempt healthy before the body
    was read: a stream cut or stalled later would otherwise never count against the provider.
    Mixed into a stream class of the client's httpx flavour (httpx or httpx2).
    """

    def __init__(self, stream: Any, provider: ProviderRuntime) -> None:
        self._stream = stream  # the inner transport's body, of the same flavour
        self._provider = provider

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            self._broken(exc)
            raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            self._broken(exc)
            raise

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _broken(self, exc: Exception) -> None:
        rt = self._provider
        verdict = rt.classifier.error(exc)
        if verdict is None or verdict.health is not False:
            return
        permit = rt.breaker.admit()
        if permit is not None:  # already open: nothing more to say
            rt.breaker.record(permit, False, rt.clock())


class GuardedStream(GuardedBody, httpx.SyncByteStream, httpx.AsyncByteStream):
    """GuardedBody for httpx responses."""


class SdkTransport(ResilientTransport):
    """ResilientTransport for SDK clients: response bodies report breaks and stalls."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.stream = GuardedStream(response.stream, self.provider)
        return response


class AsyncSdkTransport(AsyncResilientTransport):
    """AsyncResilientTransport for SDK clients: response bodies report breaks and stalls."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        response.stream = GuardedStream(response.stream, self.provider)
        return response


class ReadWhole(httpx.BaseTransport):
    """Reads each body inside the attempt, for bridges that buffer every answer anyway: a body
    cut mid-way is then an attempt failure that the pipeline classifies and retries when safe.
    At most `cap` bytes as sent (the client bounds them again decoded)."""

    def __init__(self, inner: httpx.BaseTransport, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > self._cap:
                    raise too_large(response, self._cap)
                chunks.append(chunk)
        finally:
            response.close()
        return _buffered(response, b"".join(chunks))

    def close(self) -> None:
        self._inner.close()


class AsyncReadWhole(httpx.AsyncBaseTransport):
    """ReadWhole for async clients."""

    def __init__(self, inner: httpx.AsyncBaseTransport, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self._cap:
                    raise too_large(response, self._cap)
                chunks.append(chunk)
        finally:
            await response.aclose()
        return _buffered(response, b"".join(chunks))

    async def aclose(self) -> None:
        await self._inner.aclose()


def _buffered(response: httpx.Response, body: bytes) -> httpx.Response:
    """`response` again, its raw (still encoded) body held in memory, its connection released."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(body),
        extensions=response.extensions,
    )


def wrap_transports(client: Any, wrap: Callable[[Any], Any]) -> None:
    """Put `wrap` around every transport an httpx or httpx2 client may use: its default one and
    each mounted one (proxies, the environment's included), so its pool, TLS and proxy settings
    stay what they were."""
    client._transport = wrap(client._transport)
    client._mounts = {
        pattern: None if transport is None else wrap(transport)
        for pattern, transport in client._mounts.items()
    }


def bridge_client(runtime: ProviderRuntime, **options: Any) -> httpx.Client:
    """The httpx client a bridged SDK (stripe, sendgrid, twilio) sends through: httpx.Client
    `options` (the SDK's timeout, TLS, proxy), on the pipeline, each body read in its attempt
    (and, without a proxy, each socket operation within the attempt's deadline)."""
    cap = runtime.settings.max_response_bytes
    transport = deadline_transport(options.get("verify", True), options.get("proxy"))
    if transport is not None:
        options = {**options, "transport": transport}
    client = LeanClient(max_response_bytes=cap, **options)
    wrap_transports(client, lambda transport: SdkTransport(runtime, ReadWhole(transport, cap)))
    return client


class AsyncBridgeClients:
    """bridge_client for async SDK calls: one httpx.AsyncClient per event loop, since a client's
    pooled connections belong to the loop that opened them (an SDK client may outlive a loop)."""

    def __init__(self, runtime: ProviderRuntime, **options: Any) -> None:
        self._runtime = runtime
        self._options = options
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(self._new)

    def current(self) -> httpx.AsyncClient:
        """The running loop's client, created on first use there."""
        return self._clients.get(asyncio.get_running_loop())

    def _new(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient:
        options = self._options
        transport = None if options.get("proxy") else self._runtime.aiohttp_transport()
        if transport is not None:
            options = {**options, "transport": transport}
        cap = self._runtime.settings.max_response_bytes
        client = LeanAsyncClient(max_response_bytes=cap, **options)
        wrap_transports(
            client,
            lambda transport: AsyncSdkTransport(self._runtime, AsyncReadWhole(transport, cap)),
        )
        return client

    async def aclose(self) -> None:
        """Close the running loop's client; other loops' go with their loop."""
        client = self._clients.pop(asyncio.get_running_loop())
        if client is not None:
            await client.aclose()
