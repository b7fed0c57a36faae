"""PayPal on the simulator: OAuth2 client-credentials tokens and Orders v2, answering in PayPal's
shapes. Point a provider's `base_url` at `sim.url(prefix)`.

- `POST /v1/oauth2/token`: Basic `client_id:secret` and `grant_type=client_credentials` give
  `{"access_token", "token_type": "Bearer", "expires_in", ...}`; bad credentials a 401
  `{"error": "invalid_client", ...}`.
- `POST /v2/checkout/orders` (Bearer token): an order with a vaulted `payment_source` captures at
  once (`COMPLETED`, with its capture); without one it waits for the payer (`CREATED`). A
  `PayPal-Request-Id` seen before gets the order it created again, with no second effect; a
  single-step order without one is refused, as PayPal does. `Prefer: return=representation` gives
  the whole order, else the minimal one. Errors are `{"name", "message", "debug_id", "details":
  [{"issue", "description"}], "links"}`.
- `GET /v2/checkout/orders/{id}`.

Orders are on `state.orders`, tokens issued on `state.tokens`. Knobs: `state.credentials`,
`state.token_lifetime`, `state.revoke_tokens()`, `state.declined` (vault ids whose capture PayPal
declines with INSTRUMENT_DECLINED).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import basic_credentials, bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

Order = dict[str, Any]

_CURRENCY_CODES = (
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD "
    "SEK CHF THB USD"
)
CURRENCIES = frozenset(_CURRENCY_CODES.split())  # what PayPal takes for payments
WHOLE = frozenset({"HUF", "JPY", "TWD"})  # currencies PayPal takes without decimals
_VALUE = re.compile(r"^\d{1,10}(\.\d{1,2})?$")
_DOCS = "https://developer.paypal.com/docs/api/orders/v2/#error-"


class PayPalError(Exception):
    """An answer in PayPal's error shape, raised by a handler."""

    def __init__(self, status: int, name: str, message: str, issue: str, description: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "name": name,
            "message": message,
            "debug_id": secrets.token_hex(6),
            "details": [{"issue": issue, "description": description}],
            "links": [{"href": _DOCS + issue, "rel": "information_link", "method": "GET"}],
        }

    def response(self) -> SimResponse:
        return SimResponse.json(self.body, status=self.status)


def invalid(issue: str, description: str) -> PayPalError:
    return PayPalError(
        400,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        issue,
        description,
    )


def unprocessable(issue: str, description: str) -> PayPalError:
    return PayPalError(
        422,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
        issue,
        description,
    )


