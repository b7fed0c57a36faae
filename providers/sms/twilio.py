"""Twilio Programmable Messaging, SMS and WhatsApp:
`POST https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages.json`
(https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).

Form-encoded `To`, `From`, `Body`; Basic auth `AccountSid:AuthToken` (the `account_sid` option,
`api_key` as the auth token). WhatsApp puts `whatsapp:` before both numbers. Twilio answers 201
with the Message resource; its `sid` is the message id. Errors are
`{"code", "message", "more_info", "status"}` with the HTTP status. Message creation takes no
idempotency key: a repeat sends the message again.

What became of an ambiguous send can be found out: the Messages list, filtered by `To` and
`From` and most recent first (https://www.twilio.com/docs/messaging/api/message-resource#read-
multiple-message-resources), holds every message the account created; one with our body,
created since the claim (on Twilio's clock, read from the answer's `Date`), is the one we sent.
Only a page that reaches back past that moment proves it was not sent. Two operations sending
the same body to the same number from the same sender within about two seconds of each other
can't be told apart: the later one's lookup would take the earlier one's message for its own.
"""

from __future__ import annotations

import dataclasses
import time
from email.utils import parsedate_to_datetime

import httpx

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url, basic_auth, json_field
from providers.models import Sms
from providers.sms._common import sender
from resilient.errors import ResilientError
from resilient.lookup import DONE, NOT_DONE, UNKNOWN, Found
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.twilio.com"
LOOKUP_PAGE = 1000  # the most Twilio lists on one page
CLOCK_SLACK = 1.0  # seconds: date_created is whole seconds (the Date read errs the other way)

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
        return httpx.Request(
            "POST",
            self._messages(provider),
            headers={"Authorization": self._auth(provider)},
            data={**self._parties(model, provider), "Body": model.body},
        )

    def lookup(
        self, model: Sms, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        return httpx.Request(
            "GET",
            self._messages(provider),
            headers={"Authorization": self._auth(provider)},
            params={**self._parties(model, provider), "PageSize": str(LOOKUP_PAGE)},
        )

    def found(self, response: httpx.Response, model: Sms, operation_id: str, since: float) -> Found:
        """Ours is a message with our body created since our claim, on Twilio's clock: its
        `Date` header says how far that is from ours, so an identical message that another
        operation sent just before is not taken for ours (a second apart or more)."""
        twilio_now = _epoch(response.headers.get("date"))
        if twilio_now is None:
            return Found(UNKNOWN, detail="the Messages list came without a Date to match by")
        window = since + (twilio_now - time.time()) - CLOCK_SLACK
        page = response.json()
        messages = page.get("messages") if isinstance(page, dict) else None
        if not isinstance(messages, list):
            return Found(UNKNOWN, detail="the Messages list had no messages array")
        for message in messages:
            created = _epoch(message.get("date_created") if isinstance(message, dict) else None)
            if created is None:
                continue
            if created < window:
                return Found(NOT_DONE, detail=f"no message with this body since {since:.0f}")
            if message.get("body") == model.body:
                return Found(DONE, str(message.get("sid")), f"found {message.get('sid')}")
        if page.get("next_page_uri"):
            return Found(UNKNOWN, detail=f"more than {LOOKUP_PAGE} messages since the send")
        return Found(NOT_DONE, detail="no message with this body")

    def _messages(self, provider: ProviderRuntime) -> str:
        if not self._account_sid:
            raise ResilientError(f"provider {provider.name!r} has no account_sid in its config")
        return f"{base_url(provider, API)}/2010-04-01/Accounts/{self._account_sid}/Messages.json"

    def _auth(self, provider: ProviderRuntime) -> str:
        return basic_auth(str(self._account_sid), api_key(provider))

    @staticmethod
    def _parties(model: Sms, provider: ProviderRuntime) -> dict[str, str]:
        prefix = "whatsapp:" if model.channel == "whatsapp" else ""
        origin = sender(model, provider)
        return {
            "To": prefix + model.to,
            "From": origin if origin.startswith(prefix) else prefix + origin,
        }

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


def _epoch(value: object) -> float | None:
    """An RFC 2822 time (a `Date` header, a message's `date_created`) in epoch seconds."""
    try:
        return parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError):
        return None


register_sdk_kind("twilio", factory=TwilioAdapter)
