"""Twilio Programmable Messaging, SMS and WhatsApp:
`POST https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages.json`
(https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).

Form-encoded `To`, `From`, `Body`; Basic auth `AccountSid:AuthToken` (the `account_sid` option,
`api_key` as the auth token). WhatsApp puts `whatsapp:` before both numbers. Twilio answers 201
with the Message resource; its `sid` is the message id. Errors are
`{"code", "message", "more_info", "status"}` with the HTTP status. Message creation takes no
idempotency key: a repeat sends the message again.
"""

from __future__ import annotations

import dataclasses

import httpx

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url, basic_auth, json_field
from providers.models import Sms
from providers.sms._common import sender
from resilient.errors import ResilientError
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.twilio.com"

# Twilio error codes of a 4xx that concern this account or its sender, not the message: another
# provider, with its own numbers and permissions, may still deliver it
# (https://www.twilio.com/docs/api/errors).
ACCOUNT_ERRORS = frozenset(
    {
        21212,  # invalid From number (this provider's sender)
        21408,  # the account has no permission to send to the region of To
        21606,  # From is not a message-capable number of this account
        21608,  # trial account: To is not verified
        21659,  # From is not a Twilio number
    }
)


class TwilioAdapter:
    honours_idempotency_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self._account_sid = settings.options.get("account_sid")

    def build(self, model: Sms, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        if not self._account_sid:
            raise ResilientError(f"provider {provider.name!r} has no account_sid in its config")
        account = str(self._account_sid)
        prefix = "whatsapp:" if model.channel == "whatsapp" else ""
        origin = sender(model, provider)
        return httpx.Request(
            "POST",
            f"{base_url(provider, API)}/2010-04-01/Accounts/{account}/Messages.json",
            headers={"Authorization": basic_auth(account, api_key(provider))},
            data={
                "To": prefix + model.to,
                "From": origin if origin.startswith(prefix) else prefix + origin,
                "Body": model.body,
            },
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "sid")

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """Twilio's error code says more than its status: it names the refusal in the attempt
        record, and fails over a refusal that concerns this account rather than the message."""
        code = json_field(response, "code") if response.status_code >= 400 else None
        if code is None:
            return default
        outcome = default.outcome
        if outcome is Outcome.FATAL and code.isdigit() and int(code) in ACCOUNT_ERRORS:
            outcome = Outcome.FAILOVER
        return dataclasses.replace(default, outcome=outcome, reason=f"{default.reason} {code}")


register_sdk_kind("twilio", factory=TwilioAdapter)
