"""Drop-in SendGrid client: the official one, with every request on one provider's pipeline.

    from providers.sendgrid import SendGridAPIClient   # instead of: from sendgrid import ...
    sg = SendGridAPIClient(gateway=gw)                  # api_key and host from gw's config

SendGrid's SDK talks through python_http_client, which opens each request with urllib and builds
a new client object on every attribute hop (`sg.client.mail.send.post(...)`). We keep its request
building and error mapping and replace only the opener: each hop's client is ours, and ours opens
requests with httpx through the pipeline. Callers see python_http_client's exceptions
(BadRequestsError, ServiceUnavailableError, ...) as before; a request that got no answer raises
urllib's URLError (TimeoutError when the answer stalled), as urllib would.

Mail send has no idempotency key: after an outcome we cannot know (a timeout once the request was
sent, a 500, a reset) it is not retried unless the provider's retry settings opt in
(`retry_ambiguous`); 429, 503 and connection failures before sending are retried.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import Any

import httpx
import python_http_client
import sendgrid

from providers._sdk import KINDS, bridge_client, configured, provider_runtime
from resilient.gateway import Gateway
from resilient.runtime import ProviderRuntime

__all__ = ["SendGridAPIClient"]


class _Opener:
    """Stands in for urllib's opener: sends over httpx through the pipeline and answers like
    urllib (a response with getcode/read/info, HTTPError for any non-2xx status)."""

    def __init__(self, runtime: ProviderRuntime) -> None:
        # urllib follows redirects, so this does too; the SDK's timeout comes with each request
        self._client = bridge_client(runtime, timeout=None, follow_redirects=True)

    def open(self, request: urllib.request.Request, timeout: float | None = None) -> _Answer:
        url = request.full_url
        try:
            response = self._client.request(
                request.get_method(),
                url,
                headers=request.header_items(),
                content=request.data,  # type: ignore[arg-type]  # python_http_client sends bytes
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise urllib.error.URLError(exc) from exc
            raise TimeoutError("timed out") from exc
        except httpx.TransportError as exc:
            raise urllib.error.URLError(exc) from exc
        headers = _message(response.headers)
        if not 200 <= response.status_code < 300:
            body = io.BytesIO(response.content)
            raise urllib.error.HTTPError(
                url, response.status_code, response.reason_phrase, headers, body
            )
        return _Answer(response.status_code, response.content, headers)

    def close(self) -> None:
        self._client.close()


class _Answer:
    """A urllib response as python_http_client.Response reads it."""

    def __init__(self, status: int, body: bytes, headers: HTTPMessage) -> None:
        self._status, self._body, self._headers = status, body, headers

    def getcode(self) -> int:
        return self._status

    def read(self) -> bytes:
        return self._body

    def info(self) -> HTTPMessage:
        return self._headers


def _message(headers: httpx.Headers) -> HTTPMessage:
    message = HTTPMessage()
    for name, value in headers.multi_items():
        message[name] = value
    return message


class _Client(python_http_client.Client):  # type: ignore[misc]
    """python_http_client.Client whose requests open through `_opener`. Every client it builds
    (one per attribute hop) is one of ours sharing the same opener."""

    _opener: _Opener

    @classmethod
    def adopt(cls, client: python_http_client.Client, opener: _Opener) -> _Client:
        adopted = cls.__new__(cls)
        adopted.__dict__.update(client.__dict__)  # its own state, as its __setstate__ would
        adopted._opener = opener
        return adopted

    def _build_client(self, name: str | None = None) -> _Client:
        return _Client.adopt(super()._build_client(name), self._opener)

    def _make_request(
        self, opener: Any, request: urllib.request.Request, timeout: float | None = None
    ) -> Any:
        return super()._make_request(self._opener, request, timeout)


class SendGridAPIClient(sendgrid.SendGridAPIClient):  # type: ignore[misc]
    """sendgrid.SendGridAPIClient whose every request passes `provider`'s pipeline.

    Takes sendgrid.SendGridAPIClient's arguments, plus `gateway` and `provider` (the provider's
    name in the gateway's config); `api_key` and `host` default to that provider's config.
    Without a gateway, a private one serves a single provider with default policies.
    """

    def __init__(
        self,
        api_key: str | None = None,
        host: str | None = None,
        impersonate_subuser: str | None = None,
        *,
        gateway: Gateway | None = None,
        provider: str = "sendgrid",
    ) -> None:
        runtime = provider_runtime(gateway, provider, "sendgrid", host)
        if gateway is not None:
            api_key = api_key or configured(runtime, "api_key")
            host = host or configured(runtime, "base_url")
        self.resilient_provider = runtime
        self._opener = _Opener(runtime)
        super().__init__(api_key, host or KINDS["sendgrid"].base_url, impersonate_subuser)

    @property
    def client(self) -> _Client:
        return self._client

    @client.setter
    def client(self, client: python_http_client.Client) -> None:
        """Whatever the SDK assigns (at construction, on a region change) opens through us."""
        self._client = (
            client if isinstance(client, _Client) else _Client.adopt(client, self._opener)
        )

    def close(self) -> None:
        """Release pooled connections (the official client keeps none)."""
        self._opener.close()
