"""Attacks "every call ends within its deadline": a primary that accepts connections and never
answers; calls end by their deadline (plus 1 s of grace), failing only as ambiguous or
deadline-exceeded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from chaos.scenarios.harness import Profile, _gateway, _load, _provider, _serve, drive, tally
from chaos.scenarios.result import ScenarioResult
from resilient.settings import (
    TimeoutSettings,
)
from resilient.testing import Fault, Simulator


async def silent_provider(profile: Profile = "short") -> ScenarioResult:
    """(3) The primary accepts connections and never answers: every call ends within its
    deadline (plus 1 s of grace)."""
    load = _load(profile, 3.0, 60.0)
    deadline = 1.5
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        timeouts = TimeoutSettings(connect=0.3, read=5.0, write=5.0, attempt=0.4)
        gw = _gateway(
            _provider("p", sim, timeouts=timeouts),
            _provider("f", sim, timeouts=timeouts),
            spool=Path(tmp) / "spool.db",
            timeout=deadline,
        )
        with gw:
            hang = sim.inject(Fault.hang(), prefix="/p")
            records = await drive(gw, load, "hang")
        result = tally("silent-provider", sim, effects, records)
        slowest = max((r.latency for r in records), default=0.0)
        result.details.update(deadline_s=deadline, slowest_call_s=round(slowest, 3))
        result.check(hang.hits > 0, "the hang never hit")
        result.check(slowest <= deadline + 1.0, f"a call took {slowest:.2f}s > {deadline} + 1 s")
        result.check(result.served > 0, "nothing was served by the fallback")
        # a POST that got no answer may have acted: failing honestly is allowed, hanging is not
        honest = {"AmbiguousOutcome", "DeadlineExceeded"}
        others = set(result.details["errors"]) - honest
        result.check(not others, f"calls failed otherwise than ambiguous/deadline: {others}")
        return result
