"""Attacks "a call that may have acted is never sent elsewhere": connection resets before headers
and mid-body; calls are retried under their key or fail over once the breaker opens, a call
that may have acted ends ambiguous, and no charge reaches both Stripe and PayPal.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

from chaos.processes import PAYPAL_KEY, STRIPE_KEY
from chaos.scenarios.harness import (
    Profile,
    _load,
    _provider,
    _serve,
    _serve_payments,
    charge_sends,
    drive,
    tally,
)
from chaos.scenarios.result import ScenarioResult, max_per_second
from resilient.gateway import Gateway
from resilient.secrets import Secret
from resilient.settings import (
    CapabilitySettings,
    GatewaySettings,
    RetrySettings,
)
from resilient.testing import Fault, Simulator


async def connection_reset(profile: Profile = "short") -> ScenarioResult:
    """(4) The primary and Stripe reset connections: first intermittently before any response
    byte, then every response mid-body (after acting). Calls are retried (their key makes a
    repeat safe) or failed over once the breaker opens; a call that may have acted ends
    ambiguous, never on the other provider. Payments run alongside over stripe -> paypal: a key
    Stripe ever received never reaches PayPal, so no charge happens twice."""
    load = _load(profile, 4.0, 60.0)
    charges = replace(load, threads=1, tasks=2, pace=0.05)
    start = 0.5
    flaky = (start, load.duration * 0.35)  # resets before headers, 0.1 s in every 0.4 s
    cut = (start + flaky[1], load.duration * 0.3)  # then every response cut mid-body
    retry = RetrySettings(attempts=3, backoff_base=0.01, backoff_cap=0.05)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        _serve_payments(sim, effects)
        spool = Path(tmp) / "spool.db"
        providers = [
            _provider("p", sim, retry=retry),
            _provider("f", sim),
            _provider("stripe", sim, kind="stripe", retry=retry, api_key=Secret(STRIPE_KEY)),
            _provider(
                "paypal",
                sim,
                kind="paypal",
                api_key=Secret(PAYPAL_KEY),
                options={"client_id": "chaos-client"},
            ),
        ]
        settings = GatewaySettings(
            source="chaos:reset",
            spool_path=str(spool),
            overrides_path=str(spool.with_suffix(".overrides.json")),
            providers={p.name: p for p in providers},
            capabilities={
                "http": CapabilitySettings("http", ("p", "f")),
                "payments": CapabilitySettings("payments", ("stripe", "paypal")),
            },
        )
        with Gateway(settings, ops=False) as gw:
            resets = Fault.flapping(up=0.3, down=0.1, fault=Fault.reset())
            hits = [
                sim.inject(fault, prefix=prefix, after=after, duration=duration)
                for prefix in ("/p/", "/stripe/")
                for fault, (after, duration) in ((resets, flaky), (Fault.reset_mid_body(), cut))
            ]
            calls, paid = await asyncio.gather(
                drive(gw, load, "reset"),
                drive(gw, charges, "charge", sends=charge_sends(gw)),
            )
        result = tally("connection-reset", sim, effects, [*calls, *paid])
        at_stripe = sim.requests(prefix="/stripe/v1/payment_intents")
        at_paypal = sim.requests(prefix="/paypal/v2/checkout/orders")
        stripe_keys = {r.idempotency_key for r in at_stripe}
        paypal_keys = {r.headers.get("paypal-request-id") for r in at_paypal}
        cut_keys = {r.idempotency_key for r in at_stripe if r.fault == "reset_mid_body"}
        cut_outcomes = Counter(
            f"{r.status}:{r.provider}" if r.provider else r.status
            for r in paid
            if r.key in cut_keys
        )
        retried = sum(
            r.provider == r.attempts[-1][0] and (r.provider, "ambiguous") in r.attempts[:-1]
            for r in [*calls, *paid]
            if r.status == "delivered" and r.attempts
        )
        by = result.details["served_by"]
        result.details.update(
            reset_hits=[h.hits for h in hits],
            retried_then_served=retried,
            failed_over_to_f=by.get("f", 0),
            charged_by_paypal=by.get("paypal", 0),
            charges=len(paid),
            charges_cut_mid_response=len(cut_keys),
            cut_charge_outcomes=dict(cut_outcomes),
            keys_at_both_processors=len(stripe_keys & paypal_keys),
            stripe_max_attempts_per_s=max_per_second([r.received_at for r in at_stripe]),
        )
        result.check(all(h.hits for h in hits), f"a fault never hit: {[h.hits for h in hits]}")
        result.check(retried > 0, "no call was retried after a reset and then served")
        result.check(by.get("f", 0) > 0, "no call failed over to f while p reset connections")
        result.check(bool(cut_keys), "no charge was cut mid-response")
        result.check(
            not stripe_keys & paypal_keys,
            f"{len(stripe_keys & paypal_keys)} charge(s) reached Stripe and then PayPal",
        )
        result.check(
            "paypal" not in "".join(cut_outcomes),
            f"a charge cut mid-response was charged by PayPal: {dict(cut_outcomes)}",
        )
        others = set(result.details["errors"]) - {"AmbiguousOutcome"}
        result.check(not others, f"calls failed otherwise than ambiguous: {others}")
        return result
