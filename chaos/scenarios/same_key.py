"""Attacks "exactly once across processes": two applications charge the same idempotency keys at
the same moment during a Stripe-to-PayPal failover; every key is charged once (ledger in
SQLite, then in Redis) and both processes get that charge.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos import processes
from chaos.scenarios.charger import SAME_KEY_GAP
from chaos.scenarios.harness import Effects, Profile, _pick, _serve_payments, tally
from chaos.scenarios.result import CallRecord, ScenarioResult, max_per_second
from resilient.errors import OperationInProgress
from resilient.testing import Fault, RedisServer, Simulator

RATE_LIMITED = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}
PAYPAL_LATENCY = 0.5  # longer than B's short deadline: its wait on A's claim runs out first
ROLES = ("A", "B")


def _read_records(app: subprocess.Popen[str], into: list[CallRecord]) -> None:
    assert app.stdout is not None
    for line in app.stdout:
        into.append(CallRecord.from_line(line))


def _charge_from_two_processes(
    sim: Simulator, folder: Path, redis_url: str | None, keys: int, storm: Fault, window: float
) -> tuple[dict[str, list[CallRecord]], int, list[str]]:
    """Two chargers (A, B) over one config charge the same `keys` keys, Stripe answering with
    `storm` (its 429s) for the first `window` seconds. Returns each one's records (in the order
    its calls returned), how many requests the 429s hit, and what went wrong running them."""
    folder.mkdir()
    config = processes.write_config(
        folder / "resilient.yaml", processes.payments_mapping(sim, folder, redis_url=redis_url)
    )
    prefix = f"same-{folder.name}"
    apps = {
        role: processes.charger(config, role, prefix, keys, folder / f"app-{role}.log")
        for role in ROLES
    }
    records: dict[str, list[CallRecord]] = {role: [] for role in ROLES}
    problems: list[str] = []
    hits = 0
    limit = 30.0 + keys * SAME_KEY_GAP + 60.0  # start-up, the schedule, the slowest retries
    watchdogs = [threading.Timer(limit, processes.kill, (app,)) for app in apps.values()]
    for watchdog in watchdogs:
        watchdog.start()
    try:
        for role, app in apps.items():
            assert app.stdout is not None
            if app.stdout.readline().strip() != "ready":
                tail = processes.tail(folder / f"app-{role}.log")
                return records, hits, [f"{prefix}: charger {role} did not start\n{tail}"]
        lead = 0.3
        at_stripe = sim.inject(storm, prefix="/stripe/", after=lead, duration=window)
        start = time.monotonic() + lead
        for app in apps.values():
            assert app.stdin is not None
            app.stdin.write(f"{start!r}\n")
            app.stdin.close()
        readers = [
            threading.Thread(target=_read_records, args=(app, records[role]))
            for role, app in apps.items()
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        hits = at_stripe.hits
        for role, app in apps.items():
            code = app.wait(10)
            if code != 0:
                tail = processes.tail(folder / f"app-{role}.log")
                problems.append(f"{prefix}: charger {role} exited {code}\n{tail}")
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
        for app in apps.values():
            processes.kill(app)
    return records, hits, problems


def _same_key_verdict(
    prefix: str, keys: int, records: dict[str, list[CallRecord]], effects: Counter[str]
) -> tuple[dict[str, Any], list[str]]:
    """Per key: exactly one effect at the processors, exactly one call that carried it out
    (delivered, not deduplicated), and both processes ending delivered with that charge's id.
    Counts how the other process's first call ended: it `waited` on the claim and got the
    result, found it `deduplicated` at once, or raised OperationInProgress (`in_progress`)."""
    calls: dict[tuple[str, str], list[CallRecord]] = {}
    for role, recs in records.items():
        for record in recs:
            calls.setdefault((role, record.key), []).append(record)
    second: Counter[str] = Counter()
    carried_by: Counter[str] = Counter()
    problems: list[str] = []
    for n in range(keys):
        key = f"{prefix}-{n}"
        mine = {role: calls.get((role, key), []) for role in ROLES}
        if effects[key] != 1:
            problems.append(f"{key}: {effects[key]} effects at Stripe and PayPal")
        finals = {role: (c[-1].status, c[-1].receipt) if c else None for role, c in mine.items()}
        receipts = {final[1] for final in finals.values() if final is not None}
        if any(f is None or f[0] != "delivered" for f in finals.values()) or len(receipts) != 1:
            problems.append(f"{key}: not one delivered charge for both processes: {finals}")
        sent = [
            (role, r)
            for role, c in mine.items()
            for r in c
            if r.status == "delivered" and not r.deduplicated
        ]
        if len(sent) != 1:
            problems.append(f"{key}: carried out by {len(sent)} calls")
            continue
        role, sender = sent[0]
        carried_by[f"{role}:{sender.provider}"] += 1
        other = mine["B" if role == "A" else "A"]
        first = other[0] if other else None
        if first is None:
            second["missing"] += 1
        elif first.status == "delivered":
            waited = first.started < sender.started + sender.latency
            second["waited" if waited else "deduplicated"] += 1
        elif first.status == OperationInProgress.__name__:
            second["in_progress"] += 1
        else:
            second[f"failed:{first.status}"] += 1
    details = {
        "keys": keys,
        "carried_out_by": dict(sorted(carried_by.items())),
        "second_call": dict(sorted(second.items())),
        "calls": {role: len(recs) for role, recs in records.items()},
    }
    return details, problems


async def same_key_two_processes(profile: Profile = "short") -> ScenarioResult:
    """(10) Two application processes with one config charge the same idempotency keys at
    nearly the same moment while Stripe answers 429 for a while (the long profile: on and off),
    so charges fail over to a PayPal slow enough for the two calls to overlap: once with the
    embedded SQLite ledger (one spool_path), once with the ledger in a real redis-server. Every
    key is charged exactly once across Stripe and PayPal together; one process carries it out
    and the other gets the same charge: by waiting on its claim, from the ledger, or after
    OperationInProgress (its deadline came first) by a retry."""
    keys = _pick(profile, 60, 600)
    schedule = keys * SAME_KEY_GAP
    limited = Fault.status(429, json=RATE_LIMITED)
    # short: 429s for the first 40% of the run, then Stripe answers; long: 429s come and go
    storm = _pick(profile, limited, Fault.flapping(up=2.0, down=3.0, fault=limited))
    window = _pick(profile, 0.4 * schedule, schedule)
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = Effects()
        stripe, paypal = _serve_payments(sim, effects)
        sim.inject(Fault.latency(PAYPAL_LATENCY), method="POST", path="/paypal/v2/checkout/orders")
        records: list[CallRecord] = []
        details: dict[str, Any] = {}
        problems: list[str] = []
        for variant, redis_url in (("sqlite", None), ("redis", server.url)):
            by_role, hits, found = await asyncio.to_thread(
                _charge_from_two_processes,
                sim,
                Path(tmp) / variant,
                redis_url,
                keys,
                storm,
                window,
            )
            verdict, wrong = _same_key_verdict(f"same-{variant}", keys, by_role, effects.by_key())
            details[variant] = {**verdict, "stripe_429s": hits}
            problems += found + wrong
            records += [r for recs in by_role.values() for r in recs]
        intents, orders = dict(stripe.payment_intents), dict(paypal.orders)
        result = tally("same-key", sim, effects, records)
        at_stripe = sim.requests(method="POST", path="/stripe/v1/payment_intents")
        result.max_attempts_per_s_at_provider = max_per_second([r.received_at for r in at_stripe])
        created = len(intents) + len(orders)
        result.details.update(
            details,
            payment_intents=len(intents),
            paypal_orders=len(orders),
            receipts_unknown_to_processors=len(
                {r.receipt for r in records if r.receipt} - set(intents) - set(orders)
            ),
        )
        for problem in problems[:10]:
            result.check(False, problem)
        result.check(len(problems) <= 10, f"... and {len(problems) - 10} more key(s) went wrong")
        result.check(
            created == 2 * keys, f"{created} charges created at the processors for {2 * keys} keys"
        )
        result.check(
            not result.details["receipts_unknown_to_processors"],
            "a caller was given a charge id no processor created",
        )
        for variant in ("sqlite", "redis"):
            second = details[variant]["second_call"]
            result.check(details[variant]["stripe_429s"] > 0, f"{variant}: Stripe never said 429")
            result.check(
                second.get("waited", 0) > 0, f"{variant}: no second call waited on a claim"
            )
            result.check(
                second.get("in_progress", 0) > 0,
                f"{variant}: no second call ran out of time (OperationInProgress)",
            )
        return result
