"""Vonage (Nexmo) SMS API: `POST https://rest.nexmo.com/sms/json`
(https://developer.vonage.com/en/api/sms#send-an-sms).

Form-encoded `api_key`, `api_secret`, `from`, `to` (E.164 without the "+"), `text`, and
`type=unicode` when the text leaves the GSM 7-bit alphabet (which would otherwise mangle it).
`client-ref` carries the operation id when it fits Vonage's 40 characters, so an outcome in doubt
can be reconciled from Vonage's delivery receipts. The api key is the provider's `api_key`; the
secret is the `api_secret` option. No idempotency key: a repeat sends the message again.

Vonage answers HTTP 200 even when it refused the message: each part of the (possibly
concatenated) message carries a `status`, "0" when accepted for delivery, else one of the codes of
https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms. `verdict` reads them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from providers.adapter import api_key, base_url
from providers.models import Sms
from providers.sms._common import reveal, sender
from resilient import registry
from resilient.errors import ResilientError
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://rest.nexmo.com"
CLIENT_REF_LIMIT = 40

_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_ALPHABET = frozenset(_GSM_BASIC + "\f^{}\\[~]|€")  # the basic set and its extension table

# What a refused part means for the next step. Every non-zero status says Vonage did not accept
# that part, so none is ambiguous on its own; a code missing here fails over (not accepted).
STATUS_OUTCOMES: dict[int, Outcome] = {
    1: Outcome.RETRYABLE,  # throttled: faster than the account's throughput
    2: Outcome.FATAL,  # missing parameters
    3: Outcome.FATAL,  # invalid parameters
    4: Outcome.FAILOVER,  # invalid credentials
    5: Outcome.RETRYABLE,  # internal error: not accepted, may pass on a retry
    6: Outcome.FAILOVER,  # invalid message, e.g. a number prefix Vonage cannot route
    7: Outcome.FATAL,  # number barred: the recipient may not receive messages
    8: Outcome.FAILOVER,  # our Vonage account is suspended
    9: Outcome.FAILOVER,  # partner quota: no credit left
    10: Outcome.RETRYABLE,  # too many existing binds
    11: Outcome.FAILOVER,  # account not enabled for the HTTP API
    12: Outcome.FATAL,  # message too long
    14: Outcome.FAILOVER,  # invalid signature
    15: Outcome.FAILOVER,  # invalid sender address: this provider's sender id
    22: Outcome.FAILOVER,  # invalid network code
    23: Outcome.FAILOVER,  # invalid callback URL
    29: Outcome.FAILOVER,  # non-whitelisted destination (a trial account)
    32: Outcome.FAILOVER,  # signature and api secret disallowed
    33: Outcome.FATAL,  # number de-activated
}


class VonageOptions(BaseModel):
    """Config keys of a "vonage" provider: `api_key` is the account's API key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_secret: SecretStr
    sender: str | None = None  # `from` when an Sms names none: a number or an alphanumeric id


class VonageAdapter:
    honours_idempotency_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self._secret = reveal(settings.options.get("api_secret"))

    def build(self, model: Sms, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        if model.channel != "sms":
            raise ResilientError(
                f"provider {provider.name!r}: Vonage's SMS API sends SMS only, not {model.channel}"
            )
        if self._secret is None:
            raise ResilientError(f"provider {provider.name!r} has no api_secret in its config")
        form = {
            "api_key": api_key(provider),
            "api_secret": self._secret,
            "from": sender(model, provider).removeprefix("+"),
            "to": model.to.removeprefix("+"),
            "text": model.body,
        }
        if not set(model.body) <= GSM_ALPHABET:
            form["type"] = "unicode"
        if len(operation_id) <= CLIENT_REF_LIMIT:
            form["client-ref"] = operation_id
        return httpx.Request("POST", base_url(provider, API) + "/sms/json", data=form)

    def message_id(self, response: httpx.Response) -> str | None:
        parts = _parts(response)
        return None if not parts else _text(parts[0].get("message-id"))

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        """A 200 is only a success when every part was accepted. Some parts accepted and some
        not is ambiguous: the recipient has part of it, and a resend would repeat that part."""
        if default.outcome is not Outcome.OK:
            return default
        parts = _parts(response)
        refused = [part for part in parts if _text(part.get("status")) != "0"]
        if not parts:
            reason = f"{default.reason} no parts"
            return dataclasses.replace(default, outcome=Outcome.AMBIGUOUS, reason=reason)
        if not refused:
            return default
        status = _text(refused[0].get("status")) or "?"
        detail = _text(refused[0].get("error-text"))
        reason = f"{default.reason} vonage status {status}" + (f" ({detail})" if detail else "")
        if len(refused) < len(parts):
            outcome = Outcome.AMBIGUOUS
        elif status.isdigit():
            outcome = STATUS_OUTCOMES.get(int(status), Outcome.FAILOVER)
        else:
            outcome = Outcome.FAILOVER
        return dataclasses.replace(default, outcome=outcome, reason=reason)


def _parts(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return []
    return [part for part in messages if isinstance(part, dict)]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


registry.register(registry.ProviderKind("vonage", "sms", VonageOptions, VonageAdapter))
