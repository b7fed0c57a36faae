"""Postmark: `POST https://api.postmarkapp.com/email`, header `X-Postmark-Server-Token`.

JSON: comma-separated `To`/`Cc`/`Bcc`, `TextBody`/`HtmlBody`, `ReplyTo`, `Headers` as
`[{Name, Value}]`, `Metadata`, `Attachments` as `[{Name, Content (base64), ContentType}]` and
`MessageStream` (the `message_stream` option, "outbound" by default). Postmark takes one `Tag`
per message: the first of our tags (the others have nowhere to go). It answers
`{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}`; errors carry an
`ErrorCode` (422 for a message it will not send). No idempotency key.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from providers.adapter import api_key, base_url, json_field
from providers.email._common import EMAIL_RULES, formatted
from providers.models import Email
from resilient import registry
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.postmarkapp.com"


class PostmarkOptions(BaseModel):
    """Config keys of a "postmark" provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_stream: str = "outbound"  # the server's transactional stream unless told otherwise


class PostmarkAdapter:
    honours_idempotency_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.stream = PostmarkOptions.model_validate(dict(settings.options)).message_stream

    def build(self, model: Email, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            base_url(provider, API) + "/email",
            headers={"Accept": "application/json", "X-Postmark-Server-Token": api_key(provider)},
            json=body(model, self.stream),
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "MessageID")


def body(email: Email, stream: str) -> dict[str, Any]:
    """The /email JSON for `email` on message stream `stream`."""
    message: dict[str, Any] = {
        "From": formatted(email.sender),
        "To": ", ".join(formatted(a) for a in email.to),
        "Subject": email.subject,
        "MessageStream": stream,
    }
    for name, addresses in (("Cc", email.cc), ("Bcc", email.bcc)):
        if addresses:
            message[name] = ", ".join(formatted(a) for a in addresses)
    if email.text is not None:
        message["TextBody"] = email.text
    if email.html is not None:
        message["HtmlBody"] = email.html
    if email.reply_to:
        message["ReplyTo"] = formatted(email.reply_to)
    if email.headers:
        message["Headers"] = [{"Name": n, "Value": v} for n, v in email.headers.items()]
    if email.tags:
        message["Tag"] = email.tags[0]
    if email.metadata:
        message["Metadata"] = dict(email.metadata)
    if email.attachments:
        message["Attachments"] = [
            {
                "Name": a.filename,
                "Content": base64.b64encode(a.content).decode(),
                "ContentType": a.content_type,
            }
            for a in email.attachments
        ]
    return message


registry.register(
    registry.ProviderKind("postmark", "email", PostmarkOptions, PostmarkAdapter, EMAIL_RULES)
)
