"""Postmark on the simulator: `POST /email` with `X-Postmark-Server-Token`, JSON in and out,
answering `{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}` or Postmark's
`{"ErrorCode", "Message"}` errors (401 for the token, 422 for the message). Point a provider's
`base_url` at `sim.url(prefix)`; what was accepted is on `state.sent`.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from datetime import datetime, timezone
from email.utils import getaddresses
from typing import Any

from resilient.testing.simulator import SimRequest, SimResponse, Simulator

MAX_RECIPIENTS = 50


def error(status: int, code: int, message: str) -> SimResponse:
    """An answer in Postmark's error shape."""
    return SimResponse.json({"ErrorCode": code, "Message": message}, status=status)


class PostmarkState:
    """The simulated Postmark server: (MessageID, request body) of every message accepted."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def email(self, request: SimRequest) -> SimResponse:
        if not request.headers.get("x-postmark-server-token"):
            return error(
                401,
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please add "
                "a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            )
        try:
            body = request.json()
        except ValueError:
            return error(422, 402, "Received invalid JSON input.")
        if not isinstance(body, dict):
            return error(422, 402, "Received invalid JSON input.")
        problem = _problem(body)
        if problem is not None:
            return error(422, 300, problem)
        message_id = str(uuid.uuid4())
        with self._lock:
            self.sent.append((message_id, body))
        submitted = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return SimResponse.json(
            {
                "To": body["To"],
                "SubmittedAt": submitted.replace("+00:00", "Z"),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
        )


def mount(sim: Simulator, prefix: str) -> PostmarkState:
    state = PostmarkState()
    sim.route("POST", f"{prefix}/email", state.email)
    return state


def _problem(body: dict[str, Any]) -> str | None:
    sender = body.get("From")
    if not isinstance(sender, str) or "@" not in sender:
        return f"Invalid 'From' address: '{sender or ''}'."
    count = 0
    for name in ("To", "Cc", "Bcc"):
        value = body.get(name) or ""
        if not isinstance(value, str):
            return f"Invalid '{name}' address: '{value}'."
        count += len([a for _, a in getaddresses([value]) if a])
    if count == 0:
        return "Zero recipients specified"
    if count > MAX_RECIPIENTS:
        return f"Maximum of {MAX_RECIPIENTS} recipients allowed per message."
    if not (body.get("TextBody") or body.get("HtmlBody")):
        return "Provide either email TextBody or HtmlBody or both."
    for attachment in body.get("Attachments") or []:
        if not isinstance(attachment, dict) or not attachment.get("Name"):
            return "Attachment is missing a name."
        try:
            base64.b64decode(attachment.get("Content") or "", validate=True)
        except binascii.Error:
            return f"Attachment '{attachment['Name']}' has invalid Base64 content."
    return None
