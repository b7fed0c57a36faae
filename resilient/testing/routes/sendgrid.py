"""SendGrid on the simulator: v3 mail send, answering 202 with an empty body and an X-Message-Id,
or SendGrid's `{"errors": [{"message", "field", "help"}]}`. Point a client's host at
`sim.url(prefix)`; what was accepted is on `state.sent`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from resilient.testing.routes import bearer_token, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def error(status: int, *problems: tuple[str | None, str, str | None]) -> SimResponse:
    """An answer in SendGrid's error shape: one entry per (field, message, help anchor)."""
    errors = [
        {"message": message, "field": field, "help": None if anchor is None else _HELP + anchor}
        for field, message, anchor in problems
    ]
    return SimResponse.json({"errors": errors}, status=status)


class SendGridState:
    """The mail the simulated SendGrid accepted: (X-Message-Id, request body) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
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
        message_id = new_id("", 22)
        with self._lock:
            self.sent.append((message_id, body))
        return SimResponse(202, {"x-message-id": message_id}, b"")


def mount(sim: Simulator, prefix: str) -> SendGridState:
    state = SendGridState()
    sim.route("POST", f"{prefix}/v3/mail/send", state.mail_send)
    return state


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
