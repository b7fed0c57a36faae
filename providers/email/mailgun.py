"""Mailgun: `POST https://api.mailgun.net/v3/{domain}/messages`, Basic auth `api:<key>`.

A form: repeated `to`/`cc`/`bcc`, `h:<Name>` for each header (`h:Reply-To` too), repeated
`o:tag`, `v:<key>` for each metadata entry; multipart/form-data with one `attachment` part per
file when there are attachments, urlencoded otherwise (Mailgun takes both). Mailgun answers
`{"id": "<...@domain>", "message": "Queued. Thank you."}`. EU domains live on
`https://api.eu.mailgun.net`: set it as the provider's `base_url`. No idempotency key.

Every message also carries our operation id as the user variable `v:resilient-operation-id`
(it wins over a metadata entry of that name). Mailgun hands user variables back on each event
of the message (https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/
send-attachments, "Attaching Metadata to Messages"), so an ambiguous send is looked for in the
Events API (https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/events/
get-v3-domain_name-events): from `since` less the clock skew, ascending, filtered by
`user-variables`. That filter is not in Mailgun's table of filter fields, so each event is
matched on its own `user-variables` too: an ignored filter costs a miss, never a false match.
Any event but `rejected` proves Mailgun took the message; its `message-id` comes without the
angle brackets of the send's answer, which are put back.

An answer without our event proves nothing: Mailgun documents that events reach its store late
and out of order, and that a page of recent events is not to be trusted until it is older than
some threshold (half an hour in its example; https://documentation.mailgun.com/docs/mailgun/
user-manual/events/, "Event Polling"). The live path asks a second after the send, and no
lookup knows when the send landed relative to that threshold, so such an answer is UNKNOWN:
the outcome stays ambiguous rather than risk a second copy of the mail.
"""

from __future__ import annotations

import json
import math

import httpx
from pydantic import BaseModel, ConfigDict, Field

from providers.adapter import api_key, base_url, basic_auth, json_field, json_list
from providers.email._common import EMAIL_RULES, formatted
from providers.models import Email
from resilient import registry
from resilient.lookup import CLOCK_SKEW, DONE, UNKNOWN, Found
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.mailgun.net"
OPERATION_VARIABLE = "resilient-operation-id"
EVENTS_PAGE = 300  # the most Mailgun returns on one page


class MailgunOptions(BaseModel):
    """Config keys of a "mailgun" provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")  # mg.example.com


class MailgunAdapter:
    honours_idempotency_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.domain = MailgunOptions.model_validate(dict(settings.options)).domain

    def build(self, model: Email, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        files = [("attachment", (a.filename, a.content, a.content_type)) for a in model.attachments]
        return httpx.Request(
            "POST",
            f"{base_url(provider, API)}/v3/{self.domain}/messages",
            headers={"Authorization": basic_auth("api", api_key(provider))},
            data=form(model, operation_id),
            files=files or None,
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")

    def lookup(
        self, model: Email, provider: ProviderRuntime, operation_id: str, since: float
    ) -> httpx.Request:
        variables = json.dumps({OPERATION_VARIABLE: operation_id}, separators=(",", ":"))
        return httpx.Request(
            "GET",
            f"{base_url(provider, API)}/v3/{self.domain}/events",
            headers={"Authorization": basic_auth("api", api_key(provider))},
            params={
                "begin": str(math.floor(since - CLOCK_SKEW)),
                "ascending": "yes",
                "limit": str(EVENTS_PAGE),
                "user-variables": variables,
            },
        )

    def found(
        self, response: httpx.Response, model: Email, operation_id: str, since: float
    ) -> Found:
        items = json_list(response, "items")
        if items is None:
            return Found(UNKNOWN, detail="the events answer had no items array")
        window = since - CLOCK_SKEW
        for event in items:
            if _ours(event, operation_id, window):
                message_id = _message_id(event)
                return Found(DONE, message_id, f"found {message_id or 'an event without an id'}")
        return Found(UNKNOWN, detail="no event of this message yet (Mailgun's events come late)")


def form(email: Email, operation_id: str) -> dict[str, str | list[str]]:
    """The message fields for `email`, attachments aside."""
    fields: dict[str, str | list[str]] = {
        "from": formatted(email.sender),
        "to": [formatted(a) for a in email.to],
        "subject": email.subject,
    }
    for name, addresses in (("cc", email.cc), ("bcc", email.bcc)):
        if addresses:
            fields[name] = [formatted(a) for a in addresses]
    if email.text is not None:
        fields["text"] = email.text
    if email.html is not None:
        fields["html"] = email.html
    for header, value in email.headers.items():
        fields[f"h:{header}"] = value
    if email.reply_to:
        fields["h:Reply-To"] = formatted(email.reply_to)
    if email.tags:
        fields["o:tag"] = list(email.tags)
    for key, value in email.metadata.items():
        fields[f"v:{key}"] = value
    fields[f"v:{OPERATION_VARIABLE}"] = operation_id
    return fields


def _ours(event: object, operation_id: str, window: float) -> bool:
    """Whether `event` is one of our message, since `window`, from a Mailgun that took it."""
    if not isinstance(event, dict) or event.get("event") == "rejected":
        return False
    variables = event.get("user-variables")
    timestamp = event.get("timestamp")
    return (
        isinstance(variables, dict)
        and variables.get(OPERATION_VARIABLE) == operation_id
        and isinstance(timestamp, (int, float))
        and timestamp >= window
    )


def _message_id(event: dict[str, object]) -> str | None:
    """The event's message id in the send's `<...>` form."""
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    value = headers.get("message-id") if isinstance(headers, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


registry.register(
    registry.ProviderKind(
        "mailgun",
        "email",
        MailgunOptions,
        MailgunAdapter,
        # 404: the domain is not on this account or region, this provider's configuration
        (*EMAIL_RULES, ("404", "failover")),
    )
)
