"""Drop-in Twilio client: the official one, with every request on one provider's pipeline.

    from providers.twilio import Client       # instead of: from twilio.rest import Client
    client = Client(gateway=gw)                # account SID and auth token from gw's config

The SDK sends through an `http_client`; ours (sync or async) sends over httpx through the
pipeline. `Client(..., http_client=AsyncTwilioHttpClient())` keeps working: Twilio's own HTTP
clients are replaced by ours with the same timeout, logger and proxy. HTTP errors still surface as
TwilioRestException; a request that got no answer raises what Twilio's own clients raise
(requests' ConnectionError or ReadTimeout; aiohttp's ClientConnectionError or ServerTimeoutError).

Twilio's SDK has no base URL: a provider whose `base_url` differs from https://api.twilio.com (a
simulator, a proxy, a region) gets every request's scheme and host rewritten to it.

Message creation has no idempotency key: after an outcome we cannot know (a timeout once the
request was sent, a 500, a reset) it is not retried unless the provider's retry settings opt in
(`retry_ambiguous`); 429, 503 and connection failures before sending are retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx
import requests
from twilio.http import AsyncHttpClient, HttpClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.request import Request as TwilioRequest
from twilio.http.response import Response
from twilio.rest import Client as TwilioClient

from providers._sdk import KINDS, AsyncBridgeClients, bridge_client, configured, provider_runtime
from providers.adapter import basic_auth
from resilient.gateway import Gateway
from resilient.runtime import ProviderRuntime

__all__ = ["AsyncResilientHttpClient", "Client", "ResilientHttpClient"]

_logger = logging.getLogger("twilio.http_client")
_async_logger = logging.getLogger("twilio.async_http_client")
_JSON_TYPES = ("application/json", "application/scim+json")


class _Request:
    """One Twilio request as the official clients would put it on the wire."""

    def __init__(
        self,
        runtime: ProviderRuntime,
        method: str,
        url: str,
        params: Mapping[str, object] | None,
        data: Mapping[str, object] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        timeout: float | None,
        allow_redirects: bool,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(timeout)
        self.log = {"method": method.upper(), "url": url, "params": params, "headers": headers}
        target = _rebased(url, runtime.settings.base_url)
        if params:  # encoded as requests does: httpx's own encoding differs (spaces, for one)
            target += ("&" if urlsplit(target).query else "?") + urlencode(params, doseq=True)
        # Auth as its header and redirects only when asked: the request is then complete, and
        # the lean client sends it without httpx's auth and redirect flows.
        sent = {**(headers or {}), "Authorization": basic_auth(*auth)} if auth else headers
        self.kwargs: dict[str, Any] = {"method": method.upper(), "url": target, "headers": sent}
        if allow_redirects:
            self.kwargs["follow_redirects"] = True
        if timeout is not None:
            self.kwargs["timeout"] = timeout
        as_json = bool(headers and headers.get("Content-Type") in _JSON_TYPES)
        if as_json and data is not None:
            self.kwargs["content"] = json.dumps(data, allow_nan=False).encode()
        elif not as_json and data:
            self.kwargs["content"] = urlencode(data, doseq=True).encode()
            if not (headers and "Content-Type" in headers):
                self.kwargs["headers"] = {
                    **(sent or {}),
                    "Content-Type": "application/x-www-form-urlencoded",
                }
        self.recorded = TwilioRequest(
            method=method.upper(), url=url, auth=auth, params=params, data=data, headers=headers
        )


def _rebased(url: str, base_url: str | None) -> str:
    """`url` on the provider's base URL, when that is not Twilio's own."""
    if not base_url or base_url.rstrip("/") == KINDS["twilio"].base_url:
        return url
    parts = urlsplit(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return base_url.rstrip("/") + rest


class _Bridge:
    """What our sync and async clients share: the request as Twilio's clients would send it,
    their logging, their test-only records, and their Response."""

    resilient_provider: ProviderRuntime
    timeout: float | None
    logger: logging.Logger
    _test_only_last_request: TwilioRequest | None
    _test_only_last_response: Response | None

    def _start(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None,
        data: Mapping[str, object] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        timeout: float | None,
        allow_redirects: bool,
    ) -> dict[str, Any]:
        call = _Request(
            self.resilient_provider,
            method,
            url,
            params,
            data,
            headers,
            auth,
            self.timeout if timeout is None else timeout,
            allow_redirects,
        )
        self.log_request(call.log)  # type: ignore[attr-defined]  # HttpClient's
        self._test_only_last_response = None
        self._test_only_last_request = call.recorded
        return call.kwargs

    def _finish(self, answer: httpx.Response) -> Response:
        self.log_response(answer.status_code, answer)  # type: ignore[attr-defined]
        self._test_only_last_response = Response(answer.status_code, answer.text, answer.headers)
        return self._test_only_last_response


class ResilientHttpClient(_Bridge, HttpClient):  # type: ignore[misc]
    """A twilio HttpClient sending over httpx through `runtime`'s pipeline."""

    def __init__(
        self,
        runtime: ProviderRuntime,
        *,
        timeout: float | None = None,
        logger: logging.Logger = _logger,
        proxy: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(logger, False, timeout)
        self.resilient_provider = runtime
        self.proxy = dict(proxy or {})
        https_proxy = self.proxy.get("https")  # Twilio's API is HTTPS only
        self._client = bridge_client(runtime, timeout=None, proxy=https_proxy)

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        kwargs = self._start(method, url, params, data, headers, auth, timeout, allow_redirects)
        try:
            answer = self._client.request(**kwargs)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise requests.exceptions.ConnectTimeout(str(exc)) from exc
            raise requests.exceptions.ReadTimeout(str(exc)) from exc
        except httpx.TransportError as exc:
            raise requests.exceptions.ConnectionError(str(exc)) from exc
        return self._finish(answer)

    def close(self) -> None:
        self._client.close()


class AsyncResilientHttpClient(_Bridge, AsyncHttpClient):  # type: ignore[misc]
    """A twilio AsyncHttpClient sending over httpx through `runtime`'s pipeline."""

    def __init__(
        self,
        runtime: ProviderRuntime,
        *,
        timeout: float | None = None,
        logger: logging.Logger = _async_logger,
        proxy_url: str | None = None,
    ) -> None:
        super().__init__(logger, True, timeout)
        self.resilient_provider = runtime
        self.proxy_url = proxy_url
        self._clients = AsyncBridgeClients(runtime, timeout=None, proxy=proxy_url)

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        kwargs = self._start(method, url, params, data, headers, auth, timeout, allow_redirects)
        try:
            answer = await self._clients.current().request(**kwargs)
        except httpx.TimeoutException as exc:
            raise aiohttp.ServerTimeoutError(str(exc)) from exc
        except httpx.TransportError as exc:
            raise aiohttp.ClientConnectionError(str(exc)) from exc
        return self._finish(answer)

    async def close(self) -> None:
        await self._clients.aclose()

    async def __aenter__(self) -> AsyncResilientHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _ours(
    http_client: HttpClient | None, runtime: ProviderRuntime
) -> ResilientHttpClient | AsyncResilientHttpClient:
    """Our HTTP client in place of Twilio's own, with its timeout, logger and proxy."""
    if http_client is None:
        return ResilientHttpClient(runtime)
    if isinstance(http_client, TwilioHttpClient):
        return ResilientHttpClient(
            runtime, timeout=http_client.timeout, logger=http_client.logger, proxy=http_client.proxy
        )
    if isinstance(http_client, AsyncTwilioHttpClient):
        session = http_client.session
        if isinstance(session, aiohttp.ClientSession):
            session.detach()  # never used: close it without awaiting
        return AsyncResilientHttpClient(
            runtime,
            timeout=http_client.timeout,
            logger=http_client.logger,
            proxy_url=http_client.proxy_url,
        )
    raise TypeError(
        "http_client must be Twilio's TwilioHttpClient or AsyncTwilioHttpClient, or one of "
        f"providers.twilio's; {type(http_client).__name__} would bypass the pipeline"
    )


class Client(TwilioClient):  # type: ignore[misc]
    """twilio.rest.Client whose every request passes `provider`'s pipeline, sync or async.

    Takes twilio.rest.Client's arguments, plus `gateway` and `provider` (the provider's name in
    the gateway's config). Credentials not given come from that config (`account_sid`, and
    `api_key` as the auth token) before the environment; without a gateway, a private one
    serves a single provider with default policies.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        account_sid: str | None = None,
        region: str | None = None,
        http_client: HttpClient | None = None,
        environment: MutableMapping[str, str] | None = None,
        edge: str | None = None,
        user_agent_extensions: list[str] | None = None,
        credential_provider: Any = None,
        *,
        gateway: Gateway | None = None,
        provider: str = "twilio",
    ) -> None:
        if isinstance(http_client, (ResilientHttpClient, AsyncResilientHttpClient)):
            runtime = http_client.resilient_provider
        else:
            runtime = provider_runtime(gateway, provider, "twilio")
            http_client = _ours(http_client, runtime)
        if gateway is not None and credential_provider is None:
            username = username or configured(runtime, "account_sid")
            password = password or configured(runtime, "api_key")
        self.resilient_provider = runtime
        super().__init__(
            username,
            password,
            account_sid,
            region,
            http_client,
            environment,
            edge,
            user_agent_extensions,
            credential_provider,
        )
