"""Mailgun on the simulator: `POST /v3/{domain}/messages`, Basic auth `api:<key>`, the message as
a urlencoded or multipart/form-data form, answering `{"id": "<...@domain>", "message": "Queued.
Thank you."}` or Mailgun's `{"message": ...}` errors. Point a provider's `base_url` at
`sim.url(prefix)`; what was queued is on `state.sent`.

Each queued message records an `accepted` event per recipient, with its `v:` fields as
`user-variables` and its message-id without angle brackets, as Mailgun's do. `GET /v3/{domain}/
events` pages through them: a time range (`begin`, `end` or `ascending`, epoch seconds or RFC
2822), `limit` (300 at most), the filters `event`, `recipient`, `message-id`, `tags` and
`user-variables` (a JSON map every variable of which must match), and `paging` URLs (next,
previous, first, last) that are always there and answer an empty page past either end.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import basic_credentials, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

DEFAULT_LIMIT, MAX_LIMIT = 100, 300
Events = list[dict[str, Any]]


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
    created: float = field(default_factory=time.time)

    def one(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    @property
    def variables(self) -> dict[str, str]:
        """The user variables (`v:` fields), as events carry them."""
        return {k[2:]: v[-1] for k, v in self.fields.items() if k.startswith("v:") and v}


class MailgunState:
    """The simulated Mailgun account. `domains`, when set, are the only sending domains it
    knows (others answer 404, as an unknown or other-region domain does). `events` holds each
    domain's events, oldest first."""

    def __init__(self, prefix: str = "") -> None:
        self.sent: list[MailgunMessage] = []
        self.events: dict[str, Events] = {}
        self.domains: set[str] | None = None
        self._prefix = prefix
        self._lock = threading.Lock()

    def messages(self, request: SimRequest) -> SimResponse:
        denied = self._deny(request)
        if denied is not None:
            return denied
        domain = request.params["domain"]
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
        message = MailgunMessage(message_id, domain, fields, attachments)
        events = [_accepted(message, recipient) for recipient in _recipients(fields)]
        with self._lock:
            self.sent.append(message)
            self.events.setdefault(domain, []).extend(events)
        return SimResponse.json({"id": message_id, "message": "Queued. Thank you."})

    def list_events(self, request: SimRequest) -> SimResponse:
        denied = self._deny(request)
        if denied is not None:
            return denied
        query = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        return self._page(request, query, 0, None)

    def events_page(self, request: SimRequest) -> SimResponse:
        """A `paging` URL: the first request's query and where the page starts (and ends)."""
        denied = self._deny(request)
        if denied is not None:
            return denied
        token = request.params["page"]
        try:
            page = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            query, start, end = dict(page["q"]), int(page["o"]), page["e"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            return error(400, "Invalid page URL")
        return self._page(request, query, start, None if end is None else int(end))

    def _deny(self, request: SimRequest) -> SimResponse | None:
        credentials = basic_credentials(request)
        if credentials is None or credentials[0] != "api" or not credentials[1]:
            return SimResponse(401, {"content-type": "text/plain"}, b"Forbidden")
        domain = request.params["domain"]
        if self.domains is not None and domain not in self.domains:
            return error(404, f"Domain not found: {domain}")
        return None

    def _page(
        self, request: SimRequest, query: dict[str, str], start: int, end: int | None
    ) -> SimResponse:
        domain = request.params["domain"]
        try:
            matches, limit = _select(query), _limit(query)
        except ValueError as exc:
            return error(400, str(exc))
        with self._lock:
            found = matches(self.events.get(domain, []))
        stop = start + limit if end is None else min(end, start + limit)
        items = found[start:stop] if start >= 0 else []
        base = f"http://{request.headers.get('host', 'localhost')}{self._prefix}"
        url = f"{base}/v3/{domain}/events/"

        def page(first: int, last: int | None) -> str:
            token = json.dumps({"q": query, "o": first, "e": last}, separators=(",", ":"))
            return url + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")

        paging = {
            "next": page(start + len(items), None),
            "previous": page(max(start - limit, 0), max(start, 0)),
            "first": page(0, None),
            "last": page(max(len(found) - limit, 0), None),
        }
        return SimResponse.json({"items": items, "paging": paging})


def mount(sim: Simulator, prefix: str) -> MailgunState:
    state = MailgunState(prefix)
    sim.route("POST", f"{prefix}/v3/{{domain}}/messages", state.messages)
    sim.route("GET", f"{prefix}/v3/{{domain}}/events", state.list_events)
    sim.route("GET", f"{prefix}/v3/{{domain}}/events/{{page}}", state.events_page)
    return state


def _recipients(fields: dict[str, list[str]]) -> list[str]:
    values = [v for name in ("to", "cc", "bcc") for v in fields.get(name, [])]
    return [address for _, address in getaddresses(values) if address]


def _accepted(message: MailgunMessage, recipient: str) -> dict[str, Any]:
    """Mailgun's `accepted` event of `message` for one recipient."""
    sender = getaddresses([message.one("from") or ""])[0][1]
    return {
        "event": "accepted",
        "id": secrets.token_urlsafe(16),
        "timestamp": message.created,
        "log-level": "info",
        "method": "http",
        "envelope": {"targets": recipient, "transport": "smtp", "sender": sender},
        "flags": {"is-authenticated": True, "is-test-mode": message.one("o:testmode") == "yes"},
        "message": {
            "headers": {
                "to": ", ".join(message.fields.get("to", [])),
                "message-id": message.id.strip("<>"),
                "from": message.one("from"),
                "subject": message.one("subject"),
            },
            "attachments": [
                {"filename": a.filename, "content-type": a.content_type, "size": len(a.content)}
                for a in message.attachments
            ],
            "size": sum(len(v) for values in message.fields.values() for v in values),
        },
        "recipient": recipient,
        "recipient-domain": recipient.rpartition("@")[2],
        "campaigns": [],
        "tags": list(message.fields.get("o:tag", [])),
        "user-variables": message.variables,
    }


def _select(query: dict[str, str]) -> Callable[[Events], Events]:
    """The query's time range, direction and filters, as a function from a domain's events
    (oldest first) to the matching ones in the order they are paged."""
    now = time.time()
    begin = _when(query["begin"], "begin") if "begin" in query else now
    end = _when(query["end"], "end") if "end" in query else None
    ascending = query.get("ascending")
    if ascending not in (None, "yes", "no"):
        raise ValueError("'ascending' must be 'yes' or 'no'")
    if end is None and ascending is None:
        if "begin" in query:
            raise ValueError("Either 'end' or 'ascending' must be specified")
        ascending = "no"
    up = end > begin if end is not None else ascending == "yes"
    if end is not None and ascending is not None and up != (ascending == "yes"):
        raise ValueError("'ascending' disagrees with the range from 'begin' to 'end'")
    low, high = (begin, end) if up else (end, begin)
    wanted = {t.strip() for t in query.get("event", "").split(" OR ") if t.strip()}
    variables = _variables(query)

    message_id = query["message-id"].strip("<>") if "message-id" in query else None

    def matches(events: Events) -> Events:
        found = [
            e
            for e in events
            if (low is None or e["timestamp"] >= low)
            and (high is None or e["timestamp"] <= high)
            and (not wanted or e["event"] in wanted)
            and query.get("recipient") in (None, e.get("recipient"))
            and message_id in (None, e["message"]["headers"]["message-id"])
            and ("tags" not in query or query["tags"] in e.get("tags", []))
            and all(e.get("user-variables", {}).get(k) == v for k, v in variables.items())
        ]
        return found if up else found[::-1]

    return matches


def _when(value: str, name: str) -> float:
    """A time in epoch seconds or RFC 2822, as Mailgun takes both."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' is not a valid date: {value}") from None


def _limit(query: dict[str, str]) -> int:
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ValueError("'limit' must be a number") from None
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"'limit' must be between 1 and {MAX_LIMIT}")
    return limit


def _variables(query: dict[str, str]) -> dict[str, str]:
    if "user-variables" not in query:
        return {}
    try:
        variables = json.loads(query["user-variables"])
    except ValueError:
        raise ValueError("'user-variables' must be a JSON object") from None
    if not isinstance(variables, dict):
        raise ValueError("'user-variables' must be a JSON object")
    return {str(k): str(v) for k, v in variables.items()}


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
