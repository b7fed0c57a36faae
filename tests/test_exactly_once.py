"""At most one effect per operation id: the ledger's claim rules without I/O, then the issue's
reproductions end to end on the simulator, with the SQLite ledger and the Redis one alike
(two calls with one key during a failover, a restart between attempts, a hostile answer after
a send, a process SIGKILLed while it held a claim)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from providers import Charge, Sms
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ChainExhausted, OperationInProgress
from resilient.gateway import Gateway
from resilient.ledger import rules
from resilient.ledger.rules import (
    AMBIGUOUS,
    CLAIMED,
    DEFERRED,
    DELIVERED,
    FAILED,
    Claim,
    LedgerEntry,
    Settle,
)
from resilient.ledger.sqlite import SqliteLedger, ledger_path
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import paypal as paypal_routes
from resilient.testing.routes import stripe as stripe_routes
from resilient.testing.routes import twilio as twilio_routes
from resilient.testing.routes.paypal import PayPalState
from resilient.testing.routes.stripe import StripeState

ROOT = Path(__file__).resolve().parent.parent
ALIVE = lambda owner: False  # noqa: E731 - every claim holder alive unless a test says not
RATE_LIMITED = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}


# -- the rules ------------------------------------------------------------------------------


def _claimed(now: float, want: Claim, current: LedgerEntry | None = None) -> rules.Granted:
    return rules.claim(current, want, now, ALIVE)


def test_a_claim_is_granted_once_until_its_outcome() -> None:
    first = _claimed(100.0, Claim("op", "stripe", 10.0))
    assert first.owned and first.entry.state == CLAIMED and first.entry.provider == "stripe"
    second = _claimed(101.0, Claim("op", "stripe", 10.0), first.entry)
    assert not second.owned and second.entry == first.entry


def test_a_definite_failure_frees_the_operation_and_a_delivery_never_does() -> None:
    held = _claimed(100.0, Claim("op", "stripe", 10.0)).entry
    failed = rules.settle(held, Settle("op", held.token, FAILED, "stripe"), 101.0)
    assert failed is not None and _claimed(102.0, Claim("op", "paypal", 10.0), failed).owned
    delivered = rules.settle(held, Settle("op", held.token, DELIVERED, "stripe", "pi_1"), 101.0)
    assert delivered is not None and delivered.message_id == "pi_1"
    assert not _claimed(102.0, Claim("op", "paypal", 10.0), delivered).owned


def test_an_outcome_from_a_holder_whose_claim_was_taken_over_is_refused() -> None:
    held = _claimed(100.0, Claim("op", "stripe", 10.0)).entry
    assert rules.settle(held, Settle("op", "another-token", DELIVERED, "stripe"), 101.0) is None
    done = rules.settle(held, Settle("op", held.token, DELIVERED, "stripe"), 101.0)
    assert rules.settle(done, Settle("op", held.token, FAILED, "stripe"), 102.0) is None


def test_a_claim_past_its_lease_is_ambiguous_on_its_provider_never_free() -> None:
    held = _claimed(100.0, Claim("op", "stripe", 10.0)).entry
    stale = _claimed(111.0, Claim("op", "paypal", 10.0), held)
    assert not stale.owned
    assert (stale.entry.state, stale.entry.provider) == (AMBIGUOUS, "stripe")
    wrong_token = _claimed(111.0, Claim("op", "stripe", 10.0, expect="nope"), held)
    assert not wrong_token.owned
    taken = _claimed(111.0, Claim("op", "stripe", 10.0, expect=held.token), held)
    assert taken.owned and taken.entry.token != held.token


def test_a_dead_holder_makes_its_claim_ambiguous_before_the_lease_ends() -> None:
    held = _claimed(100.0, Claim("op", "stripe", 60.0)).entry
    seen = rules.claim(held, Claim("op", "paypal", 10.0), 101.0, lambda owner: True)
    assert (seen.owned, seen.entry.state) == (False, AMBIGUOUS)


def test_a_restarted_process_with_the_same_pid_is_another_holder() -> None:
    host, pid, _ = rules.OWNER.split(":")
    assert rules.owner_gone(f"{host}:{pid}:older")
    assert not rules.owner_gone(rules.OWNER)
    assert not rules.owner_gone(f"another-host:{pid}:older")


def test_only_the_replay_of_a_parked_request_may_claim_it() -> None:
    held = _claimed(100.0, Claim("op", "sendgrid", 10.0)).entry
    parking = rules.settle(held, Settle("op", held.token, CLAIMED, None), 101.0)
    parked = rules.settle(parking, Settle("op", held.token, DEFERRED, None, None, "d1"), 101.0)
    assert not _claimed(102.0, Claim("op", "sendgrid", 10.0), parked).owned
    assert not _claimed(102.0, Claim("op", "sendgrid", 10.0, replay_of="d2"), parked).owned
    assert _claimed(102.0, Claim("op", "sendgrid", 10.0, replay_of="d1"), parked).owned
    # its holder died between parking and saying so: a replay may take it, a live call not
    orphan = _claimed(200.0, Claim("op", "sendgrid", 10.0), parking).entry
    assert (orphan.state, orphan.provider) == (AMBIGUOUS, None)
    assert _claimed(200.0, Claim("op", "sendgrid", 10.0, replay_of="d1"), parking).owned


def test_group_commit_answers_each_caller_and_survives_a_reopen(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    futures = [ledger.submit(Claim(f"op-{i}", "stripe", 30.0)) for i in range(200)]
    granted = [f.result(timeout=30) for f in futures]
    assert all(g.owned for g in granted)
    again = ledger.submit(Claim("op-7", "paypal", 30.0)).result(timeout=30)
    assert not again.owned
    token = granted[7].entry.token
    assert ledger.submit(Settle("op-7", token, DELIVERED, "stripe", "pi_7")).result(timeout=30)
    ledger.close()

    reopened = SqliteLedger(tmp_path / "ledger.db")
    entry = reopened.get("op-7")
    reopened.close()
    assert entry is not None and (entry.state, entry.message_id) == (DELIVERED, "pi_7")


# -- end to end -----------------------------------------------------------------------------


CHARGE = Charge(amount=1999, currency="usd", payment_method="pm_card_visa", idempotency_key="k-1")


@pytest.fixture
def accounts(simulator: Simulator) -> tuple[StripeState, PayPalState]:
    return stripe_routes.mount(simulator, "/stripe"), paypal_routes.mount(simulator, "/paypal")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    """The ledger's store: the embedded SQLite file, or a real redis-server."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


