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
import urllib.parse
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


MAX_REDIRECTS = 10  # as urllib's HTTPRedirectHandler
_FOLLOWED = frozenset({"GET", "HEAD"})  # methods whose redirects are followed


class _Opener:
    """Stands in for urllib's opener: sends over httpx through the pipeline and answers like
    urllib (a response with getcode/read/info, HTTPError for any non-2xx status).

    Redirects of GET and HEAD are followed, as urllib does, the Authorization header dropped
    when the host changes. urllib would turn a redirected POST into a GET without its body, and
    a mail send would then report success for mail never sent, so a redirected POST, PUT, PATCH
    or DELETE raises HTTPError with the redirect's status instead.
    """

    def __init__(self, runtime: ProviderRuntime) -> None:
        # redirects are ours to follow (above): httpx's own following costs every request its
        # whole redirect and auth machinery; the SDK's timeout comes with each request
        self._client = bridge_client(runtime, timeout=None)

    def open(self, request: urllib.request.Request, timeout: float | None = None) -> _Answer:
        method, url = request.get_method(), request.full_url
        headers = request.header_items()
        for _ in range(MAX_REDIRECTS):
            response = self._send(method, url, headers, request.data, timeout)
            location = response.headers.get("location")
            if not (response.is_redirect and location and method in _FOLLOWED):
                break
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(target).netloc != urllib.parse.urlsplit(url).netloc:
                headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
            url = target
        answer_headers = _message(response.headers)
        if not 200 <= response.status_code < 300:
            body = io.BytesIO(response.content)
            raise urllib.error.HTTPError(
                url, response.status_code, response.reason_phrase, answer_headers, body
            )
        return _Answer(response.status_code, response.content, answer_headers)

    def _send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        content: Any,
        timeout: float | None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, url, headers=headers, content=content, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise urllib.error.URLError(exc) from exc
            raise TimeoutError("timed out") from exc
        except httpx.TransportError as exc:
            raise urllib.error.URLError(exc) from exc

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
