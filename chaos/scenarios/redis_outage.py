"""Attacks "deferral survives its store going away": Redis stopped and restarted mid-run; the
gateway keeps serving, deferrals spill to the local spool and are carried back, and
everything parked is replayed.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from chaos import processes
from chaos.scenarios.harness import (
    Profile,
    _collect,
    _dead_letters,
    _load,
    _serve,
    _wait_for,
    drive,
    tally,
)
from chaos.scenarios.result import ScenarioResult
from queues.backend import RedisBackend
from queues.replayer import Replayer
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.telemetry import DeadLettered
from resilient.testing import Fault, RedisServer, Simulator


async def _replay_through_outages(replayer: Replayer, stop: asyncio.Event) -> None:
    """`Replayer.run` as a supervised worker runs it: a Redis error ends one run, the next
    starts after a poll. A request leased when Redis went away comes due when its lease ends."""
    while not stop.is_set():
        try:
            await replayer.run(stop)
        except redis.RedisError:
            await asyncio.sleep(replayer.poll)


def _outage(server: RedisServer, after: float, duration: float, into: dict[str, float]) -> None:
    """Stop `server` `after` seconds from now, start it again `duration` seconds later; the
    moments (time.monotonic) go `into` "down" and "up"."""
    time.sleep(after)
    server.stop()
    into["down"] = time.monotonic()
    time.sleep(duration)
    server.start()
    into["up"] = time.monotonic()


async def redis_outage(profile: Profile = "short") -> ScenarioResult:
    """(6) Redis (append-only, as parked requests need) is stopped and restarted mid-run while
    both providers are down for a while: the gateway keeps serving on local state, deferrals
    made while Redis is away spill to the local spool, the spill is carried into Redis once it
    is back, and everything parked (before, during and after the outage) is replayed."""
    load = _load(profile, 5.0, 60.0)
    span, start = load.duration, 0.5
    f_down = (start + 0.1 * span, 0.25 * span)  # with p down: calls park
    redis_down = (start + 0.2 * span, 0.3 * span)  # parks go to Redis, then to the spill
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(appendonly=True) as server,
    ):
        effects = _serve(sim)
        mapping = processes.config_mapping(sim, Path(tmp), redis_url=server.url, timeout=2.0)
        dead: list[DeadLettered] = []
        moments: dict[str, float] = {}
        with Gateway(settings_from_mapping(mapping), ops=False) as gw:
            backend = gw.deferral
            assert isinstance(backend, RedisBackend)
            gw.events.subscribe(lambda event: _collect(event, DeadLettered, dead))
            stop = asyncio.Event()
            replaying = asyncio.create_task(_replay_through_outages(backend.replayer, stop))
            sim.inject(Fault.status(503), prefix="/p/", after=start, duration=0.6 * span)
            sim.inject(Fault.status(503), prefix="/f/", after=f_down[0], duration=f_down[1])
            outage = threading.Thread(target=_outage, args=(server, *redis_down, moments))
            outage.start()
            records = await drive(gw, load, "redis")
            await asyncio.to_thread(outage.join)
            deferred = {r.key for r in records if r.status == "deferred"}

            def settled() -> bool:
                left = backend.spill.stats()
                return (
                    deferred <= effects.keys()
                    and left["ready"] + left["leased"] == 0
                    and processes.pending(backend.redis) == 0
                )

            drained = await asyncio.to_thread(
                _wait_for, settled, 30.0 if profile == "short" else 120
            )
            stop.set()
            await replaying
            spilled = backend.spilled
            letters = _dead_letters(backend.redis)
        result = tally("redis-outage", sim, effects, records)
        down, up = moments.get("down", math.inf), moments.get("up", math.inf)
        result.details.update(
            redis_down_s=round(up - down, 2) if up < math.inf else None,
            parked_in_redis_before_stop=sum(
                r.status == "deferred" and r.started + r.latency < down for r in records
            ),
            spilled_to_spool=spilled,
            served_while_redis_down=sum(
                r.status == "delivered" and down <= r.started < up for r in records
            ),
            dead_lettered=dict(Counter(event.reason for event in dead)),
            dead_letters=letters,
        )
        result.check(bool(deferred), "no call was deferred (the outage did not bite)")
        result.check(spilled > 0, "no deferral spilled to the spool while Redis was down")
        result.check(
            result.details["parked_in_redis_before_stop"] > 0,
            "nothing was parked in Redis before it stopped (its restart was not tested)",
        )
        result.check(
            result.details["served_while_redis_down"] > 0, "nothing was served while Redis was down"
        )
        result.check(drained, "spill or Redis queue not drained, or deferred calls not replayed")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(not dead, f"dead-lettered: {result.details['dead_lettered']}")
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        return result
