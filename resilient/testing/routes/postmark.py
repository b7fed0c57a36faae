"""Postmark on the simulator: `POST /email` with `X-Postmark-Server-Token`, JSON in and out,
answering `{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}` or Postmark's
`{"ErrorCode", "Message"}` errors (401 for the token, 422 for the message). Point a provider's
`base_url` at `sim.url(prefix)`; what was accepted is on `state.sent`.

`Metadata` is held to Postmark's limits (10 fields, names of 20 characters, values of 80) and
searchable: `GET /messages/outbound` takes `count` (500 at most) and `offset` (their sum 10,000
at most), `recipient`, `fromemail`, `tag`, `subject`, `status`, `messagestream` (by default the
transactional "outbound") and `metadata_<name>`, and answers `{"TotalCount", "Messages"}`, most
recent first, with `ReceivedAt` in US Eastern time (a fixed -05:00) and seven fraction digits as
Postmark's are. A bad `count` or `offset` is a 422 with ErrorCode 600.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.simulator import SimRequest, SimResponse, Simulator

MAX_RECIPIENTS = 50
MAX_METADATA_FIELDS, MAX_METADATA_NAME, MAX_METADATA_VALUE = 10, 20, 80
MAX_SEARCH_COUNT, MAX_SEARCH_DEPTH = 500, 10_000
_EASTERN = timezone(timedelta(hours=-5))


def error(status: int, code: int, message: str) -> SimResponse:
    """An answer in Postmark's error shape."""
    return SimResponse.json({"ErrorCode": code, "Message": message}, status=status)


def _unauthorized() -> SimResponse:
    return error(
        401,
        10,
        "No Account or Server API tokens were supplied in the HTTP headers. Please add "
        "a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
    )


class PostmarkState:
    """The simulated Postmark server: (MessageID, request body) of every message accepted, and
    when each was received (`received_at`, epoch seconds by MessageID)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.received_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def email(self, request: SimRequest) -> SimResponse:
        if not request.headers.get("x-postmark-server-token"):
            return _unauthorized()
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
        now = time.time()
        with self._lock:
            self.sent.append((message_id, body))
            self.received_at[message_id] = now
        submitted = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        return SimResponse.json(
            {
                "To": body["To"],
                "SubmittedAt": submitted.replace("+00:00", "Z"),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
        )

    def outbound(self, request: SimRequest) -> SimResponse:
        """The outbound message search."""
        if not request.headers.get("x-postmark-server-token"):
            return _unauthorized()
        query = {k.lower(): v[-1] for k, v in parse_qs(request.query).items()}
        try:
            count, offset = int(query["count"]), int(query["offset"])
        except (KeyError, ValueError):
            return error(422, 600, "The 'count' and 'offset' parameters are required numbers.")
        if not 0 < count <= MAX_SEARCH_COUNT or offset < 0 or count + offset > MAX_SEARCH_DEPTH:
            return error(
                422, 600, f"Count is 1 to {MAX_SEARCH_COUNT}; count + offset {MAX_SEARCH_DEPTH}."
            )
        with self._lock:
            sent, received = list(self.sent), dict(self.received_at)
        found = [(i, b) for i, b in reversed(sent) if _matches(b, query)]
        messages = [_summary(i, b, received[i]) for i, b in found[offset : offset + count]]
        return SimResponse.json({"TotalCount": len(found), "Messages": messages})


def mount(sim: Simulator, prefix: str) -> PostmarkState:
    state = PostmarkState()
    sim.route("POST", f"{prefix}/email", state.email)
    sim.route("GET", f"{prefix}/messages/outbound", state.outbound)
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
    return _metadata_problem(body.get("Metadata"))


def _metadata_problem(metadata: object) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_FIELDS:
        return f"Metadata must be an object of at most {MAX_METADATA_FIELDS} fields."
    if len({k.lower() for k in metadata}) != len(metadata):
        return "Metadata names must differ in more than case."
    for name, value in metadata.items():
        if not 0 < len(name) <= MAX_METADATA_NAME:
            return f"Metadata name '{name}' is longer than {MAX_METADATA_NAME} characters."
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            return f"Metadata '{name}' must be text of at most {MAX_METADATA_VALUE} characters."
    return None


def _addresses(value: object) -> list[tuple[str, str]]:
    return [(n, a) for n, a in getaddresses([value]) if a] if isinstance(value, str) else []


def _matches(body: dict[str, Any], query: dict[str, str]) -> bool:
    recipients = [a.lower() for n in ("To", "Cc", "Bcc") for _, a in _addresses(body.get(n))]
    sender = [a.lower() for _, a in _addresses(body.get("From"))]
    metadata = {str(k).lower(): v for k, v in (body.get("Metadata") or {}).items()}
    wanted = {k.removeprefix("metadata_"): v for k, v in query.items() if k.startswith("metadata_")}
    return (
        query.get("recipient", "").lower() in ("", *recipients)
        and query.get("fromemail", "").lower() in ("", *sender)
        and query.get("tag") in (None, body.get("Tag"))
        and query.get("subject") in (None, body.get("Subject"))
        and query.get("status", "sent").lower() == "sent"
        and query.get("messagestream", "outbound") == body.get("MessageStream", "outbound")
        and all(metadata.get(k) == v for k, v in wanted.items())
    )


def _summary(message_id: str, body: dict[str, Any], received: float) -> dict[str, Any]:
    """A search result: the message without its bodies, as Postmark lists it."""

    def people(name: str) -> list[dict[str, str | None]]:
        return [{"Email": a, "Name": n or None} for n, a in _addresses(body.get(name))]

    when = datetime.fromtimestamp(received, _EASTERN)
    return {
        "Tag": body.get("Tag", ""),
        "MessageID": message_id,
        "MessageStream": body.get("MessageStream", "outbound"),
        "To": people("To"),
        "Cc": people("Cc"),
        "Bcc": people("Bcc"),
        "Recipients": [a for n in ("To", "Cc", "Bcc") for _, a in _addresses(body.get(n))],
        "ReceivedAt": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0-05:00",
        "From": body.get("From"),
        "Subject": body.get("Subject", ""),
        "Attachments": [a["Name"] for a in body.get("Attachments") or []],
        "Status": "Sent",
        "TrackOpens": bool(body.get("TrackOpens", False)),
        "TrackLinks": body.get("TrackLinks", "None"),
        "Metadata": dict(body.get("Metadata") or {}),
        "Sandboxed": False,
    }
