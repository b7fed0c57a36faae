"""Attacks "nothing accepted is lost": the primary down under load (the fallback too for part
of it); every call is served or deferred and replayed, and the down primary sees only bounded
probes and is back in use soon after recovery.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

from chaos.scenarios.harness import (
    Profile,
    _collect,
    _dead_letters,
    _gateway,
    _load,
    _provider,
    _serve,
    _wait_for,
    drive,
    tally,
)
from chaos.scenarios.result import ScenarioResult
from queues.backend import EmbeddedBackend
from resilient.settings import (
    BreakerSettings,
)
from resilient.telemetry import DeadLettered
from resilient.testing import Fault, Simulator


async def primary_down(profile: Profile = "short") -> ScenarioResult:
    """(1) The primary is down for a window under load; the fallback too for part of it, so some
    calls park. Every call is served or deferred, the deferred ones are replayed after recovery,
    the primary is back in use within seconds, and it saw only bounded probes while down."""
    load = _load(profile, 4.0, 60.0)
    start, window = 0.5, load.duration * 0.5  # the primary is down over [start, start + window)
    both = (start + window * 0.3, window * 0.3)  # and the fallback over this (after, duration)
    open_for = 0.5
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        breaker = BreakerSettings(min_calls=5, window=2.0, open_for=open_for, open_for_max=open_for)
        gw = _gateway(
            _provider("p", sim, breaker=breaker),
            _provider("f", sim, breaker=breaker),
            spool=Path(tmp) / "spool.db",
            defer=True,
        )
        dead: list[DeadLettered] = []
        gw.events.subscribe(lambda event: _collect(event, DeadLettered, dead))
        with gw:
            began = time.monotonic()
            sim.inject(Fault.status(503), prefix="/p", after=start, duration=window)
            sim.inject(Fault.status(503), prefix="/f", after=both[0], duration=both[1])
            records = await drive(gw, load, "down")
            deferred = {r.key for r in records if r.status == "deferred"}

            def replayed() -> bool:
                return deferred <= effects.keys()

            await asyncio.to_thread(_wait_for, replayed, 30.0 if profile == "short" else 180.0)
            backend = gw.deferral
            assert isinstance(backend, EmbeddedBackend)
            letters = _dead_letters(backend.spool)
        result = tally("primary-down", sim, effects, records)
        down_from, up_at = began + start, began + window + start
        at_p = sim.requests(prefix="/p")
        during = [r for r in at_p if down_from + 1.0 <= r.received_at < up_at]
        # the breaker trips within its first second; after that, each open period admits one
        # probe per caller path (live calls and the replayer): a generous bound of 3 per period
        probe_bound = 3 * (math.ceil((up_at - down_from - 1.0) / open_for) + 1)
        back = [r.received_at for r in at_p if r.received_at >= up_at and r.status == 202]
        back_after = (min(back) - up_at) if back else None
        result.details.update(
            dead_lettered=dict(Counter(event.reason for event in dead)),
            dead_letters=letters,
            outage_s=round(window, 2),
            probes_while_down=len(during),
            probe_bound=probe_bound,
            primary_back_after_s=None if back_after is None else round(back_after, 2),
        )
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        result.check(result.deferred > 0, "no call was deferred (the fault did not bite)")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(len(during) <= probe_bound, f"{len(during)} probes > {probe_bound}")
        result.check(
            back_after is not None and back_after <= 5.0,
            f"primary not back in use within 5 s of recovery ({back_after})",
        )
        return result
