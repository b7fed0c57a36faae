"""Stripe on the simulator: PaymentIntents and Customers, form-encoded like the real API, answering
in Stripe's object and error shapes. Point a client at `base_addresses={"api": sim.url(prefix)}`.

Stripe's idempotency is kept: a POST repeating an Idempotency-Key gets the first answer again
(`Idempotent-Replayed: true`) without a second effect; other parameters under the same key are
refused with an idempotency_error. Stripe's test payment methods decide confirmations:
`pm_card_visa` succeeds, `pm_card_chargeDeclined` is declined (402 card_error), and so on.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from resilient.testing.routes import basic_credentials, bearer_token, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

Params = dict[str, Any]

# payment method -> None (succeeds) or (code, decline_code, message)
TEST_PAYMENT_METHODS: dict[str, tuple[str, str, str] | None] = {
    "pm_card_visa": None,
    "pm_card_visa_debit": None,
    "pm_card_mastercard": None,
    "pm_card_amex": None,
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
}
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
_CUSTOMER_FIELDS = ("address", "description", "email", "name", "phone", "shipping")


class StripeError(Exception):
    """An answer in Stripe's error shape, raised by a handler."""

    def __init__(self, status: int, type: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"type": type, "message": message, **fields}
        code = fields.get("code")
        if code and "doc_url" not in fields:
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"

    def response(self) -> SimResponse:
        return SimResponse.json({"error": self.error}, status=self.status)


def decode_form(text: str) -> Params:
    """Stripe's form encoding back into objects: `metadata[order]=42`, `expand[0]=customer` and
    `expand[]=customer` become {"metadata": {"order": "42"}, "expand": ["customer"]}."""
    root: Params = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        name, _, tail = key.partition("[")
        parts = [name, *(tail[:-1].split("][") if tail.endswith("]") else [])]
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StripeError(400, "invalid_request_error", f"Invalid object: {key}")
            node = child
        node[parts[-1] or str(len(node))] = value
    listed = _listify(root)
    assert isinstance(listed, dict)
    return listed


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