def settings(sim: Simulator, redis_url: str | None) -> Any:
    retry = {"attempts": 2, "backoff": "10ms..20ms"}
    gateway: dict[str, Any] = {"spool_path": str(Path(".resilient/spool.db").resolve())}
    if redis_url:
        gateway["redis_url"] = redis_url
    return settings_from_mapping(
        {
            "gateway": gateway,
            "providers": {
                "stripe": {
                    "kind": "stripe",
                    "api_key": "sk_test_123",
                    "base_url": sim.url("/stripe"),
                    "timeout": "2s",
                    "retry": retry,
                },
                "paypal": {
                    "kind": "paypal",
                    "client_id": "client-1",
                    "api_key": "pp-secret",
                    "base_url": sim.url("/paypal"),
                    "timeout": "5s",
                    "retry": retry,
                },
            },
            "capabilities": {"payments": {"chain": ["stripe", "paypal"], "timeout": "10s"}},
        }
    )


async def charge(gw: Gateway, mode: str, model: Charge = CHARGE) -> Result[Any]:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.payments.charge, model)
    return await gw.payments.charge(model)  # type: ignore[no-any-return]


async def test_two_calls_with_one_key_during_a_failover_charge_once(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    store: str | None,
    mode: str,
) -> None:
    """A double-clicked checkout: Stripe refuses the first with 429 and it fails over to a slow
    PayPal; the second, sent meanwhile, waits for the first's outcome instead of going to
    Stripe (which would charge too once it answers)."""
    stripe, paypal = accounts
    # Stripe refuses the first call's two attempts, then answers: a second chain would charge
    simulator.inject(Fault.status(429, json=RATE_LIMITED), prefix="/stripe", times=2)
    simulator.inject(Fault.latency(1.0), path="/paypal/v2/checkout/orders")
    gw = Gateway(settings(simulator, store))
    first = asyncio.create_task(charge(gw, mode))
    await asyncio.sleep(0.4)
    second = await charge(gw, mode)
    result = await first
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "paypal")
    assert (second.status, second.provider, second.attempts) == ("delivered", "paypal", ())
    assert second.value.deduplicated and second.value.message_id == result.value.message_id
    assert stripe.payment_intents == {}
    assert len(paypal.orders) == 1


async def test_a_second_call_that_cannot_wait_for_the_first_sends_nothing(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], store: str | None
) -> None:
    stripe, paypal = accounts
    simulator.inject(Fault.latency(1.5), path="/paypal/v2/checkout/orders")
    simulator.inject(Fault.status(429, json=RATE_LIMITED), prefix="/stripe", times=2)
    gw = Gateway(settings(simulator, store))
    first = asyncio.create_task(gw.payments.charge(CHARGE))
    await asyncio.sleep(0.3)
    with pytest.raises(OperationInProgress):
        await gw.payments.charge(CHARGE, deadline=0.3)
    await first
    await gw.aclose()
    assert stripe.payment_intents == {} and len(paypal.orders) == 1


