"""Mailgun: `POST https://api.mailgun.net/v3/{domain}/messages`, Basic auth `api:<key>`.

A form: repeated `to`/`cc`/`bcc`, `h:<Name>` for each header (`h:Reply-To` too), repeated
`o:tag`, `v:<key>` for each metadata entry; multipart/form-data with one `attachment` part per
file when there are attachments, urlencoded otherwise (Mailgun takes both). Mailgun answers
`{"id": "<...@domain>", "message": "Queued. Thank you."}`. EU domains live on
`https://api.eu.mailgun.net`: set it as the provider's `base_url`. No idempotency key.
"""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field

from providers.adapter import api_key, base_url, basic_auth, json_field
from providers.email._common import EMAIL_RULES, formatted
from providers.models import Email
from resilient import registry
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.mailgun.net"


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
            data=form(model),
            files=files or None,
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")


def form(email: Email) -> dict[str, str | list[str]]:
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
    return fields


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
