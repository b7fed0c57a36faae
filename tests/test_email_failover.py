"""Email failover that respects side effects, on a sendgrid -> mailgun chain over the simulator.

A message goes to the next provider only when the first definitely did not take it; after an
outcome that may have sent it, it goes nowhere else, and the dedupe ledger keeps a retry of the
same idempotency key from sending it again. Every count is taken at the simulator.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from providers import Email
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, FatalError
from resilient.gateway import Gateway
from resilient.policy.outcome_class import Outcome
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mailgun as mailgun_routes
from resilient.testing.routes import sendgrid as sendgrid_routes
from resilient.testing.routes.mailgun import MailgunState
from resilient.testing.routes.sendgrid import SendGridState
from tests.conftest import receipt
from tests.conftest import send_message as send

_RETRY = {"attempts": 2, "backoff": "10ms..20ms"}
# Attempt timeouts a busy machine's answers always meet, where no timeout is under test.
_TIMEOUT = {"connect": "5s", "attempt": "5s"}
# Where an outcome that may have sent the message is under test: attempts a busy machine's
# answers meet, and a call deadline shorter than a pause and a lookup (exactly_once: the
# message can't be looked up during the call, only by a retry).
_SHORT = {"connect": "2s", "attempt": "2s"}
_SHORT_CALL = "2500ms"


def email(key: str | None = None) -> Email:
    return Email(
        sender="shop@example.com",
        to=["jane@example.org"],
        subject="Your order",
        text="Thanks!",
        idempotency_key=key or f"order-{uuid.uuid4().hex}",
    )


def gateway(
    sendgrid_url: str,
    mailgun_url: str,
    timeout: dict[str, str] = _TIMEOUT,
    call_timeout: str | None = None,
) -> Gateway:
    capability: dict[str, Any] = {"chain": ["sendgrid", "mailgun"]}
    if call_timeout is not None:
        capability["timeout"] = call_timeout
    return Gateway(
        settings_from_mapping(
            {
                "providers": {
                    "sendgrid": {
                        "kind": "sendgrid",
                        "api_key": "SG.key",
                        "base_url": sendgrid_url,
                        "retry": _RETRY,
                        "timeout": timeout,
                    },
                    "mailgun": {
                        "kind": "mailgun",
                        "api_key": "key-mg",
                        "domain": "mg.example.com",
                        "base_url": mailgun_url,
                        "retry": _RETRY,
                        "timeout": timeout,
                    },
                },
                "capabilities": {"email": capability},
            }
        )
    )


@pytest.fixture
def providers(simulator: Simulator) -> tuple[SendGridState, MailgunState]:
    return (
        sendgrid_routes.mount(simulator, "/sendgrid"),
        mailgun_routes.mount(simulator, "/mailgun"),
    )


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


DEFINITELY_NOT_SENT = {
    "connection refused": None,
    "429": Fault.rate_limited(retry_after=0),
    "503": Fault.status(503),
    "401": Fault.status(401, json={"errors": [{"message": "authorization required"}]}),
    "403": Fault.status(403, json={"errors": [{"message": "temporarily blocked"}]}),
}


@pytest.mark.parametrize("down", list(DEFINITELY_NOT_SENT))
async def test_fails_over_when_sendgrid_did_not_take_it(
    simulator: Simulator,
    providers: tuple[SendGridState, MailgunState],
    mode: str,
    down: str,
) -> None:
    """sendgrid down -> delivered by mailgun exactly once, and never by sendgrid."""
    sendgrid, mailgun = providers
    fault = DEFINITELY_NOT_SENT[down]
    sendgrid_url = closed_port_url() if fault is None else simulator.url("/sendgrid")
    if fault is not None:
        simulator.inject(fault, prefix="/sendgrid")
    gw = gateway(sendgrid_url, simulator.url("/mailgun"))
    try:
        result = await send(gw, mode, email())
    finally:
        await gw.aclose()

    assert result.status == "delivered"
    assert result.provider == "mailgun"
    assert len(simulator.effects(prefix="/mailgun")) == 1
    assert len(mailgun.sent) == 1
    assert sendgrid.sent == []
    assert receipt(result).message_id == mailgun.sent[0].id
    assert result.attempts[-1].provider == "mailgun"
    assert {a.provider for a in result.attempts[:-1]} == {"sendgrid"}


MAYBE_SENT = {
    "timeout after sending": Fault.hang(after_effect=True),
    "reset after sending": Fault.reset(after_effect=True),
    "reset mid-response": Fault.reset_mid_body(),
    "500": Fault.status(500),
    "502": Fault.status(502),  # retried and failed over by the default table; not for email
    "504": Fault.status(504),
}


@pytest.mark.parametrize("outcome", list(MAYBE_SENT))
async def test_never_sent_elsewhere_after_maybe_sent(
    simulator: Simulator,
    providers: tuple[SendGridState, MailgunState],
    mode: str,
    outcome: str,
) -> None:
    """After an outcome that may have sent it, AmbiguousOutcome: one attempt at sendgrid (no
    key to make a repeat safe), none at mailgun. A retry of the same idempotency key, once
    sendgrid is healthy again, sends nothing: it asks sendgrid's Email Activity API, which
    finds a message that went out (a deduplicated delivery) and proves nothing otherwise (the
    feed lags), so that one stays ambiguous."""
    sendgrid, mailgun = providers
    simulator.inject(MAYBE_SENT[outcome], prefix="/sendgrid")
    gw = gateway(simulator.url("/sendgrid"), simulator.url("/mailgun"), _SHORT, _SHORT_CALL)
    message = email()
    try:
        with pytest.raises(AmbiguousOutcome) as raised:
            await send(gw, mode, message)
        assert [a.outcome for a in raised.value.attempts] == [Outcome.AMBIGUOUS]
        assert len(simulator.requests(prefix="/sendgrid")) == 1
        assert simulator.requests(prefix="/mailgun") == []

        simulator.clear_faults()
        if MAYBE_SENT[outcome].after_effect:
            again = await send(gw, mode, message)
            assert (again.provider, again.value.deduplicated) == ("sendgrid", True)
            assert again.attempts[-1].reason.startswith("lookup: found")
        else:
            with pytest.raises(AmbiguousOutcome, match="reconcile"):
                await send(gw, mode, message)
    finally:
        await gw.aclose()
    assert len(simulator.requests(method="POST", prefix="/sendgrid")) == 1
    assert simulator.requests(prefix="/mailgun") == []
    assert mailgun.sent == []
    if MAYBE_SENT[outcome].after_effect:
        assert len(sendgrid.sent) == 1  # it did go out: exactly once


async def test_a_delivered_key_is_not_sent_again(
    simulator: Simulator, providers: tuple[SendGridState, MailgunState], mode: str
) -> None:
    """The same idempotency key again: a deduplicated receipt with the first message id, and
    nothing sent; a new key sends."""
    sendgrid, _ = providers
    gw = gateway(simulator.url("/sendgrid"), simulator.url("/mailgun"))
    message = email("order-42-confirmation")
    try:
        first = await send(gw, mode, message)
        again = await send(gw, mode, email("order-42-confirmation"))
        other = await send(gw, mode, email())
    finally:
        await gw.aclose()

    assert receipt(first).deduplicated is False
    assert again.status == "delivered"
    assert again.provider == "sendgrid"
    assert again.attempts == ()
    assert receipt(again).deduplicated is True
    assert receipt(again).message_id == receipt(first).message_id == sendgrid.sent[0][0]
    assert receipt(other).deduplicated is False
    assert len(simulator.requests(prefix="/sendgrid")) == 2
    assert len(sendgrid.sent) == 2


async def test_delivered_by_the_fallback_is_not_sent_again(
    simulator: Simulator, providers: tuple[SendGridState, MailgunState], mode: str
) -> None:
    """Delivered by mailgun while sendgrid was down; retried with the same key after sendgrid is
    back: deduplicated, so sendgrid never sends it a second time."""
    sendgrid, mailgun = providers
    simulator.inject(Fault.status(503), prefix="/sendgrid")
    gw = gateway(simulator.url("/sendgrid"), simulator.url("/mailgun"))
    try:
        first = await send(gw, mode, email("welcome-7"))
        simulator.clear_faults()
        again = await send(gw, mode, email("welcome-7"))
    finally:
        await gw.aclose()
    assert first.provider == again.provider == "mailgun"
    assert receipt(again).deduplicated is True
    assert receipt(again).message_id == mailgun.sent[0].id
    assert sendgrid.sent == []
    assert len(mailgun.sent) == 1


async def test_a_rejected_message_is_not_offered_to_the_next_provider(
    simulator: Simulator, providers: tuple[SendGridState, MailgunState], mode: str
) -> None:
    """400: the message itself is wrong; mailgun would refuse it too."""
    simulator.inject(
        Fault.status(400, json={"errors": [{"message": "Does not contain a valid address."}]}),
        prefix="/sendgrid",
    )
    gw = gateway(simulator.url("/sendgrid"), simulator.url("/mailgun"))
    try:
        with pytest.raises(FatalError):
            await send(gw, mode, email())
    finally:
        await gw.aclose()
    assert len(simulator.requests(prefix="/sendgrid")) == 1
    assert simulator.requests(prefix="/mailgun") == []
