"""Postmark: `POST https://api.postmarkapp.com/email`, header `X-Postmark-Server-Token`.

JSON: comma-separated `To`/`Cc`/`Bcc`, `TextBody`/`HtmlBody`, `ReplyTo`, `Headers` as
`[{Name, Value}]`, `Metadata`, `Attachments` as `[{Name, Content (base64), ContentType}]` and
`MessageStream` (the `message_stream` option, "outbound" by default). Postmark takes one `Tag`
per message: the first of our tags (the others have nowhere to go). It answers
`{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}`; errors carry an
`ErrorCode` (422 for a message it will not send). No idempotency key.

Every message also carries our operation id in its `Metadata`, as `resilient-op-id`: Postmark
takes at most 10 metadata fields, names of up to 20 characters and values of up to 80
(https://postmarkapp.com/support/article/1125-custom-metadata-faq), so a longer id goes as its
SHA-256, and a model that already fills the 10 fields goes untagged. Metadata is searchable, so
an ambiguous send is looked for with the outbound message search
(https://postmarkapp.com/developer/api/messages-api, "Outbound message search";
`metadata_<name>=<value>` per the FAQ), on the provider's message stream (`messagestream`: a
broadcast stream is searched too). A message with our id, received since `since` less the
clock skew, is the one we sent; its `MessageID` is the send's.

No match proves nothing: Postmark documents no bound on how soon an accepted message can be
searched, and its message store can lag behind sending (its status history has the UI down while
mail was accepted and sent). So an empty search is UNKNOWN: the outcome stays ambiguous rather
than risk a second copy of the mail; a later retry asks again.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from providers.adapter import api_key, base_url, json_field, json_list
from providers.email._common import EMAIL_RULES, formatted
from providers.models import Email
from resilient import registry
from resilient.lookup import CLOCK_SKEW, DONE, UNKNOWN, Found
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.postmarkapp.com"
OPERATION_KEY = "resilient-op-id"  # within Postmark's 20 characters for a metadata name
MAX_METADATA_FIELDS = 10
MAX_METADATA_VALUE = 80
SEARCH_PAGE = 500  # the most Postmark's search returns at once
_FRACTION = re.compile(r"\.(\d+)")


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
            headers=_headers(provider),
            json=body(model, self.stream, operation_id),
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "MessageID")

    def lookup(
        self, model: Email, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        return httpx.Request(
            "GET",
            base_url(provider, API) + "/messages/outbound",
            headers=_headers(provider),
            params={
                "count": str(SEARCH_PAGE),
                "offset": "0",
                "messagestream": self.stream,
                f"metadata_{OPERATION_KEY}": operation_tag(operation_id),
            },
        )

    def found(
        self, response: httpx.Response, model: Email, operation_id: str, since: float
    ) -> Found:
        if OPERATION_KEY not in metadata(model, operation_id):
            return Found(UNKNOWN, detail="the message had no room for its operation id")
        messages = json_list(response, "Messages")
        if messages is None:
            return Found(UNKNOWN, detail="the search answer had no Messages array")
        tag, window = operation_tag(operation_id), since - CLOCK_SKEW
        for message in messages:
            if _ours(message, tag, window):
                message_id = message.get("MessageID")
                if message_id is None:
                    return Found(DONE, None, "found a message without an id")
                return Found(DONE, str(message_id), f"found {message_id}")
        return Found(UNKNOWN, detail="no message with this operation id (not searchable yet?)")


def operation_tag(operation_id: str) -> str:
    """The operation id as a metadata value: itself, or its SHA-256 when over Postmark's 80
    characters (an idempotency key may have 255)."""
    if len(operation_id) <= MAX_METADATA_VALUE:
        return operation_id
    return hashlib.sha256(operation_id.encode()).hexdigest()


def metadata(email: Email, operation_id: str) -> dict[str, str]:
    """The model's metadata and our operation id, which replaces an entry of its name (Postmark
    refuses names differing in case only) and is left out when the 10 fields are taken."""
    fields = {k: v for k, v in email.metadata.items() if k.lower() != OPERATION_KEY}
    if len(fields) < MAX_METADATA_FIELDS:
        fields[OPERATION_KEY] = operation_tag(operation_id)
    return fields


def body(email: Email, stream: str, operation_id: str) -> dict[str, Any]:
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
    message["Metadata"] = metadata(email, operation_id)
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


def _headers(provider: ProviderRuntime) -> dict[str, str]:
    return {"Accept": "application/json", "X-Postmark-Server-Token": api_key(provider)}


def _ours(message: object, tag: str, window: float) -> bool:
    """Whether a search result is our message, received since `window`."""
    if not isinstance(message, dict):
        return False
    fields = message.get("Metadata")
    received = _received(message.get("ReceivedAt"))
    return (
        isinstance(fields, dict)
        and fields.get(OPERATION_KEY) == tag
        and received is not None
        and received >= window
    )


def _received(value: object) -> float | None:
    """`ReceivedAt` (ISO 8601, with .NET's seven fraction digits) in epoch seconds. Without an
    offset it is read as UTC: Postmark's Eastern time then reads earlier, never wrongly recent."""
    if not isinstance(value, str):
        return None
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value.strip(), count=1)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


registry.register(
    registry.ProviderKind("postmark", "email", PostmarkOptions, PostmarkAdapter, EMAIL_RULES)
)
