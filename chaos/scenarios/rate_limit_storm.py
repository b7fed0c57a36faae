"""Attacks "a storm does not multiply load": 429 storms with and without Retry-After; the
provider never sees more than its rate limit, retries stay within the retry budget, and once
the storm is known only probes reach it.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from chaos.scenarios.harness import Profile, _gateway, _load, _provider, _serve, drive, tally
from chaos.scenarios.result import ScenarioResult, max_per_second
from resilient.settings import (
    RetrySettings,
)
from resilient.testing import Fault, Simulator
from resilient.units import parse_rate


async def _rate_limit_storm(name: str, fault: Fault, profile: Profile) -> ScenarioResult:
    """The primary documents a limit of `limit`/s (its `rate_limit`) while callers offer several
    times that; then it answers 429 to everything. The provider never sees more than its limit
    in any second, the storm does not multiply load (retries stay within the retry budget), and
    once the gateway has seen the storm for a second only probes reach the provider."""
    load = _load(profile, 3.5, 60.0)
    limit, settled_bound = 40, 10
    # The limiter spaces admissions exactly, but a caller that wakes late from its wait sends
    # together with the next one: arrivals on the wire bunch by a few slots under load.
    jitter = limit // 4
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider(
                "p",
                sim,
                retry=RetrySettings(attempts=3, backoff_base=0.05),
                rate_limit=parse_rate(f"{limit}/s"),
            ),
            _provider("f", sim),
            spool=Path(tmp) / "spool.db",
        )
        with gw:
            storm_from = time.monotonic() + 0.5
            storm = sim.inject(fault, prefix="/p", after=0.5, duration=load.duration - 1.0)
            records = await drive(gw, load, name)
        result = tally(name, sim, effects, records)
        storm_until = storm.ends_at or time.monotonic()
        during = [
            r.received_at
            for r in sim.requests(prefix="/p")
            if storm_from <= r.received_at < storm_until
        ]
        settled = max_per_second([at for at in during if at >= storm_from + 1.0])
        offered = sum(
            r.started < storm_until and r.started + r.latency >= storm_from for r in records
        )
        retry = gw.provider("p").settings.retry
        windows = math.ceil((storm_until - storm_from) / retry.budget_window) + 1
        amplified = math.ceil(offered * (1 + retry.budget_ratio) + retry.budget_floor * windows)
        failover = sum(r.provider == "f" and storm_from <= r.started < storm_until for r in records)
        result.details.update(
            limit_per_s=limit,
            jitter_allowance=jitter,
            storm_attempts=len(during),
            storm_attempts_per_s=max_per_second(during),
            settled_attempts_per_s=settled,
            settled_bound=settled_bound,
            offered_during_storm=offered,
            attempt_bound=amplified,
            served_by_fallback_during_storm=failover,
        )
        top = result.max_attempts_per_s_at_provider
        result.check(storm.hits > 0, "the storm never hit")
        result.check(
            top <= limit + jitter, f"{top} attempts/s at the provider > {limit}/s + {jitter}"
        )
        result.check(
            len(during) <= amplified,
            f"{len(during)} attempts > {amplified} allowed by the retry budget for {offered} calls",
        )
        result.check(settled <= settled_bound, f"{settled} attempts/s after the first second")
        result.check(failover > 0, "nothing failed over during the storm")
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result


async def rate_limit_storm_retry_after(profile: Profile = "short") -> ScenarioResult:
    """(2a) A 429 storm with Retry-After: 1 s. The provider is paused for every caller."""
    return await _rate_limit_storm("429-retry-after", Fault.rate_limited(retry_after=1), profile)


async def rate_limit_storm_bare(profile: Profile = "short") -> ScenarioResult:
    """(2b) A 429 storm without any hint: backoff and the breaker keep the provider unhammered."""
    return await _rate_limit_storm("429-no-hint", Fault.rate_limited(), profile)
