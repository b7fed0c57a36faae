"""SendGrid on the simulator: v3 mail send, answering 202 with an empty body and an X-Message-Id,
or SendGrid's `{"errors": [{"message", "field", "help"}]}`; and the Email Activity API's
`GET /v3/messages?query=...&limit=...`, one abbreviated message per recipient, most recent first,
for the query language's basic terms joined by AND. Point a client's host at `sim.url(prefix)`;
what was accepted is on `state.sent`, its recipients' messages (with their custom args and
creation time) on `state.activity`. `state.email_activity = False` is an account without the
Email Activity add-on, which SendGrid refuses with a 400 "authorization required".
"""

from __future__ import annotations

import operator
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import bearer_token
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TERM = re.compile(
    r"""\s*\(?\s*(?:unique_args\['(?P<arg>[^']*)'\]|(?P<field>[a-z_]+))\s*"""
    r"""(?P<op>>=|<=|!=|=|>|<)\s*(?P<timestamp>TIMESTAMP\s+)?"(?P<value>(?:[^"\\]|\\.)*)"\s*\)?\s*"""
)
_AND = re.compile(r"AND\s+")
_TEXT_FIELDS = frozenset({"msg_id", "from_email", "subject", "to_email", "status"})
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def error(status: int, *problems: tuple[str | None, str, str | None]) -> SimResponse:
    """An answer in SendGrid's error shape: one entry per (field, message, help anchor)."""
    errors = [
        {"message": message, "field": field, "help": None if anchor is None else _HELP + anchor}
        for field, message, anchor in problems
    ]
    return SimResponse.json({"errors": errors}, status=status)


@dataclass(frozen=True)
class Activity:
    """One recipient's message in the Email Activity feed: what `GET /v3/messages` lists, the
    custom args it can be queried by, and when it was created (epoch seconds)."""

    message: dict[str, Any]
    unique_args: dict[str, str]
    created: float


class SendGridState:
    """The mail the simulated SendGrid accepted: (X-Message-Id, request body) pairs, and the
    Email Activity feed's messages, one per recipient."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.activity: list[Activity] = []
        self.email_activity = True  # the account bought the Email Activity history add-on
        self._lock = threading.Lock()

    def mail_send(self, request: SimRequest) -> SimResponse:
        if bearer_token(request) is None:
            return error(401, (None, "authorization required", None))
        try:
            body = request.json()
        except ValueError:
            return error(400, (None, "Bad Request", None))
        if not isinstance(body, dict):
            return error(400, (None, "Bad Request", None))
        problems = _problems(body)
        if problems:
            return error(400, *problems)
        message_id = secrets.token_urlsafe(16)  # 22 characters, as SendGrid's
        created = time.time()
        with self._lock:
            self.sent.append((message_id, body))
            self.activity.extend(_activity(message_id, body, created))
        return SimResponse(202, {"x-message-id": message_id}, b"")

    def messages(self, request: SimRequest) -> SimResponse:
        """Filter all messages (https://www.twilio.com/docs/sendgrid/api-reference/
        email-activity/filter-all-messages)."""
        if bearer_token(request) is None:
            return error(401, (None, "authorization required", None))
        if not self.email_activity:
            return SimResponse.json({"errors": [{"message": "authorization required"}]}, 400)
        query = {key: values[-1] for key, values in parse_qs(request.query).items()}
        limit = query.get("limit", "10")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return error(400, ("limit", "limit must be between 1 and 1000", None))
        try:
            terms = _terms(query.get("query", ""))
        except ValueError as exc:
            return SimResponse.json({"errors": [{"message": str(exc)}]}, 400)
        with self._lock:
            feed = list(reversed(self.activity))
        found = [a.message for a in feed if all(_holds(term, a) for term in terms)]
        return SimResponse.json({"messages": found[: int(limit)]})


def mount(sim: Simulator, prefix: str) -> SendGridState:
    state = SendGridState()
    sim.route("POST", f"{prefix}/v3/mail/send", state.mail_send)
    sim.route("GET", f"{prefix}/v3/messages", state.messages)
    return state


def _activity(message_id: str, body: dict[str, Any], created: float) -> list[Activity]:
    """The feed's messages for one accepted send: one per recipient, each with a msg_id that
    begins with the send's X-Message-Id, and the custom args of its personalization."""
    sender = body["from"]["email"]
    shared = body.get("custom_args") or {}
    stamp = _iso(created)
    found: list[Activity] = []
    for personalization in body["personalizations"]:
        args = {**shared, **(personalization.get("custom_args") or {})}
        subject = personalization.get("subject") or body.get("subject", "")
        for field in ("to", "cc", "bcc"):
            for address in personalization.get(field) or []:
                suffix = f"filterdrecv-{secrets.token_hex(5)}-1-{int(created):X}-{len(found)}.0"
                message = {
                    "from_email": sender,
                    "msg_id": f"{message_id}.{suffix}",
                    "subject": subject,
                    "to_email": address["email"],
                    "status": "processed",
                    "opens_count": 0,
                    "clicks_count": 0,
                    "last_event_time": stamp,
                }
                found.append(Activity(message, {str(k): str(v) for k, v in args.items()}, created))
    return found


