"""Vonage (Nexmo) SMS API: `POST https://rest.nexmo.com/sms/json`
(https://developer.vonage.com/en/api/sms#send-an-sms).

Form-encoded `api_key`, `api_secret`, `from`, `to` (E.164 without the "+"), `text`, and
`type=unicode` when the text leaves the GSM 7-bit alphabet (which would otherwise mangle it).
`client-ref` carries the operation id when it fits Vonage's 40 characters, so an outcome in doubt
can be reconciled (below). The api key is the provider's `api_key`; the secret is the `api_secret`
option. No idempotency key: a repeat sends the message again.

Vonage answers HTTP 200 even when it refused the message: each part of the (possibly
concatenated) message carries a `status`, "0" when accepted for delivery, else one of the codes of
https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms. `verdict` reads them.

What became of an ambiguous send is asked of the Reports API's synchronous records
(`GET https://api.nexmo.com/v2/reports/records`, https://developer.vonage.com/en/api/reports),
with Basic auth of the key and secret and the key as `account_id`: the outbound SMS to our
recipient that Vonage received since the claim, less our clock skew (one query spans 24 hours at
most). client-ref is no filter of that endpoint (only of an asynchronous report, minutes in the
making), but every record carries it, so the records are matched here. DONE when a record for
each part of the message carries our operation id and none was rejected, with the first one's
`message_id` (a part's id: records do not say which part came first, the send names the first).
Anything less is unknown, never NOT_DONE: Vonage documents neither how soon a message appears in
its records nor whether a part it refused appears, and a page ends at 1000 records. The Reports
API is a paid product; an account without it is refused (403), read as unknown, so its sends
stay ambiguous. A configured `base_url` serves the Reports API too. An operation id longer than
client-ref's 40 characters was sent without one: it cannot be looked up.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from providers.adapter import api_key, base_url, basic_auth, json_list
from providers.models import Sms
from providers.sms._common import reveal, sender
from resilient import registry
from resilient.errors import ResilientError
from resilient.lookup import CLOCK_SKEW, DONE, UNKNOWN, Found
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://rest.nexmo.com"
REPORTS_API = "https://api.nexmo.com"
CLIENT_REF_LIMIT = 40
REPORT_SPAN = 86400  # seconds: the most one synchronous Reports query covers
REFUSED = frozenset({"rejected"})  # a record of a part Vonage or the network refused

_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")  # each takes two septets: an escape, then itself
GSM_ALPHABET = frozenset(_GSM_BASIC) | GSM_EXTENSION

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
        form = {
            "api_key": api_key(provider),
            "api_secret": self._api_secret(provider),
            "from": sender(model, provider).removeprefix("+"),
            "to": model.to.removeprefix("+"),
            "text": model.body,
        }
        if not set(model.body) <= GSM_ALPHABET:
            form["type"] = "unicode"
        if len(operation_id) <= CLIENT_REF_LIMIT:
            form["client-ref"] = operation_id
        return httpx.Request("POST", base_url(provider, API) + "/sms/json", data=form)

    def lookup(
        self, model: Sms, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        if len(operation_id) > CLIENT_REF_LIMIT:
            raise ResilientError(
                f"provider {provider.name!r}: an operation id over {CLIENT_REF_LIMIT} characters "
                "is sent without client-ref, so no record of it can be matched"
            )
        key = api_key(provider)
        start = math.floor(since - CLOCK_SKEW)
        end = min(math.ceil(time.time() + CLOCK_SKEW), start + REPORT_SPAN)
        return httpx.Request(
            "GET",
            base_url(provider, REPORTS_API) + "/v2/reports/records",
            headers={"Authorization": basic_auth(key, self._api_secret(provider))},
            params={
                "account_id": key,
                "product": "SMS",
                "direction": "outbound",
                "date_start": _iso(start),
                "date_end": _iso(end),
                "to": model.to.removeprefix("+"),
            },
        )

    def found(self, response: httpx.Response, model: Sms, operation_id: str, since: float) -> Found:
        records = json_list(response, "records")
        if records is None:
            return Found(UNKNOWN, detail="the Reports answer had no records array")
        window = since - CLOCK_SKEW
        mine = [
            record
            for record in records
            if isinstance(record, dict)
            and record.get("client_ref") == operation_id
            and (_epoch(record.get("date_received")) or 0.0) >= window
        ]
        if not mine:
            return Found(UNKNOWN, detail="no record with this client-ref yet: no proof")
        refused = [r for r in mine if r.get("status") in REFUSED]
        if refused:
            return Found(UNKNOWN, detail=f"a part is {refused[0].get('status')}: not whole")
        ids = list(dict.fromkeys(str(r["message_id"]) for r in mine if r.get("message_id")))
        needed = segments(model.body)
        if len(ids) < needed:
            return Found(UNKNOWN, detail=f"{len(ids)} of its {needed} parts found: not whole")
        return Found(DONE, ids[0], f"found {ids[0]}")

    def _api_secret(self, provider: ProviderRuntime) -> str:
        if self._secret is None:
            raise ResilientError(f"provider {provider.name!r} has no api_secret in its config")
        return self._secret

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


def segments(text: str) -> int:
    """How many parts Vonage sends `text` in: 160 GSM septets fit one, 153 each part of a longer
    one; text outside GSM goes as UCS-2, 70 code units in one, 67 each part."""
    if set(text) <= GSM_ALPHABET:
        units, single, each = len(text) + sum(c in GSM_EXTENSION for c in text), 160, 153
    else:
        units, single, each = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / each)


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _epoch(value: object) -> float | None:
    """An ISO 8601 time as Vonage writes it ("2020-06-04T11:55:42+0000") in epoch seconds."""
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", str(value).replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


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
