"""SendGrid: `POST https://api.sendgrid.com/v3/mail/send` (v3 Mail Send), `Authorization: Bearer`.

One personalization carries to/cc/bcc; `content` lists text/plain before text/html, as SendGrid
requires; attachments are base64 with `disposition: attachment`; headers, categories (our tags)
and custom_args (our metadata) sit at message level. SendGrid answers 202 with an empty body and
the message id in `X-Message-Id`. It has no idempotency key: a repeat sends the mail again.

Every message carries our operation id as the custom arg `resilient-operation-id`, beside the
caller's metadata, so that a send whose outcome is in doubt can be looked up in the Email
Activity API: `GET /v3/messages?query=(unique_args['resilient-operation-id']="<id>") AND
last_event_time>=TIMESTAMP "<since>"` (https://www.twilio.com/docs/sendgrid/for-developers/
sending-email/getting-started-email-activity-api#query-reference). Custom args are the query
language's `unique_args`. A message's `last_event_time` is never before its creation, so the
time term keeps every message created since the claim, less our clock skew.

That API is a paid add-on (additional email activity history), which the API key must also be
granted. Without it SendGrid refuses the query: a 400, as for any endpoint outside the plan,
reported with "authorization required" (a key not granted it: 403 "access forbidden"); past its
6 queries a minute, a 429. Any answer but a 200 reads as unknown: without the add-on, a SendGrid
send whose outcome is ambiguous cannot be reconciled and stays ambiguous.

A message found is DONE. The feed lists one message per recipient, whose `msg_id` is the send's
`X-Message-Id` followed by a dot and SendGrid's per-recipient suffix
(https://support.sendgrid.com/hc/en-us/articles/35804743679259); DONE carries the part before the
dot, the id a send answered with. Nothing found proves nothing: the feed is not real time
(SendGrid points to its Event Webhook for that), and EU regional subusers have no data in it at
all, so an empty answer is unknown, never NOT_DONE.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import httpx

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url, json_list
from providers.email._common import EMAIL_RULES, split_address
from providers.models import Email
from resilient.lookup import CLOCK_SKEW, DONE, UNKNOWN, Found
from resilient.runtime import ProviderRuntime

API = "https://api.sendgrid.com"
OPERATION_ARG = "resilient-operation-id"
LOOKUP_LIMIT = 10  # one message proves the send; a few more survive the time check


class SendGridAdapter:
    honours_idempotency_key = False

    def build(self, model: Email, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            base_url(provider, API) + "/v3/mail/send",
            headers={"Authorization": f"Bearer {api_key(provider)}"},
            json=body(model, operation_id),
        )

    def message_id(self, response: httpx.Response) -> str | None:
        message_id: str | None = response.headers.get("x-message-id")
        return message_id

    def lookup(
        self, model: Email, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        return httpx.Request(
            "GET",
            base_url(provider, API) + "/v3/messages",
            headers={"Authorization": f"Bearer {api_key(provider)}"},
            params={"query": activity_query(operation_id, since), "limit": str(LOOKUP_LIMIT)},
        )

    def found(
        self, response: httpx.Response, model: Email, operation_id: str, since: float
    ) -> Found:
        messages = json_list(response, "messages")
        if messages is None:
            return Found(UNKNOWN, detail="the Email Activity answer had no messages array")
        window = since - CLOCK_SKEW
        for message in messages:
            if not isinstance(message, dict) or not message.get("msg_id"):
                continue
            last_event = _epoch(message.get("last_event_time"))
            if last_event is not None and last_event >= window:
                msg_id = str(message["msg_id"])
                return Found(DONE, msg_id.partition(".")[0], f"found {msg_id}")
        return Found(UNKNOWN, detail="not in the Email Activity feed, which lags: no proof")


def body(email: Email, operation_id: str) -> dict[str, Any]:
    """The v3 mail/send JSON for `email`, tagged with the operation it is sent under."""
    personalization: dict[str, Any] = {"to": _addresses(email.to)}
    if email.cc:
        personalization["cc"] = _addresses(email.cc)
    if email.bcc:
        personalization["bcc"] = _addresses(email.bcc)
    content = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", email.text), ("text/html", email.html))
        if value is not None
    ]
    message: dict[str, Any] = {
        "personalizations": [personalization],
        "from": _address(email.sender),
        "subject": email.subject,
        "content": content,
    }
    if email.reply_to:
        message["reply_to"] = _address(email.reply_to)
    if email.attachments:
        message["attachments"] = [
            {
                "content": base64.b64encode(a.content).decode(),
                "filename": a.filename,
                "type": a.content_type,
                "disposition": "attachment",
            }
            for a in email.attachments
        ]
    if email.headers:
        message["headers"] = dict(email.headers)
    if email.tags:
        message["categories"] = list(email.tags)
    message["custom_args"] = {**email.metadata, OPERATION_ARG: operation_id}
    return message


def activity_query(operation_id: str, since: float) -> str:
    """The Email Activity query for messages sent under `operation_id` since `since`."""
    value = operation_id.replace("\\", "\\\\").replace('"', '\\"')
    window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - CLOCK_SKEW))
    return f'(unique_args[\'{OPERATION_ARG}\']="{value}") AND last_event_time>=TIMESTAMP "{window}"'


def _epoch(value: object) -> float | None:
    """An ISO 8601 time ("2017-10-13T18:56:21Z") in epoch seconds, or None."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _address(address: str) -> dict[str, str]:
    name, bare = split_address(address)
    return {"email": bare, "name": name} if name else {"email": bare}


def _addresses(addresses: Iterable[str]) -> list[dict[str, str]]:
    return [_address(a) for a in addresses]


register_sdk_kind("sendgrid", factory=lambda settings: SendGridAdapter(), classify=EMAIL_RULES)
