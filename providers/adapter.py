"""What a provider adapter is: how one provider's API says what a request model means.

An adapter builds the HTTP request for a model (exactly what the provider documents: URL,
method, auth, headers, body) and reads the provider's id for what it did from the answer. It
does no I/O and holds no policy: the gateway's pipeline sends, retries and fails over.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import Any, Protocol, runtime_checkable

import httpx

from resilient.errors import ResilientError
from resilient.lookup import Found
from resilient.runtime import ProviderRuntime

Preparation = Generator[httpx.Request, httpx.Response, httpx.Response | None]
"""What an adapter's optional `prepare(provider)` returns. Some providers need a call before the
real one (a session, an OAuth token); `build` does no I/O, so `prepare` yields each request it
needs and is sent its answer, before every attempt. It ends with None (ready: `build` may run)
or with an answer that ends the attempt instead (a refused login), which the pipeline classifies
like any other. It caches what it got, so most attempts yield nothing."""


class Adapter(Protocol):
    """Three optional members, looked up by name:

    - `prepare(provider) -> Preparation`: state needed to *build* the request, fetched first
      (a Bluesky session, whose DID goes into the body). See Preparation.
    - `auth: httpx.Auth`: credentials attached to the built request that take I/O of their own
      (an OAuth token fetched, cached, and refreshed on a 401); httpx runs the flow inside
      the attempt.
    - `verdict(response, default: Verdict) -> Verdict`: the adapter's reading of an answer its
      status misjudges (a 200 whose body says the message was refused), given the status
      table's verdict; it may also name the provider's error code in the verdict's reason.
    """

    honours_idempotency_key: bool  # a repeat with the same key cannot act twice

    def build(self, model: Any, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        """The request that asks `provider` to carry out `model`."""
        ...

    def message_id(self, response: httpx.Response) -> str | None:
        """The provider's id for what it did, from its successful answer."""
        ...


@runtime_checkable
class LookupAdapter(Protocol):
    """An adapter that can ask its provider what became of an operation (reconciliation of an
    ambiguous outcome, `resilient.lookup`): one request, and how to read its answer."""

    def lookup(
        self, model: Any, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        """The request that finds what `build` sent for `operation_id` since `since`."""
        ...

    def found(self, response: httpx.Response, model: Any, operation_id: str, since: float) -> Found:
        """The lookup's 200 answer read: DONE with the provider's id, NOT_DONE only when the
        answer proves it, else UNKNOWN."""
        ...


def base_url(provider: ProviderRuntime, default: str) -> str:
    """The provider's configured base_url (simulator, proxy, region), else its public API."""
    return (provider.settings.base_url or default).rstrip("/")


def api_key(provider: ProviderRuntime) -> str:
    """The configured secret; a provider without one is misconfigured, said once and clearly."""
    key = provider.settings.api_key
    if not key:
        raise ResilientError(f"provider {provider.name!r} has no api_key in its config")
    return key.reveal()


def basic_auth(user: str, password: str) -> str:
    """An `Authorization: Basic` value (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def json_list(response: httpx.Response, key: str) -> list[Any] | None:
    """The array at `key` of a JSON object answer (a lookup's page of results), or None."""
    page = response.json()
    items = page.get(key) if isinstance(page, dict) else None
    return items if isinstance(items, list) else None


def json_field(response: httpx.Response, *path: str) -> str | None:
    """A string found at `path` in a JSON answer, or None (an answer without one is still ok)."""
    try:
        value: Any = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than a parser goes
        return None
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return None if value is None else str(value)
