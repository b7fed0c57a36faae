"""PayPal Orders v2, a single-step order that captures at once:
`POST https://api-m.paypal.com/v2/checkout/orders` (https://developer.paypal.com/docs/api/orders/v2/).

JSON: `intent: CAPTURE`, one purchase unit whose `amount.value` is the decimal string of the
charge's minor units (no decimals for the currencies PayPal takes whole: HUF, JPY, TWD), its
`description` and `custom_id` (the operation id, to find the order when reconciling), and a
`payment_source` naming the vaulted instrument `Charge.payment_method` (a card by default; the
`payment_source` option says which kind). `customer` and `metadata` have no place in an order.

`PayPal-Request-Id: <operation id>` makes the call idempotent: PayPal keeps the key for 6 hours
and answers a repeat with the order it created; the header is mandatory for single-step orders.
The order's `id` is the message id. Errors are
`{"name", "message", "debug_id", "details": [{"issue", "description"}]}`.

Auth is an OAuth2 client-credentials token: `POST /v1/oauth2/token` with Basic
`client_id:client_secret` (the `client_id` option; `api_key` is the secret) and
`grant_type=client_credentials` (https://developer.paypal.com/api/rest/authentication/). `build`
does no I/O, so the token is fetched by `PayPalAuth`, an httpx auth flow the operation hands to
the client: the token request goes out inside the attempt, over the provider's own client, and
the token is cached until shortly before it expires.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Generator
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from providers.adapter import base_url, basic_auth, json_field
from providers.models import Charge
from providers.payments._common import MAY_HAVE_CHARGED_RULES, refined
from resilient import registry
from resilient.errors import ResilientError
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api-m.paypal.com"
ORDERS_PATH = "/v2/checkout/orders"
TOKEN_PATH = "/v1/oauth2/token"
REQUEST_ID_LIMIT = 108  # PayPal-Request-Id length
FIELD_LIMIT = 127  # purchase_units[].description and custom_id
TOKEN_MARGIN = 60.0  # seconds before expiry that a token stops being used

# Minor-unit exponents other than 2 (ISO 4217, which is how Stripe counts amounts too).
_NO_MINOR_UNIT = "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf"
_THREE_DECIMALS = "bhd jod kwd omr tnd"
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_NO_MINOR_UNIT.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}
WHOLE_AT_PAYPAL = frozenset({"huf", "jpy", "twd"})  # PayPal refuses decimals in these


class PayPalOptions(BaseModel):
    """Config keys of a "paypal" provider: `api_key` is the REST app's client secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str
    payment_source: Literal["card", "paypal", "venmo"] = "card"  # what payment_method vaults


def amount_value(amount: int, currency: str) -> str:
    """`amount` minor units of `currency` as PayPal's decimal string: 1999 usd is "19.99",
    1999 jpy is "1999", 1999 kwd is "1.999", 150000 huf is "1500"."""
    exponent = EXPONENTS.get(currency, 2)
    value = Decimal(amount).scaleb(-exponent)
    if currency in WHOLE_AT_PAYPAL and value == value.to_integral_value():
        exponent = 0  # a fraction stays written out, for PayPal to refuse
    return f"{value:.{exponent}f}"


def request_id(operation_id: str) -> str:
    """The operation id as a PayPal-Request-Id: a longer one is replaced by its digest, the
    same on every attempt."""
    if len(operation_id) <= REQUEST_ID_LIMIT:
        return operation_id
    return hashlib.sha256(operation_id.encode()).hexdigest()