class PayPalState:
    """The simulated PayPal REST app and merchant account."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.tokens: dict[str, float] = {}  # access token -> when it expires (time.monotonic)
        self.credentials: tuple[str, str] | None = None  # (client_id, secret); None: any
        self.token_lifetime = 32400
        self.declined: set[str] = set()
        self._by_request_id: dict[str, str] = {}  # PayPal-Request-Id -> order id
        self._lock = threading.Lock()

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far: the next order call answers 401."""
        with self._lock:
            self.tokens.clear()

    # -- OAuth2 --------------------------------------------------------------------------------

    def token(self, request: SimRequest) -> SimResponse:
        credentials = basic_credentials(request)
        if credentials is None or (
            self.credentials is not None and credentials != self.credentials
        ):
            error = {"error": "invalid_client", "error_description": "Client Authentication failed"}
            return SimResponse.json(error, status=401)
        form = {key: values[-1] for key, values in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            error = {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}
            return SimResponse.json(error, status=400)
        token = "A21AA" + secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime
        return SimResponse.json(
            {
                "scope": "https://uri.paypal.com/services/payments/payment "
                "https://uri.paypal.com/services/payments/orders",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_lifetime,
                "nonce": secrets.token_hex(16),
            }
        )

    # -- Orders --------------------------------------------------------------------------------

    def create_order(self, request: SimRequest) -> SimResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        full = "return=representation" in request.headers.get("prefer", "")
        request_id = request.headers.get("paypal-request-id")
        with self._lock:
            seen = self._by_request_id.get(request_id) if request_id else None
            if seen is not None:
                return SimResponse.json(self._view(self.orders[seen], full))
            try:
                order = self._new_order(request, request_id)
            except PayPalError as exc:
                return exc.response()
            self.orders[order["id"]] = order
            if request_id:
                self._by_request_id[request_id] = order["id"]
        return SimResponse.json(self._view(order, full), status=201)

    def get_order(self, request: SimRequest) -> SimResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        order = self.orders.get(request.params["order"])
        if order is None:
            return PayPalError(
                404,
                "RESOURCE_NOT_FOUND",
                "The specified resource does not exist.",
                "INVALID_RESOURCE_ID",
                "Specified resource ID does not exist. Please check the resource ID and try again.",
            ).response()
        return SimResponse.json(order)

    def _authenticate(self, request: SimRequest) -> SimResponse | None:
        token = bearer_token(request)
        expires = self.tokens.get(token or "")
        if expires is None or expires <= time.monotonic():
            error = {
                "error": "invalid_token",
                "error_description": "Access Token not found in cache",
            }
            return SimResponse.json(error, status=401)
        return None

    def _new_order(self, request: SimRequest, request_id: str | None) -> Order:
        try:
            body = request.json()
        except ValueError:
            raise invalid(
                "MALFORMED_REQUEST_JSON", "The request JSON is not well formed."
            ) from None
        if not isinstance(body, dict):
            raise invalid("MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        intent = body.get("intent")
        if intent not in ("CAPTURE", "AUTHORIZE"):
            raise invalid("INVALID_PARAMETER_VALUE", "The value of a field is invalid.")
        units = body.get("purchase_units")
        if not isinstance(units, list) or not units:
            raise invalid("MISSING_REQUIRED_PARAMETER", "A required field is missing.")
        amount = units[0].get("amount") if isinstance(units[0], dict) else None
        _check_amount(amount)
        assert isinstance(amount, dict)
        source = body.get("payment_source")
        vault_id = _vault_id(source)
        if source is not None and not request_id:
            raise invalid(
                "PAYPAL_REQUEST_ID_REQUIRED",
                "A PayPal-Request-Id is required if you are trying to process payment for an "
                "Order.",
            )
        if vault_id is not None and vault_id in self.declined:
            raise unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented was either declined by the processor or bank, or it "
                "can't be used for this payment.",
            )
        oid = secrets.token_hex(8).upper()
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        unit: Order = {"reference_id": "default", **units[0]}
        order: Order = {"id": oid, "intent": intent, "create_time": now, "update_time": now}
        if vault_id is None:
            order["status"] = "CREATED"
            approve = f"https://www.paypal.com/checkoutnow?token={oid}"
            links = [{"href": approve, "rel": "approve", "method": "GET"}]
        else:
            order["status"] = "COMPLETED"
            order["payment_source"] = source
            unit["payments"] = {
                "captures": [
                    {
                        "id": secrets.token_hex(8).upper(),
                        "status": "COMPLETED",
                        "amount": amount,
                        "final_capture": True,
                        "custom_id": unit.get("custom_id"),
                        "create_time": now,
                        "update_time": now,
                    }
                ]
            }
            links = []
        order["purchase_units"] = [unit]
        self_link = f"https://api-m.paypal.com/v2/checkout/orders/{oid}"
        order["links"] = [{"href": self_link, "rel": "self", "method": "GET"}, *links]
        return order

    @staticmethod
    def _view(order: Order, full: bool) -> Order:
        return order if full else {k: order[k] for k in ("id", "status", "links")}


def mount(sim: Simulator, prefix: str) -> PayPalState:
    state = PayPalState()
    sim.route("POST", f"{prefix}/v1/oauth2/token", state.token)
    sim.route("POST", f"{prefix}/v2/checkout/orders", state.create_order)
    sim.route("GET", f"{prefix}/v2/checkout/orders/{{order}}", state.get_order)
    return state


def _check_amount(amount: object) -> None:
    if not isinstance(amount, dict) or not amount.get("currency_code") or not amount.get("value"):
        raise invalid("MISSING_REQUIRED_PARAMETER", "A required field is missing.")
    currency, value = str(amount["currency_code"]), str(amount["value"])
    if currency not in CURRENCIES:
        raise unprocessable("CURRENCY_NOT_SUPPORTED", "Currency code is not currently supported.")
    if not _VALUE.match(value):
        raise invalid(
            "INVALID_PARAMETER_SYNTAX",
            "The value of a field does not conform to the expected format.",
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise invalid("INVALID_PARAMETER_VALUE", "The value of a field is invalid.") from None
    if currency in WHOLE and number != number.to_integral_value():
        raise unprocessable(
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    if number <= 0:
        raise unprocessable("AMOUNT_MUST_BE_POSITIVE", "The amount must be a positive number.")


def _vault_id(source: object) -> str | None:
    """The vault id of a `payment_source` like `{"card": {"vault_id": "..."}}`, if any."""
    if not isinstance(source, dict):
        return None
    for instrument in source.values():
        if isinstance(instrument, dict) and instrument.get("vault_id"):
            return str(instrument["vault_id"])
    return None
