"""Attacks "slow is unhealthy": a primary slower than its slow-call threshold; its breaker opens
and calls fail over.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from chaos.scenarios.harness import (
    Profile,
    _gateway,
    _load,
    _provider,
    _serve,
    _transitions,
    drive,
    tally,
)
from chaos.scenarios.result import ScenarioResult
from resilient.settings import (
    BreakerSettings,
)
from resilient.testing import Fault, Simulator


async def slow_provider(profile: Profile = "short") -> ScenarioResult:
    """(9) The primary answers, but slower than its slow-call threshold: counted unhealthy, its
    breaker opens and calls fail over."""
    load = _load(profile, 3.0, 60.0)
    breaker = BreakerSettings(min_calls=5, window=2.0, slow_call=0.1, open_for=1.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider("p", sim, breaker=breaker), _provider("f", sim), spool=Path(tmp) / "s.db"
        )
        with gw:
            transitions = _transitions(gw, "p")
            sim.inject(Fault.latency(0.3), prefix="/p")
            records = await drive(gw, load, "slow")
            status = gw.status()["providers"]["p"]
        result = tally("slow-provider", sim, effects, records)
        opened = [at for at, _, new in transitions if new == "open"]
        after = [r for r in records if opened and r.started > opened[0]]
        by_f = sum(r.provider == "f" for r in after)
        result.details.update(
            breaker_opens=len(opened),
            after_open=len(after),
            served_by_fallback_after_open=by_f,
            status=status.get("breaker", status),
        )
        result.check(bool(opened), "the slow provider was never counted unhealthy")
        result.check(
            bool(after) and by_f >= 0.8 * len(after),
            f"only {by_f}/{len(after)} calls failed over once the breaker opened",
        )
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result
