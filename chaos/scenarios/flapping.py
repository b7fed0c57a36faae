"""Attacks "the breaker does not thrash": a primary flapping up and down; breaker transitions
stay bounded per flap cycle and retries within the retry budget.
"""

from __future__ import annotations

import math
import tempfile
import time
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
    RetrySettings,
)
from resilient.testing import Fault, Simulator


async def flapping_provider(profile: Profile = "short") -> ScenarioResult:
    """(5) The primary flaps up/down: the breaker does not thrash and the retries stay within
    the retry budget."""
    load = _load(profile, 4.5, 60.0)
    up, down = (1.0, 1.5) if profile == "short" else (3.0, 3.0)
    open_for = 0.5
    retry = RetrySettings(
        attempts=4, backoff_base=0.01, backoff_cap=0.05, budget_ratio=0.2, budget_floor=10
    )
    breaker = BreakerSettings(min_calls=5, window=1.0, open_for=open_for, open_for_max=2.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider("p", sim, retry=retry, breaker=breaker),
            _provider("f", sim),
            spool=Path(tmp) / "spool.db",
        )
        with gw:
            transitions = _transitions(gw, "p")
            began = time.monotonic()
            sim.inject(
                Fault.flapping(up=up, down=down, fault=Fault.status(503)),
                prefix="/p",
                duration=load.duration,
            )
            records = await drive(gw, load, "flap")
            elapsed = time.monotonic() - began
        result = tally("flapping", sim, effects, records)
        at_p = len(sim.requests(prefix="/p"))
        windows = math.ceil(elapsed / retry.budget_window) + 1
        attempt_bound = math.ceil(
            result.calls * (1 + retry.budget_ratio) + retry.budget_floor * windows
        )
        opens = sum(new == "open" for _, _, new in transitions)
        # per flap cycle: one trip, then a failed probe (open -> half_open -> open) at most
        # once per open period while down, then one probe that closes it: no thrashing beyond
        cycles = math.ceil(elapsed / (up + down))
        transition_bound = cycles * (2 * math.ceil(down / open_for) + 3)
        result.details.update(
            attempts_at_p=at_p,
            attempt_bound=attempt_bound,
            breaker_transitions=len(transitions),
            breaker_opens=opens,
            transition_bound=transition_bound,
            flap_cycles=cycles,
        )
        result.check(opens > 0, "the breaker never opened")
        result.check(at_p <= attempt_bound, f"{at_p} attempts > retry budget {attempt_bound}")
        result.check(
            len(transitions) <= transition_bound,
            f"breaker thrashed: {len(transitions)} transitions > {transition_bound}",
        )
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result