class PayPalAuth(httpx.Auth):
    """Bearer-token auth for one PayPal REST app: a token is fetched before the first request
    and after it expires; a 401 (a token PayPal revoked early) gets one new token and one
    resend, as PayPal did nothing with an unauthenticated request. A refused token request is
    the attempt's answer, classified like any other (a 401 there: bad credentials, fail over).
    Shared by every call of the provider, from threads and event loops: the lock guards the
    cache only, never I/O."""

    requires_response_body = True

    def __init__(
        self, name: str, client_id: str, secret: str | None, clock: Callable[[], float]
    ) -> None:
        self._name = name
        self._client_id = client_id
        self._secret = secret
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        fetched = token is None
        if token is None:
            token = yield from self._fetch(request)
            if token is None:
                return
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and not fetched:
            self._forget(token)
            token = yield from self._fetch(request)
            if token is None:
                return
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _fetch(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        """A new token, or None when PayPal refused (its answer is then the attempt's)."""
        response = yield self._token_request(request)
        return self._store(response)

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        if not self._secret:
            raise ResilientError(
                f"provider {self._name!r} has no api_key (the PayPal client secret) in its config"
            )
        return httpx.Request(
            "POST",
            str(request.url).removesuffix(ORDERS_PATH) + TOKEN_PATH,
            headers={
                "Authorization": basic_auth(self._client_id, self._secret),
                "Accept": "application/json",
            },
            data={"grant_type": "client_credentials"},
            extensions={k: v for k, v in request.extensions.items() if k == "timeout"},
        )

    def _cached(self) -> str | None:
        with self._lock:
            return self._token if self._clock() < self._expires_at else None

    def _store(self, response: httpx.Response) -> str | None:
        token = json_field(response, "access_token") if response.status_code == 200 else None
        if token is None:
            return None
        lifetime = json_field(response, "expires_in")
        seconds = float(lifetime) if lifetime and lifetime.isdigit() else 0.0
        with self._lock:
            self._token = token
            self._expires_at = self._clock() + seconds - TOKEN_MARGIN
        return token

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None


class PayPalAdapter:
    honours_idempotency_key = True

    def __init__(
        self, settings: ProviderSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        options = PayPalOptions.model_validate(dict(settings.options))
        self._source = options.payment_source
        secret = settings.api_key.reveal() if settings.api_key else None
        self.auth = PayPalAuth(settings.name, options.client_id, secret, clock)

    def build(self, model: Charge, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        """The order request; its Authorization comes from `self.auth` when it is sent."""
        unit: dict[str, Any] = {
            "amount": {
                "currency_code": model.currency.upper(),
                "value": amount_value(model.amount, model.currency),
            }
        }
        if model.description:
            unit["description"] = model.description[:FIELD_LIMIT]
        if len(operation_id) <= FIELD_LIMIT:
            unit["custom_id"] = operation_id
        return httpx.Request(
            "POST",
            base_url(provider, API) + ORDERS_PATH,
            headers={
                "PayPal-Request-Id": request_id(operation_id),
                "Prefer": "return=representation",
            },
            json={
                "intent": "CAPTURE",
                "purchase_units": [unit],
                "payment_source": {self._source: {"vault_id": model.payment_method}},
            },
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """PayPal's issue (INSTRUMENT_DECLINED, ...) in the attempt record; and an order that
        did not capture (declined, or waiting for the payer) is no charge: final, and never
        sent to another processor."""
        if default.outcome is Outcome.OK:
            problem = _uncaptured(response)
            if problem is None:
                return default
            return dataclasses.replace(
                default, outcome=Outcome.FATAL, reason=f"{default.reason} {problem}"
            )
        return refined(response, default, _issue(response))


def _uncaptured(response: httpx.Response) -> str | None:
    """Why a created order moved no money, or None when it captured (or is pending capture)."""
    try:
        order = response.json()
    except ValueError:
        return None
    if not isinstance(order, dict):
        return None
    status = order.get("status")
    if status != "COMPLETED":
        return str(status)
    for unit in order.get("purchase_units") or ():
        for capture in (unit.get("payments") or {}).get("captures") or ():
            if capture.get("status") in ("DECLINED", "FAILED"):
                return f"capture {capture['status']}"
    return None


def _issue(response: httpx.Response) -> str | None:
    """PayPal's name for a refusal: the first detail's issue, else the error's name (orders)
    or its OAuth `error` (token)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    details = body.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        issue = details[0].get("issue")
        if issue:
            return str(issue)
    name = body.get("name") or body.get("error")
    return None if name is None else str(name)


registry.register(
    registry.ProviderKind(
        "paypal", "payments", PayPalOptions, PayPalAdapter, MAY_HAVE_CHARGED_RULES
    )
)
