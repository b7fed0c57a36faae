"""Reconciliation of ambiguous outcomes: a provider that can't deduplicate is asked what it did
(Twilio's Messages list) before anything is sent again — by a live call that timed out, by a
retry after AmbiguousOutcome, and by a replay after a worker was SIGKILLed mid-drain."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from providers import Sms
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome
from resilient.gateway import Gateway
from resilient.policy.outcome_class import Outcome
from resilient.testing import Fault, Simulator
from resilient.testing.routes import twilio as twilio_routes
from resilient.testing.routes import vonage as vonage_routes
from resilient.testing.routes.twilio import TwilioState
from resilient.testing.routes.vonage import VonageState

ROOT = Path(__file__).resolve().parent.parent
SMS = Sms(to="+15550100", body="Your code is 1234", sender="+15550001", idempotency_key="otp-9")
MESSAGES = "/twilio/2010-04-01/Accounts/AC123/Messages.json"


@pytest.fixture
def accounts(simulator: Simulator) -> tuple[TwilioState, VonageState]:
    return twilio_routes.mount(simulator, "/twilio"), vonage_routes.mount(simulator, "/vonage")


def config(sim: Simulator, **capability: Any) -> dict[str, Any]:
    return {
        "gateway": {"spool_path": str(Path(".resilient/spool.db").resolve())},
        "providers": {
            "twilio": {
                "kind": "twilio",
                "api_key": "auth-token",
                "account_sid": "AC123",
                "base_url": sim.url("/twilio"),
                "timeout": "500ms",
                "retry": {"attempts": 1},
            },
            "vonage": {
                "kind": "vonage",
                "api_key": "abcd1234",
                "api_secret": "s3cr3t",
                "base_url": sim.url("/vonage"),
                "retry": {"attempts": 1},
            },
        },
        "capabilities": {"sms": {"chain": ["twilio", "vonage"], "timeout": "10s", **capability}},
    }


async def send(gw: Gateway, mode: str, sms: Sms = SMS) -> Any:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.sms.send, sms)
    return await gw.sms.send(sms)


async def test_a_timed_out_send_that_twilio_did_is_delivered_once(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], mode: str
) -> None:
    twilio, vonage = accounts
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES)
    gw = Gateway(settings_from_mapping(config(simulator)))
    result = await send(gw, mode)
    await gw.aclose()

    [message] = twilio.messages.values()
    assert (result.status, result.provider) == ("delivered", "twilio")
    assert result.value.message_id == message["sid"]
    assert [a.outcome for a in result.attempts] == [Outcome.AMBIGUOUS, Outcome.OK]
    assert result.attempts[-1].reason.startswith("lookup: found")
    assert vonage.messages == []


async def test_a_timed_out_send_that_twilio_did_not_do_goes_on_to_vonage(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], mode: str
) -> None:
    twilio, vonage = accounts
    simulator.inject(Fault.hang(), method="POST", path=MESSAGES)
    gw = Gateway(settings_from_mapping(config(simulator)))
    result = await send(gw, mode)
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "vonage")
    assert [a.provider for a in result.attempts] == ["twilio", "twilio", "vonage"]
    assert result.attempts[1].outcome is Outcome.FAILOVER
    assert twilio.messages == {} and len(vonage.messages) == 1


async def test_when_twilio_cannot_be_asked_the_outcome_stays_ambiguous(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState]
) -> None:
    _, vonage = accounts
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES)
    simulator.inject(Fault.status(500), method="GET", path=MESSAGES)
    gw = Gateway(settings_from_mapping(config(simulator)))
    with pytest.raises(AmbiguousOutcome) as raised:
        await gw.sms.send(SMS)
    assert "lookup: the lookup was answered 500" in str(raised.value)
    # a retry asks again (Twilio can now answer) and finds the message: nothing is resent
    simulator.clear_faults()
    again = await gw.sms.send(SMS)
    await gw.aclose()
    assert (again.status, again.provider, again.value.deduplicated) == ("delivered", "twilio", True)
    assert len(simulator.requests(method="POST", path=MESSAGES)) == 1
    assert vonage.messages == []


async def test_the_same_text_sent_seconds_before_by_another_operation_is_not_taken_for_ours(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState]
) -> None:
    """An identical SMS to the same number went out a few seconds earlier under another id;
    this one times out before Twilio made it. The lookup matches only messages created since
    this operation's claim (on Twilio's clock), so it is found absent and sent, not lost."""
    twilio, vonage = accounts
    gw = Gateway(settings_from_mapping(config(simulator)))
    earlier = await gw.sms.send(SMS)
    await asyncio.sleep(3.0)
    simulator.inject(Fault.hang(), method="POST", path=MESSAGES, times=1)
    second = await gw.sms.send(replace(SMS, idempotency_key="otp-10"))
    await gw.aclose()
    assert second.status == "delivered" and not second.value.deduplicated
    assert second.value.message_id != earlier.value.message_id
    assert len(twilio.messages) + len(vonage.messages) == 2


WORKER = """
import sys, time
from resilient.config import load_settings
from resilient.gateway import Gateway
gateway = Gateway(load_settings(sys.argv[1]))  # replays in its background thread
print("up", flush=True)
time.sleep(3600)
"""


def start_worker(config_file: Path) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(config_file)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert worker.stdout is not None and worker.stdout.readline() == "up\n"
    return worker


def kill_a_worker_after_sends(
    simulator: Simulator, tmp_path: Path, mapping: dict[str, Any], sends: int
) -> None:
    """A worker process replaying `mapping`'s spool, SIGKILLed once `sends` more requests
    reached the simulator (the faults in place hold them)."""
    parked = len(simulator.requests(method="POST"))
    config_file = tmp_path / "resilient.toml"
    config_file.write_text(_toml(mapping))
    worker = start_worker(config_file)
    try:
        wait_for(
            lambda: len(simulator.requests(method="POST")) >= parked + sends,
            60.0,
            f"{sends} sends",
        )
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def answering(mapping: dict[str, Any], provider: str, capability: str) -> dict[str, Any]:
    """`mapping` with `provider`'s attempt timeout as long as the `capability` call's own: the
    successor's sends and lookups reach a provider that answers them, and no timeout of its
    own is under test (half a second is not always enough for an answer on a busy machine)."""
    table = {
        **mapping["providers"][provider],
        "timeout": mapping["capabilities"][capability]["timeout"],
    }
    return {**mapping, "providers": {**mapping["providers"], provider: table}}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        time.sleep(0.02)


async def test_a_worker_killed_mid_drain_leaves_every_sms_sent_exactly_once(
    simulator: Simulator, accounts: tuple[TwilioState, VonageState], tmp_path: Path
) -> None:
    """40 parked SMS; the replaying worker is SIGKILLed while Twilio holds its requests (some
    done, some not); the next worker finds out which were done and sends only the rest."""
    twilio, vonage = accounts
    mapping = config(simulator, defer=True, timeout="2s")
    mapping["capabilities"]["sms"]["chain"] = ["twilio"]
    outage = simulator.inject(Fault.status(503), prefix="/twilio")
    parker = Gateway(settings_from_mapping(mapping), background_replay=False)
    for n in range(40):
        sms = Sms(to="+15550100", body=f"code {n}", sender="+15550001", idempotency_key=f"o-{n}")
        assert (await parker.sms.send(sms)).status == "deferred"
    await parker.aclose()
    simulator.clear_faults()
    del outage
    # Twilio now holds each request: 15 done before the answer is lost, then 10 not done
    simulator.inject(Fault.hang(), method="POST", path=MESSAGES, times=10)
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES, times=15)
    await asyncio.to_thread(kill_a_worker_after_sends, simulator, tmp_path, mapping, 25)
    simulator.clear_faults()
    assert len(twilio.messages) >= 15  # 15 done and never heard of by the dead worker

    successor = Gateway(settings_from_mapping(answering(mapping, "twilio", "sms")))
    try:
        await asyncio.to_thread(wait_for, lambda: len(twilio.messages) >= 40, 90.0, "40 SMS")
        await asyncio.sleep(1.0)  # a duplicate would come with the same drain
    finally:
        await successor.aclose()
    bodies = collections.Counter(m["body"] for m in twilio.messages.values())
    assert bodies == collections.Counter(f"code {n}" for n in range(40))
    assert len(simulator.requests(method="GET", path=MESSAGES)) >= 15  # asked, not resent
    assert vonage.messages == []


def _toml(mapping: dict[str, Any]) -> str:
    """The test's config as a TOML file (flat tables and inline values only)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v)

    lines = [f"[gateway]\nspool_path = {value(mapping['gateway']['spool_path'])}"]
    for section in ("providers", "capabilities"):
        for name, table in mapping[section].items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


