"""Twilio on the simulator: Messages (create, fetch, list) under /2010-04-01/Accounts/{sid},
form-encoded, answering with Twilio's message resource or its `{"code", "message", "more_info",
"status"}` errors. Twilio's SDK has no base URL: a `providers.twilio.Client` reaches the simulator
through its provider's `base_url = sim.url(prefix)`. Messages created are on `state.messages`.
"""

from __future__ import annotations

import math
import re
import threading
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import basic_credentials, new_id
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_API = "/2010-04-01"


def error(status: int, code: int, message: str) -> SimResponse:
    """An answer in Twilio's REST error shape."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return SimResponse.json(body, status=status)


class TwilioState:
    """The simulated Twilio account(s): every message created, by SID."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create(self, request: SimRequest) -> SimResponse:
        account = request.params["account"]
        denied = _authenticate(request)
        if denied is not None:
            return denied
        fields = parse_qs(request.body.decode())
        form = {key: values[-1] for key, values in fields.items()}
        media = fields.get("MediaUrl", [])
        to, sender = form.get("To"), form.get("From")
        service, body = form.get("MessagingServiceSid"), form.get("Body", "")
        if not to:
            return error(400, 21604, "A 'To' phone number is required.")
        if not (sender or service):
            return error(400, 21603, "A 'From' phone number is required.")
        if not (body or media or form.get("ContentSid")):
            return error(400, 21602, "Message body is required.")
        if not _address(to):
            return error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if sender and not _address(sender) and not sender.isalnum():
            return error(400, 21212, f"Invalid From Number (caller ID): {sender}")
        if len(body) > 1600:
            return error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        sid = new_id("SM" if not media else "MM", 32)
        now = _rfc2822(time.time())
        message = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": str(_segments(body)) if sender else "0",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{_API}/Accounts/{account}/Messages/{sid}/Media.json"},
            "to": to,
            "uri": f"{_API}/Accounts/{account}/Messages/{sid}.json",
        }
        with self._lock:
            self.messages[sid] = message
        return SimResponse.json(message, status=201)

    def fetch(self, request: SimRequest) -> SimResponse:
        denied = _authenticate(request)
        if denied is not None:
            return denied
        sid = request.params["message"].removesuffix(".json")
        message = self.messages.get(sid)
        if message is None or message["account_sid"] != request.params["account"]:
            return error(404, 20404, f"The requested resource {request.path} was not found")
        return SimResponse.json(message)

    def list_messages(self, request: SimRequest) -> SimResponse:
        denied = _authenticate(request)
        if denied is not None:
            return denied
        account = request.params["account"]
        query = {key: values[-1] for key, values in parse_qs(request.query).items()}
        size = int(query.get("PageSize", "50"))
        found = [
            m
            for m in reversed(self.messages.values())
            if m["account_sid"] == account
            and query.get("To") in (None, m["to"])
            and query.get("From") in (None, m["from"])
        ][:size]
        uri = f"{_API}/Accounts/{account}/Messages.json?PageSize={size}&Page=0"
        page = {
            "end": max(len(found) - 1, 0),
            "first_page_uri": uri,
            "messages": found,
            "next_page_uri": None,
            "page": 0,
            "page_size": size,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }
        return SimResponse.json(page, headers={"date": formatdate(usegmt=True)})


def mount(sim: Simulator, prefix: str) -> TwilioState:
    state = TwilioState()
    messages = f"{prefix}{_API}/Accounts/{{account}}/Messages"
    sim.route("POST", messages + ".json", state.create)
    sim.route("GET", messages + ".json", state.list_messages)
    sim.route("GET", messages + "/{message}", state.fetch)
    return state


def _authenticate(request: SimRequest) -> SimResponse | None:
    credentials = basic_credentials(request)
    if credentials is None or not credentials[1]:
        return error(401, 20003, "Authenticate")
    return None


def _address(value: str) -> bool:
    number = value.split(":", 1)[1] if value.startswith(("whatsapp:", "messenger:")) else value
    return bool(_E164.fullmatch(number))


def _segments(body: str) -> int:
    return 1 if len(body) <= 160 else math.ceil(len(body) / 153)


def _rfc2822(timestamp: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(timestamp))