async def test_a_restart_keeps_a_maybe_done_charge_on_stripe(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    store: str | None,
    mode: str,
) -> None:
    """Stripe charged and the connection broke; the process restarts (same config, same
    spool); the retry meets a 429 at Stripe and still never reaches PayPal."""
    stripe, paypal = accounts
    simulator.inject(Fault.reset(after_effect=True), prefix="/stripe")
    gw = Gateway(settings(simulator, store))
    with pytest.raises(AmbiguousOutcome):
        await charge(gw, mode)
    await gw.aclose()

    simulator.clear_faults()
    simulator.inject(Fault.status(429, json=RATE_LIMITED), prefix="/stripe")
    restarted = Gateway(settings(simulator, store))
    with pytest.raises(ChainExhausted) as raised:
        await charge(restarted, mode)
    assert {a.provider for a in raised.value.attempts} == {"stripe"}
    simulator.clear_faults()
    result = await charge(restarted, mode)
    await restarted.aclose()

    [intent] = stripe.payment_intents.values()
    assert (result.provider, result.value.message_id) == ("stripe", intent["id"])
    assert simulator.requests(prefix="/paypal") == [] and paypal.orders == {}


async def test_a_hostile_answer_after_a_send_is_ambiguous_not_a_raw_exception(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    store: str | None,
    mode: str,
) -> None:
    """A 500 whose body nests deeper than any parser goes: the attempt is recorded as maybe
    done on Stripe, so a retry with the same key cannot charge on PayPal."""
    _, paypal = accounts
    simulator.inject(
        Fault.status(500, body=b"[" * 100_000, headers={"content-type": "application/json"}),
        prefix="/stripe",
    )
    gw = Gateway(settings(simulator, store))
    with pytest.raises(AmbiguousOutcome) as raised:
        await charge(gw, mode)
    assert {a.outcome for a in raised.value.attempts} == {Outcome.AMBIGUOUS}
    simulator.clear_faults()
    simulator.inject(Fault.status(429, json=RATE_LIMITED), prefix="/stripe")
    with pytest.raises(ChainExhausted):
        await charge(gw, mode)
    await gw.aclose()
    assert simulator.requests(prefix="/paypal") == [] and paypal.orders == {}