async def test_a_worker_killed_mid_drain_never_sends_an_email_twice(
    simulator: Simulator, tmp_path: Path
) -> None:
    """The same kill with 40 parked emails through SendGrid (no idempotency key; its Email
    Activity feed lags, so it can show a message but never prove one absent). What the dead
    worker got done is found there and not resent; what it had in flight undone stays a dead
    letter "ambiguous outcome" for `resilient queue reconcile`: never sent twice, never
    silently dropped."""
    from providers import Email
    from resilient.testing.routes import sendgrid as sendgrid_routes

    sendgrid = sendgrid_routes.mount(simulator, "/sendgrid")
    send_path = "/sendgrid/v3/mail/send"
    mapping: dict[str, Any] = {
        "gateway": {"spool_path": str(tmp_path / "spool.db")},
        "providers": {
            "sendgrid": {
                "kind": "sendgrid",
                "api_key": "SG.key",
                "base_url": simulator.url("/sendgrid"),
                "timeout": "500ms",
                "retry": {"attempts": 1},
            }
        },
        "capabilities": {"email": {"chain": ["sendgrid"], "defer": True, "timeout": "2s"}},
    }
    outage = simulator.inject(Fault.status(503), prefix="/sendgrid")
    parker = Gateway(settings_from_mapping(mapping), background_replay=False)
    for n in range(40):
        email = Email(
            sender="shop@example.com",
            to=["ada@example.com"],
            subject=f"order {n}",
            text="thanks",
            idempotency_key=f"e-{n}",
        )
        assert (await parker.email.send(email)).status == "deferred"
    await parker.aclose()
    outage.clear()
    simulator.inject(Fault.hang(), method="POST", path=send_path, times=5)
    simulator.inject(Fault.hang(after_effect=True), method="POST", path=send_path, times=10)
    await asyncio.to_thread(kill_a_worker_after_sends, simulator, tmp_path, mapping, 15)
    simulator.clear_faults()

    successor = Gateway(settings_from_mapping(answering(mapping, "sendgrid", "email")))
    try:

        def settled() -> bool:
            stats = successor.deferral.store.stats()  # type: ignore[attr-defined]
            return bool(stats["ready"] + stats["leased"] == 0)

        await asyncio.to_thread(wait_for, settled, 90.0, "every parked email settled")
        dead = successor.deferral.store.entries("dead")  # type: ignore[attr-defined]
    finally:
        await successor.aclose()
    subjects = collections.Counter(body["subject"] for _, body in sendgrid.sent)
    assert max(subjects.values()) == 1  # never twice
    assert all(d.reason.startswith("ambiguous outcome") for d in dead)
    assert len(subjects) + len(dead) == 40  # each one sent once, or waiting for an operator
    assert 1 <= len(dead) <= 5  # at most the ones held undone when the worker died
