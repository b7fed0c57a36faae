"""Mailgun on the simulator: `POST /v3/{domain}/messages`, Basic auth `api:<key>`, the message as
a urlencoded or multipart/form-data form, answering `{"id": "<...@domain>", "message": "Queued.
Thank you."}` or Mailgun's `{"message": ...}` errors. Point a provider's `base_url` at
`sim.url(prefix)`; what was queued is on `state.sent`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

from resilient.testing.routes import basic_credentials, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator


def error(status: int, message: str) -> SimResponse:
    """An answer in Mailgun's error shape."""
    return SimResponse.json({"message": message}, status=status)


@dataclass(frozen=True)
class MailgunAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class MailgunMessage:
    """One queued message: every form field's values, in order, and the attached files."""

    id: str
    domain: str
    fields: dict[str, list[str]]
    attachments: list[MailgunAttachment] = field(default_factory=list)

    def one(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


class MailgunState:
    """The simulated Mailgun account. `domains`, when set, are the only sending domains it
    knows (others answer 404, as an unknown or other-region domain does)."""

    def __init__(self) -> None:
        self.sent: list[MailgunMessage] = []
        self.domains: set[str] | None = None
        self._lock = threading.Lock()

    def messages(self, request: SimRequest) -> SimResponse:
        credentials = basic_credentials(request)
        if credentials is None or credentials[0] != "api" or not credentials[1]:
            return SimResponse(401, {"content-type": "text/plain"}, b"Forbidden")
        domain = request.params["domain"]
        if self.domains is not None and domain not in self.domains:
            return error(404, f"Domain not found: {domain}")
        parsed = _form(request)
        if parsed is None:
            return error(400, "Bad request: expected a form")
        fields, attachments = parsed
        for name in ("from", "to", "subject"):
            if not fields.get(name):
                return error(400, f"'{name}' parameter is missing")
        if not any(fields.get(name) for name in ("text", "html", "amp-html", "template")):
            return error(400, "Need at least one of 'text', 'html', 'amp-html' or 'template'")
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{new_id('', 16)}@{domain}>"
        with self._lock:
            self.sent.append(MailgunMessage(message_id, domain, fields, attachments))
        return SimResponse.json({"id": message_id, "message": "Queued. Thank you."})


def mount(sim: Simulator, prefix: str) -> MailgunState:
    state = MailgunState()
    sim.route("POST", f"{prefix}/v3/{{domain}}/messages", state.messages)
    return state


def _form(
    request: SimRequest,
) -> tuple[dict[str, list[str]], list[MailgunAttachment]] | None:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_qs(request.body.decode(), keep_blank_values=True), []
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    parsed = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields: dict[str, list[str]] = {}
    attachments: list[MailgunAttachment] = []
    for part in parsed.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(content, bytes):
            return None
        filename = part.get_filename()
        if filename is None:
            fields.setdefault(name, []).append(content.decode())
        elif name in ("attachment", "inline"):
            attachments.append(MailgunAttachment(filename, part.get_content_type(), content))
    return fields, attachments