class StripeState:
    """The simulated Stripe account: what was created, and the idempotency records."""

    def __init__(self) -> None:
        self.payment_intents: dict[str, Params] = {}
        self.customers: dict[str, Params] = {}
        self._replays: dict[str, tuple[tuple[str, str, bytes], SimResponse]] = {}
        self._lock = threading.Lock()

    def handler(self, action: Callable[[SimRequest, Params], Params]) -> Callable[..., SimResponse]:
        """Wrap an action: authentication, parameters, idempotency, Request-Id, error shape."""

        def handle(request: SimRequest) -> SimResponse:
            with self._lock:
                response = self._handle(request, action)
            response.headers = {**response.headers, "request-id": new_id("req_", 14)}
            return response

        return handle

    def _handle(
        self, request: SimRequest, action: Callable[[SimRequest, Params], Params]
    ) -> SimResponse:
        key = _api_key(request)
        if key is None:
            return StripeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            ).response()
        if not key.startswith(("sk_", "rk_")):
            return StripeError(
                401, "invalid_request_error", f"Invalid API Key provided: {key[:6]}****"
            ).response()
        idempotency_key = request.headers.get("idempotency-key")
        fingerprint = (request.method, request.path, request.body)
        if request.method == "POST" and idempotency_key:
            saved = self._replays.get(idempotency_key)
            if saved is not None:
                if saved[0] != fingerprint:
                    return StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{idempotency_key}' if you meant to execute a different request.",
                    ).response()
                replay = saved[1]
                return SimResponse(
                    replay.status, {**replay.headers, "idempotent-replayed": "true"}, replay.body
                )
        try:
            text = request.body.decode() if request.method == "POST" else request.query
            response = SimResponse.json(action(request, decode_form(text)))
        except StripeError as exc:
            response = exc.response()
        if request.method == "POST" and idempotency_key and response.status in (200, 402):
            self._replays[idempotency_key] = (fingerprint, response)  # saved once it executed
        return response

    # -- PaymentIntents ------------------------------------------------------------------------

    def create_payment_intent(self, request: SimRequest, params: Params) -> Params:
        amount = _amount(params)
        currency = params.get("currency")
        if not currency:
            raise _missing("currency")
        customer = params.get("customer")
        if customer and customer not in self.customers:
            raise _no_such("customer", customer, "customer")
        method = params.get("payment_method")
        if method is not None:
            _payment_method(method)
        pid = new_id("pi_")
        intent: Params = {
            "id": pid,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": params.get("capture_method", "automatic_async"),
            "client_secret": f"{pid}_secret_{secrets.token_hex(12)}",
            "confirmation_method": params.get("confirmation_method", "automatic"),
            "created": int(time.time()),
            "currency": str(currency).lower(),
            "customer": customer,
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": method,
            "payment_method_options": {},
            "payment_method_types": params.get("payment_method_types") or ["card"],
            "processing": None,
            "receipt_email": params.get("receipt_email"),
            "setup_future_usage": params.get("setup_future_usage"),
            "shipping": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "statement_descriptor_suffix": None,
            "status": "requires_confirmation" if method else "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }
        self.payment_intents[pid] = intent
        if _true(params.get("confirm")):
            return self._confirm(intent, method)
        return intent

    def retrieve_payment_intent(self, request: SimRequest, params: Params) -> Params:
        return self._intent(request.params["intent"])

    def confirm_payment_intent(self, request: SimRequest, params: Params) -> Params:
        intent = self._intent(request.params["intent"])
        method = params.get("payment_method") or intent["payment_method"]
        if method is not None:
            _payment_method(method)
        return self._confirm(intent, method)

    def list_payment_intents(self, request: SimRequest, params: Params) -> Params:
        customer = params.get("customer")
        intents = [i for i in self.payment_intents.values() if customer in (None, i["customer"])]
        return _page(intents, params, "/v1/payment_intents")

    def _intent(self, pid: str) -> Params:
        intent = self.payment_intents.get(pid)
        if intent is None:
            raise _no_such("payment_intent", pid, "intent", status=404)
        return intent

    def _confirm(self, intent: Params, method: str | None) -> Params:
        if intent["status"] not in _CONFIRMABLE:
            raise StripeError(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it has a status of "
                f"{intent['status']}.",
                code="payment_intent_unexpected_state",
                payment_intent=intent,
            )
        if method is None:
            raise StripeError(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "To confirm the PaymentIntent with a payment method, provide `payment_method`.",
                code="payment_intent_unexpected_state",
                payment_intent=intent,
            )
        charge = new_id("ch_")
        decline = TEST_PAYMENT_METHODS[method]
        if decline is not None:
            code, decline_code, message = decline
            failure = {"charge": charge, "code": code, "decline_code": decline_code}
            intent.update(
                status="requires_payment_method",
                payment_method=None,
                latest_charge=charge,
                last_payment_error={
                    **failure,
                    "message": message,
                    "type": "card_error",
                    "payment_method": {"id": method, "object": "payment_method"},
                },
            )
            raise StripeError(402, "card_error", message, **failure, payment_intent=dict(intent))
        manual = intent["capture_method"] == "manual"
        intent.update(
            payment_method=method,
            latest_charge=charge,
            last_payment_error=None,
            status="requires_capture" if manual else "succeeded",
            amount_capturable=intent["amount"] if manual else 0,
            amount_received=0 if manual else intent["amount"],
        )
        return intent

    # -- Customers -----------------------------------------------------------------------------

    def create_customer(self, request: SimRequest, params: Params) -> Params:
        cid = new_id("cus_", 14)
        customer: Params = {
            "id": cid,
            "object": "customer",
            "balance": 0,
            "created": int(time.time()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "discount": None,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "next_invoice_sequence": 1,
            "preferred_locales": params.get("preferred_locales") or [],
            "tax_exempt": params.get("tax_exempt", "none"),
            "test_clock": None,
            **dict.fromkeys(_CUSTOMER_FIELDS),
        }
        _update_customer(customer, params)
        self.customers[cid] = customer
        return customer

    def retrieve_customer(self, request: SimRequest, params: Params) -> Params:
        return self._customer(request.params["customer"], deleted_ok=True)

    def update_customer(self, request: SimRequest, params: Params) -> Params:
        customer = self._customer(request.params["customer"])
        _update_customer(customer, params)
        return customer

    def delete_customer(self, request: SimRequest, params: Params) -> Params:
        cid = request.params["customer"]
        self._customer(cid)
        self.customers[cid] = {"id": cid, "object": "customer", "deleted": True}
        return self.customers[cid]

    def list_customers(self, request: SimRequest, params: Params) -> Params:
        email = params.get("email")
        customers = [
            c
            for c in self.customers.values()
            if not c.get("deleted") and email in (None, c.get("email"))
        ]
        return _page(customers, params, "/v1/customers")

    def _customer(self, cid: str, *, deleted_ok: bool = False) -> Params:
        customer = self.customers.get(cid)
        if customer is None or (customer.get("deleted") and not deleted_ok):
            raise _no_such("customer", cid, "id", status=404)
        return customer


def mount(sim: Simulator, prefix: str) -> StripeState:
    state = StripeState()
    routes: list[tuple[str, str, Callable[[SimRequest, Params], Params]]] = [
        ("POST", "/v1/payment_intents", state.create_payment_intent),
        ("GET", "/v1/payment_intents", state.list_payment_intents),
        ("GET", "/v1/payment_intents/{intent}", state.retrieve_payment_intent),
        ("POST", "/v1/payment_intents/{intent}/confirm", state.confirm_payment_intent),
        ("POST", "/v1/customers", state.create_customer),
        ("GET", "/v1/customers", state.list_customers),
        ("GET", "/v1/customers/{customer}", state.retrieve_customer),
        ("POST", "/v1/customers/{customer}", state.update_customer),
        ("DELETE", "/v1/customers/{customer}", state.delete_customer),
    ]
    for method, path, action in routes:
        sim.route(method, prefix + path, state.handler(action))
    return state


def _api_key(request: SimRequest) -> str | None:
    token = bearer_token(request)
    if token is not None:
        return token
    credentials = basic_credentials(request)
    return credentials[0] if credentials else None


def _amount(params: Params) -> int:
    value = params.get("amount")
    if value is None:
        raise _missing("amount")
    if not re.fullmatch(r"\d+", str(value)):
        raise StripeError(
            400,
            "invalid_request_error",
            f"Invalid integer: {value}",
            code="parameter_invalid_integer",
            param="amount",
        )
    amount = int(value)
    if amount < 1:
        raise StripeError(
            400,
            "invalid_request_error",
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param="amount",
        )
    return amount


def _payment_method(method: str) -> None:
    if method not in TEST_PAYMENT_METHODS:
        raise _no_such("PaymentMethod", method, "payment_method")


def _update_customer(customer: Params, params: Params) -> None:
    for field in _CUSTOMER_FIELDS:
        if field in params:
            customer[field] = params[field] or None
    metadata = params.get("metadata")
    if isinstance(metadata, dict):  # an empty value deletes the key, as on Stripe
        merged = {**customer["metadata"], **metadata}
        customer["metadata"] = {key: value for key, value in merged.items() if value != ""}


def _page(objects: list[Params], params: Params, url: str) -> Params:
    newest = sorted(objects, key=lambda o: o["created"], reverse=True)
    after = params.get("starting_after")
    if after:
        ids = [o["id"] for o in newest]
        newest = newest[ids.index(after) + 1 :] if after in ids else []
    limit = int(params.get("limit") or 10)
    return {"object": "list", "data": newest[:limit], "has_more": len(newest) > limit, "url": url}


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


def _missing(param: str) -> StripeError:
    return StripeError(
        400,
        "invalid_request_error",
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
    )


def _no_such(kind: str, value: str, param: str, *, status: int = 400) -> StripeError:
    return StripeError(
        status,
        "invalid_request_error",
        f"No such {kind}: '{value}'",
        code="resource_missing",
        param=param,
    )
