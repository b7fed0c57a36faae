"""SendGrid: `POST https://api.sendgrid.com/v3/mail/send` (v3 Mail Send), `Authorization: Bearer`.

One personalization carries to/cc/bcc; `content` lists text/plain before text/html, as SendGrid
requires; attachments are base64 with `disposition: attachment`; headers, categories (our tags)
and custom_args (our metadata) sit at message level. SendGrid answers 202 with an empty body and
the message id in `X-Message-Id`. It has no idempotency key: a repeat sends the mail again.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import httpx

from providers._sdk import register_sdk_kind
from providers.adapter import api_key, base_url
from providers.email._common import EMAIL_RULES, split_address
from providers.models import Email
from resilient.runtime import ProviderRuntime

API = "https://api.sendgrid.com"


class SendGridAdapter:
    honours_idempotency_key = False

    def build(self, model: Email, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            base_url(provider, API) + "/v3/mail/send",
            headers={"Authorization": f"Bearer {api_key(provider)}"},
            json=body(model),
        )

    def message_id(self, response: httpx.Response) -> str | None:
        message_id: str | None = response.headers.get("x-message-id")
        return message_id


def body(email: Email) -> dict[str, Any]:
    """The v3 mail/send JSON for `email`."""
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
    if email.metadata:
        message["custom_args"] = dict(email.metadata)
    return message


def _address(address: str) -> dict[str, str]:
    name, bare = split_address(address)
    return {"email": bare, "name": name} if name else {"email": bare}


def _addresses(addresses: Iterable[str]) -> list[dict[str, str]]:
    return [_address(a) for a in addresses]


register_sdk_kind("sendgrid", factory=lambda settings: SendGridAdapter(), classify=EMAIL_RULES)
