"""Vonage on the simulator: the SMS API, `POST /sms/json` with form-encoded or JSON parameters
(`api_key` and `api_secret` in the body, or Basic auth), answering as Vonage does: HTTP 200 with
`{"message-count", "messages": [...]}`, one entry per part of the (possibly concatenated)
message, each with a `status` that is "0" when the part was accepted and a Vonage error code with
its `error-text` when it was not. Point a provider's `base_url` at `sim.url(prefix)`.

Accepted parts are on `state.messages`. `state.answer_with(1, 0)` scripts the statuses of the
next parts (throttled, then accepted); `state.credentials` restricts the keys accepted.

The Reports API's synchronous records (`GET /v2/reports/records`, Basic auth) list what was
sent: one SMS record per accepted part (`state.records`), with its client_ref and the time
Vonage received it, filtered by account, direction, a window of at most 24 hours, `to`, `from`
and `status`, or by message ids; 1000 a page, with a `next` link past that. Refused parts leave
no record here. `state.reports = False` is an account without the Reports API: 403.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode

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
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
PAGE = 1000  # records a synchronous Reports answer holds
SPAN = 86400  # seconds a synchronous Reports query may cover


def refusal(status: int, param: str = "") -> dict[str, str]:
    """One refused part, as Vonage writes it."""
    text = ERROR_TEXTS.get(status, "Rejected").format(param=param)
    return {"status": str(status), "error-text": text}


class VonageState:
    """The simulated Vonage account: the parts it accepted, and the statuses scripted next."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []  # the Reports API's SMS records, oldest first
        self.credentials: tuple[str, str] | None = None  # (api_key, api_secret); None: any
        self.reports = True  # the account may use the Reports API
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
        segments = _segments(text, unicode)
        received = _iso(time.time())
        parts = []
        with self._lock:
            for _ in range(segments):
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
                self.records.append(
                    {
                        "account_id": self._key(request, params),
                        "message_id": part["message-id"],
                        "client_ref": params.get("client-ref"),
                        "direction": "outbound",
                        "from": params["from"],
                        "to": to,
                        "network": part["network"],
                        "network_name": "Vodafone Limited",
                        "country": "GB",
                        "country_name": "United Kingdom",
                        "date_received": received,
                        "date_finalized": None,
                        "latency": None,
                        "status": "accepted",
                        "error_code": None,
                        "error_code_description": None,
                        "currency": "EUR",
                        "total_price": float(part["message-price"]),
                        "concatenated": segments > 1,
                        "message_body": text,
                    }
                )
                parts.append(part)
        return _answer(parts)

    def records_sync(self, request: SimRequest) -> SimResponse:
        """Load records synchronously (https://developer.vonage.com/en/api/reports)."""
        credentials = basic_credentials(request)
        if credentials is None or (self.credentials and credentials != self.credentials):
            return _problem(
                401, "unauthorized", "Unauthorized", "You did not provide correct credentials."
            )
        if not self.reports:
            return _problem(
                403, "forbidden", "Forbidden", "User not authorized to query the requested data."
            )
        query = {key: values[-1] for key, values in parse_qs(request.query).items()}
        required = ["account_id", "product", "direction"]
        if "id" not in query:
            required += ["date_start", "date_end"]
        missing = [name for name in required if not query.get(name)]
        if missing:
            return _invalid([(name, "Missing required parameter") for name in missing])
        if "id" in query:
            clash = [name for name in ("date_start", "date_end", "status") if name in query]
            if clash:
                return _invalid([(name, "Not allowed with id") for name in clash])
            return self._page(request, query, lambda r: r["message_id"] in query["id"].split(","))
        start, end = _epoch(query["date_start"]), _epoch(query["date_end"])
        if start is None or end is None or not 0 < end - start <= SPAN:
            reason = "date_end must be later than date_start, by no more than 24 hours"
            return _invalid([("date_end", reason)])

        def wanted(record: dict[str, Any]) -> bool:
            received = _epoch(record["date_received"]) or 0.0
            return start <= received < end and all(
                query.get(name) in (None, record[name]) for name in ("to", "from", "status")
            )

        return self._page(request, query, wanted)

    def _page(
        self, request: SimRequest, query: dict[str, str], wanted: Callable[[dict[str, Any]], bool]
    ) -> SimResponse:
        with self._lock:
            matched = [
                r
                for r in self.records
                if r["account_id"] == query["account_id"]
                and query["product"] == "SMS"
                and query["direction"] == "outbound"
                and wanted(r)
            ]
        offset = int(query.get("cursor", "0") or 0)
        page = matched[offset : offset + PAGE]
        if query.get("include_message") != "true":
            page = [{k: v for k, v in r.items() if k != "message_body"} for r in page]
        body: dict[str, Any] = {
            "_links": {"self": {"href": f"{request.path}?{request.query}"}},
            "request_id": str(uuid.uuid4()),
            "request_status": "SUCCESS",
            "received_at": _iso(time.time()),
            "price": 0.0,
            "currency": "EUR",
            "account_id": query["account_id"],
            "product": query["product"],
            "direction": query["direction"],
            "include_message": query.get("include_message") == "true",
            "items_count": len(page),
            "records": page,
        }
        if "id" in query:
            found = {r["message_id"] for r in page}
            missed = [i for i in query["id"].split(",") if i not in found]
            if missed:
                body["ids_not_found"] = ",".join(missed)
        elif offset + PAGE < len(matched):
            cursor = {**query, "cursor": str(offset + PAGE), "iv": secrets.token_hex(8)}
            body["_links"]["next"] = {"href": f"{request.path}?{urlencode(cursor)}"}
            body["cursor"], body["iv"] = cursor["cursor"], cursor["iv"]
        return SimResponse.json(body)

    @staticmethod
    def _key(request: SimRequest, params: dict[str, str]) -> str:
        basic = basic_credentials(request)
        return params.get("api_key") or (basic[0] if basic else "")

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
    sim.route("GET", f"{prefix}/v2/reports/records", state.records_sync)
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
    """Parts of 160 GSM septets (an extension character takes two), 153 each when concatenated;
    of 70 UCS-2 code units, 67 each, for unicode."""
    if unicode:
        units, single, multi = len(text.encode("utf-16-le")) // 2, 70, 67
    else:
        units, single, multi = len(text) + sum(c in GSM_EXTENSION for c in text), 160, 153
    return 1 if units <= single else math.ceil(units / multi)


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(moment))


def _epoch(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _problem(status: int, kind: str, title: str, detail: str) -> SimResponse:
    """An answer in the Reports API's error shape (RFC 7807 style)."""
    body = {
        "type": f"https://developer.nexmo.com/api-errors#{kind}",
        "title": title,
        "detail": detail,
        "instance": secrets.token_hex(16),
    }
    return SimResponse.json(body, status=status)


def _invalid(problems: list[tuple[str, str]]) -> SimResponse:
    body = {
        "title": "Unprocessable entity",
        "invalid_parameters": [{"name": name, "reason": reason} for name, reason in problems],
        "instance": secrets.token_hex(16),
    }
    return SimResponse.json(body, status=422)


def _answer(parts: list[dict[str, str]]) -> SimResponse:
    return SimResponse.json({"message-count": str(len(parts)), "messages": parts})
