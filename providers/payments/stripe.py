"""Stripe PaymentIntents, created and confirmed in one call:
`POST https://api.stripe.com/v1/payment_intents` (https://docs.stripe.com/api/payment_intents/create).

Form-encoded `amount` (minor units), `currency`, `payment_method`, `confirm=true`, `customer`,
`description`, `metadata[<key>]`, plus `automatic_payment_methods[allow_redirects]=never`: with
no `return_url` a server-side confirmation cannot follow a redirect, and Stripe refuses the
confirmation of a PaymentIntent that might need one. Bearer secret key.

Every attempt carries `Idempotency-Key: <operation id>`: Stripe saves the first answer per key
(once the endpoint began executing) and replays it to any repeat, so a retry after a timeout
cannot charge twice (https://docs.stripe.com/api/idempotent_requests). The PaymentIntent's `id`
is the message id. Errors are `{"error": {"type", "code", "decline_code", "message", ...}}`; a
declined card is a 402 `card_error`.

Which failures prove Stripe did nothing (https://docs.stripe.com/error-low-level): a refused
connection, and a 429, as rate limiting runs before the idempotency layer. A 5xx or a 409 does
not: the charge may have gone through. `Stripe-Should-Retry: false` only says a retry would
not change the result ("if doing so would be a no-op", as Stripe's SDKs put it), not that
nothing happened, so it never moves a 5xx to another processor.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlencode

import httpx

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url, json_field
from providers.models import Charge
from providers.payments._common import MAY_HAVE_CHARGED_RULES, refined
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime

API = "https://api.stripe.com"


class StripeAdapter:
    honours_idempotency_key = True

    def build(self, model: Charge, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            base_url(provider, API) + "/v1/payment_intents",
            headers={
                "Authorization": f"Bearer {api_key(provider)}",
                "Idempotency-Key": operation_id,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            content=urlencode(form(model)),
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """Stripe's error code (and a decline's reason) in the attempt record; a 5xx kept
        ambiguous whatever `Stripe-Should-Retry` says; and a confirmation that still waits for
        the customer (3-D Secure) is no charge: final, and never sent to another processor."""
        if default.outcome is Outcome.OK:
            status = json_field(response, "status")
            if status == "requires_action":
                return dataclasses.replace(default, outcome=Outcome.FATAL, reason="200 " + status)
            return default
        code = json_field(response, "error", "code")
        decline = json_field(response, "error", "decline_code")
        detail = "/".join(part for part in (code, decline) if part) or None
        return refined(response, default, detail)


def form(charge: Charge) -> list[tuple[str, str]]:
    """The PaymentIntent parameters for `charge`, in Stripe's form encoding."""
    fields = [
        ("amount", str(charge.amount)),
        ("currency", charge.currency),
        ("payment_method", charge.payment_method),
        ("confirm", "true"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
    ]
    if charge.customer:
        fields.append(("customer", charge.customer))
    if charge.description:
        fields.append(("description", charge.description))
    fields.extend((f"metadata[{key}]", value) for key, value in charge.metadata.items())
    return fields


register_sdk_kind(
    "stripe", factory=lambda settings: StripeAdapter(), classify=MAY_HAVE_CHARGED_RULES
)