async def test_any_exception_reading_an_answer_is_an_ambiguous_attempt(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever an adapter raises while reading an answer it got after a send, the attempt is
    recorded as maybe done, never a raw exception that skips the ledger."""
    from providers.payments.stripe import StripeAdapter

    def broken(self: Any, response: Any, default: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(StripeAdapter, "verdict", broken)
    _, paypal = accounts
    gw = Gateway(settings(simulator, None))
    with pytest.raises(AmbiguousOutcome) as raised:
        await gw.payments.charge(CHARGE)
    await gw.aclose()
    assert raised.value.attempts[0].reason.startswith("unreadable answer: RecursionError")
    assert paypal.orders == {}


async def test_with_redis_away_claims_fall_back_to_this_hosts_ledger(
    simulator: Simulator,
    accounts: tuple[StripeState, PayPalState],
    redis_server: Any,
    redis_url: str,
    mode: str,
) -> None:
    """Redis stopped: a charge is still claimed (in the SQLite ledger beside the spool),
    carried out once, and its repeat is deduplicated, without a connect timeout per call."""
    import time

    stripe, _ = accounts
    gw = Gateway(settings(simulator, redis_url))
    redis_server.stop()
    started = time.monotonic()
    first = await charge(gw, mode)
    again = await charge(gw, mode)
    elapsed = time.monotonic() - started
    await gw.aclose()
    assert (first.provider, again.value.deduplicated) == ("stripe", True)
    assert len(stripe.payment_intents) == 1
    assert elapsed < 5.0  # one Redis timeout at most, not one per ledger write


HOLDER = """
import sys, time
from resilient.ledger.rules import Claim
from resilient.ledger.sqlite import SqliteLedger
ledger = SqliteLedger(sys.argv[1])
granted = ledger.submit(Claim("k-1", "paypal", 3600.0)).result()
print(granted.owned, flush=True)
time.sleep(3600)
"""


def claim_in_a_process_then_kill_it(ledger_file: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(ledger_file)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "True\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)


async def test_a_claim_held_by_a_killed_process_stays_on_its_provider(
    simulator: Simulator, accounts: tuple[StripeState, PayPalState], mode: str
) -> None:
    """A process claims the charge on PayPal and is SIGKILLed mid-flight: the next call knows
    PayPal may have acted, so it repeats it there with the same PayPal-Request-Id (which
    PayPal answers with the original order) and never charges on Stripe."""
    stripe, paypal = accounts
    config = settings(simulator, None)
    await asyncio.to_thread(claim_in_a_process_then_kill_it, ledger_path(config.spool_path))

    gw = Gateway(config)
    result = await charge(gw, mode)
    await gw.aclose()
    assert (result.status, result.provider) == ("delivered", "paypal")
    assert [a.provider for a in result.attempts] == ["paypal"]
    assert stripe.payment_intents == {} and len(paypal.orders) == 1


def test_the_ledger_file_lies_beside_the_spool() -> None:
    assert ledger_path("/x/spool.db") == Path("/x/spool-ledger.db")
    assert ledger_path("state/queue") == Path("state/queue-ledger.db")


# -- replay ---------------------------------------------------------------------------------


def sms_settings(sim: Simulator, spool: Path) -> Any:
    return settings_from_mapping(
        {
            "gateway": {"spool_path": str(spool)},
            "providers": {
                "twilio": {
                    "kind": "twilio",
                    "api_key": "auth-token",
                    "account_sid": "AC123",
                    "base_url": sim.url("/twilio"),
                    "rate_limit": "10/s",
                    "retry": {"attempts": 1},
                    "breaker": {"min_calls": 1000},
                },
            },
            "capabilities": {"sms": {"chain": ["twilio"], "defer": True, "timeout": "2s"}},
        }
    )


async def test_two_processes_replaying_one_spool_deliver_each_parked_sms_once(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateways share a spool; the paced batch (40 SMS at 10/s) outlasts the lease a
    replayer claimed it under, so the other one claims the tail again: each SMS still goes out
    once, as every replay first claims its operation in the shared ledger."""
    import queues.replayer

    monkeypatch.setattr(queues.replayer, "LEASE_MARGIN", 0.2)  # lease 2.2s, batch needs 4s
    twilio = twilio_routes.mount(simulator, "/twilio")
    outage = simulator.inject(Fault.status(503), prefix="/twilio")
    spool = tmp_path / "spool.db"
    parker = Gateway(sms_settings(simulator, spool), background_replay=False)
    for n in range(40):
        sms = Sms(to="+15550100", body=f"code {n}", sender="+15550001", idempotency_key=f"s-{n}")
        assert (await parker.sms.send(sms)).status == "deferred"
    await parker.aclose()
    outage.clear()

    replayers = [Gateway(sms_settings(simulator, spool)) for _ in range(2)]
    try:
        await asyncio.to_thread(wait_until_sent, twilio, 40, 60.0)
        await asyncio.sleep(3.0)  # a duplicate would come within a lease or so
    finally:
        for gw in replayers:
            await gw.aclose()
    bodies = sorted(m["body"] for m in twilio.messages.values())
    assert bodies == sorted(f"code {n}" for n in range(40))


async def test_two_replayers_on_one_redis_store_deliver_each_parked_sms_once(
    simulator: Simulator, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with Redis holding the parked requests and the ledger: two replayers whose
    claims of the queue overlap still send each SMS once."""
    import queues.replayer
    from queues.backend import RedisBackend

    monkeypatch.setattr(queues.replayer, "LEASE_MARGIN", 0.2)
    twilio = twilio_routes.mount(simulator, "/twilio")
    outage = simulator.inject(Fault.status(503), prefix="/twilio")
    config = replace(sms_settings(simulator, tmp_path / "spool.db"), redis_url=redis_url)
    parker = Gateway(config, background_replay=False)
    for n in range(40):
        sms = Sms(to="+15550100", body=f"code {n}", sender="+15550001", idempotency_key=f"r-{n}")
        assert (await parker.sms.send(sms)).status == "deferred"
    await parker.aclose()
    outage.clear()

    replayers = [Gateway(config, background_replay=False) for _ in range(2)]
    stop = asyncio.Event()
    backends = [gw.deferral for gw in replayers]
    assert all(isinstance(b, RedisBackend) for b in backends)
    runs = [asyncio.create_task(b.replayer.run(stop)) for b in backends]  # type: ignore[attr-defined]
    try:
        await asyncio.to_thread(wait_until_sent, twilio, 40, 60.0)
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await asyncio.gather(*runs)
        for gw in replayers:
            await gw.aclose()
    bodies = sorted(m["body"] for m in twilio.messages.values())
    assert bodies == sorted(f"code {n}" for n in range(40))


def wait_until_sent(twilio: Any, count: int, timeout: float) -> None:
    import time

    end = time.monotonic() + timeout
    while len(twilio.messages) < count:
        if time.monotonic() > end:
            raise AssertionError(f"{len(twilio.messages)} of {count} sent in {timeout}s")
        time.sleep(0.05)
