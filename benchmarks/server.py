"""`python -m benchmarks.server`: the loopback simulator serving the benchmark route.

Prints its base URL on one line, serves until its standard input closes (the benchmark that
started it ends, or dies), then stops. The request log is bounded for long runs.

It also serves, for item 3, the one route of each SDK that item calls (resilient/testing/routes)
under `SDK_PREFIXES`. What those routes create is dropped every `KEEP` requests, so a long run's
heap (and the simulator's garbage collections) stays the size of a short one's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from resilient.testing import SimRequest, SimResponse, Simulator
from resilient.testing.routes import mount

PATH = "/v1/ping"
BODY = b'{"ok":true}'
SDK_PREFIXES = {name: f"/{name}" for name in ("openai", "stripe", "twilio", "sendgrid")}
KEEP = 256  # requests between two clear-outs of what a route created

Handler = Callable[[SimRequest], SimResponse]


def _sdk_routes(sim: Simulator) -> None:
    """Mount each SDK's routes, then serve the route item 3 calls through `_bounded`."""
    openai = mount(sim, "openai", prefix=SDK_PREFIXES["openai"])
    stripe = mount(sim, "stripe", prefix=SDK_PREFIXES["stripe"])
    twilio = mount(sim, "twilio", prefix=SDK_PREFIXES["twilio"])
    sendgrid = mount(sim, "sendgrid", prefix=SDK_PREFIXES["sendgrid"])
    routes: list[tuple[str, Any, Handler]] = [
        ("/openai/v1/chat/completions", openai, openai.chat_completions),
        ("/stripe/v1/payment_intents", stripe, stripe.handler(stripe.create_payment_intent)),
        ("/twilio/2010-04-01/Accounts/{account}/Messages.json", twilio, twilio.create),
        ("/sendgrid/v3/mail/send", sendgrid, sendgrid.mail_send),
    ]
    for path, state, handler in routes:
        sim.route("POST", path, _bounded(state, handler))


def _bounded(state: Any, handler: Handler) -> Handler:
    """`handler`, emptying the lists and dicts of its route's `state` every KEEP requests."""
    served = 0

    def handle(request: SimRequest) -> SimResponse:
        nonlocal served
        served += 1
        if served % KEEP == 0:
            for value in vars(state).values():
                if isinstance(value, (list, dict)):
                    value.clear()
        return handler(request)

    return handle


def main() -> None:
    sim = Simulator(max_records=256)
    answer = SimResponse(200, {"content-type": "application/json"}, BODY)
    for method in ("GET", "POST"):
        sim.route(method, PATH, lambda request: answer)
    _sdk_routes(sim)
    with sim:
        print(sim.base_url, flush=True)
        sys.stdin.read()  # until EOF


if __name__ == "__main__":
    main()
