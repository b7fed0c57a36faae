"""Vonage on the simulator: the SMS API, `POST /sms/json` with form-encoded or JSON parameters
(`api_key` and `api_secret` in the body, or Basic auth), answering as Vonage does: HTTP 200 with
`{"message-count", "messages": [...]}`, one entry per part of the (possibly concatenated)
message, each with a `status` that is "0" when the part was accepted and a Vonage error code with
its `error-text` when it was not. Point a provider's `base_url` at `sim.url(prefix)`.

Accepted parts are on `state.messages`. `state.answer_with(1, 0)` scripts the statuses of the
next parts (throttled, then accepted); `state.credentials` restricts the keys accepted.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from resilient.testing.routes import basic_credentials
from resilient.testing.simulator import SimRequest, SimResponse, Simulator

ERROR_TEXTS = {
    1: "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
    2: "Missing {param} param",
    3: "Invalid {param} address",
    4: "Bad Credentials",
    5: "Internal Error",
    6: "Unroutable message - rejected",
    7: "Number barred.",
    8: "Account suspended",
    9: "Quota Exceeded - rejected",
    10: "Too many existing binds",
    11: "Account not enabled for HTTP",
    12: "Message too long",
    15: "Illegal Sender Address - rejected",
    29: "Non White-listed Destination - rejected",
    33: "Number de-activated",
}


def refusal(status: int, param: str = "") -> dict[str, str]:
    """One refused part, as Vonage writes it."""
    text = ERROR_TEXTS.get(status, "Rejected").format(param=param)
    return {"status": str(status), "error-text": text}


class VonageState:
    """The simulated Vonage account: the parts it accepted, and the statuses scripted next."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.credentials: tuple[str, str] | None = None  # (api_key, api_secret); None: any
        self._script: deque[int] = deque()
        self._lock = threading.Lock()

    def answer_with(self, *statuses: int) -> None:
        """Answer the next parts with these statuses, in order (0 accepts one); parts after
        them are accepted again."""
        with self._lock:
            self._script.extend(statuses)

    def send(self, request: SimRequest) -> SimResponse:
        params = _params(request)
        refused = self._refusal(request, params)
        if refused is not None:
            return _answer([refused])
        text, to = params["text"], params["to"]
        unicode = params.get("type") == "unicode"
        parts = []
        with self._lock:
            for _ in range(_segments(text, unicode)):
                status = self._script.popleft() if self._script else 0
                if status:
                    parts.append({"to": to, **refusal(status)})
                    continue
                part = {
                    "to": to,
                    "message-id": secrets.token_hex(8).upper(),
                    "status": "0",
                    "remaining-balance": "15.53590000",
                    "message-price": "0.03330000",
                    "network": "23410",
                }
                if params.get("client-ref"):
                    part["client-ref"] = params["client-ref"]
                self.messages.append({**part, "from": params["from"], "text": text})
                parts.append(part)
        return _answer(parts)

    def _refusal(self, request: SimRequest, params: dict[str, str]) -> dict[str, str] | None:
        """The single refusal a request gets before any part is considered, or None."""
        basic = basic_credentials(request)
        key = params.get("api_key") or (basic[0] if basic else None)
        secret = params.get("api_secret") or (basic[1] if basic else None)
        if not key:
            return refusal(2, "api_key")
        if not secret:
            return refusal(2, "api_secret")
        if self.credentials is not None and (key, secret) != self.credentials:
            return refusal(4)
        for name in ("from", "to", "text"):
            if not params.get(name):
                return refusal(2, name)
        if not params["to"].isdigit():
            return refusal(3, "to")
        return None


def mount(sim: Simulator, prefix: str) -> VonageState:
    state = VonageState()
    sim.route("POST", f"{prefix}/sms/json", state.send)
    return state


def _params(request: SimRequest) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    return {key: values[-1] for key, values in parse_qs(request.body.decode()).items()}


def _segments(text: str, unicode: bool) -> int:
    single, multi = (70, 67) if unicode else (160, 153)
    return 1 if len(text) <= single else math.ceil(len(text) / multi)


def _answer(parts: list[dict[str, str]]) -> SimResponse:
    return SimResponse.json({"message-count": str(len(parts)), "messages": parts})