def _terms(query: str) -> list[tuple[str | None, str | None, str, bool, str]]:
    """The query's terms (custom arg, field, operator, timestamp?, value), joined by AND."""
    terms: list[tuple[str | None, str | None, str, bool, str]] = []
    position = 0
    while position < len(query):
        term = _TERM.match(query, position)
        if term is None:
            raise ValueError(f"invalid syntax: cannot read the query at {query[position:]!r}")
        field = term["field"]
        if field is not None and field not in _TEXT_FIELDS | {"last_event_time"}:
            raise ValueError(f"invalid syntax: '{field}' is not a known field")
        value = re.sub(r"\\(.)", r"\1", term["value"])
        terms.append((term["arg"], field, term["op"], bool(term["timestamp"]), value))
        position = term.end()
        if position < len(query):
            joined = _AND.match(query, position)
            if joined is None:
                raise ValueError(f"invalid syntax: expected AND at {query[position:]!r}")
            position = joined.end()
    return terms


def _holds(term: tuple[str | None, str | None, str, bool, str], activity: Activity) -> bool:
    arg, field, op, timestamp, value = term
    compare = _COMPARE[op]
    if arg is not None:
        return arg in activity.unique_args and bool(compare(activity.unique_args[arg], value))
    if field == "last_event_time":
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        wanted = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
        return timestamp and bool(compare(int(activity.created), int(wanted)))
    return bool(compare(str(activity.message.get(str(field))), value))


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _problems(body: dict[str, Any]) -> list[tuple[str | None, str, str | None]]:
    problems: list[tuple[str | None, str, str | None]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            (
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        )
        personalizations = []
    for index, personalization in enumerate(personalizations):
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            problems.append(
                (
                    f"personalizations.{index}.to",
                    "The to array is required for all personalization objects, and must have at "
                    "least one email object with a valid email address.",
                    "personalizations.to",
                )
            )
            continue
        for position, address in enumerate(to):
            email = address.get("email") if isinstance(address, dict) else None
            if not isinstance(email, str) or not _EMAIL.fullmatch(email):
                problems.append(
                    (
                        f"personalizations.{index}.to.{position}.email",
                        "Does not contain a valid address.",
                        "personalizations.to",
                    )
                )
    sender = body.get("from")
    email = sender.get("email") if isinstance(sender, dict) else None
    if email is None:
        problems.append(
            (
                "from",
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
            )
        )
    elif not isinstance(email, str) or not _EMAIL.fullmatch(email):
        problems.append(("from.email", "The from email does not contain a valid address.", "from"))
    templated = bool(body.get("template_id"))
    subjects = all(isinstance(p, dict) and p.get("subject") for p in personalizations)
    if not (templated or body.get("subject") or (personalizations and subjects)):
        problems.append(
            (
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    content = body.get("content")
    if not templated and (not isinstance(content, list) or not content):
        problems.append(
            (
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        )
    return problems
