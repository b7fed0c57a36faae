"""Attacks "parked means delivered exactly once": a replay worker SIGKILLed mid-drain; another
finishes, nothing is lost, and only what was in flight at the kill is sent again (with its
key).
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from pathlib import Path

from chaos import processes
from chaos.scenarios.harness import Profile, _load, _serve, _wait_for, drive, tally
from chaos.scenarios.result import ScenarioResult
from queues.redis_store import RedisStore
from queues.replayer import Replayer
from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.testing import Fault, RedisServer, Simulator


async def worker_killed(profile: Profile = "short") -> ScenarioResult:
    """(7) Calls park in Redis under load; a replay worker (`resilient worker` in its own
    process) is killed with SIGKILL mid-drain; another worker finishes. Nothing is lost, and
    nothing takes effect twice: a request in flight at the kill is sent again with its key.
    The short profile kills a `--burst` worker (the replay loop alone); the long one an RQ
    worker, whose job's running mark must expire before another worker takes over."""
    load = _load(profile, 2.0, 20.0)
    killed_kind = "rq" if profile == "long" else "burst"
    wait = 60.0 if profile == "short" else 300.0
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = _serve(sim)
        folder = Path(tmp)
        config = processes.write_config(
            folder / "resilient.yaml", processes.config_mapping(sim, folder, redis_url=server.url)
        )
        outage = [sim.inject(Fault.status(503), prefix=p) for p in ("/p/", "/f/")]
        with Gateway(load_settings(config), ops=False) as gw:
            records = await drive(gw, load, "kill")
        for fault in outage:
            fault.clear()
        sim.inject(Fault.latency(0.05), prefix="/p/")  # a drain slow enough to be cut
        deferred = {r.key for r in records if r.status == "deferred"}

        def delivered() -> int:
            return len(deferred & effects.keys())

        first = processes.worker(
            config, folder / "worker-1.log", *([] if killed_kind == "rq" else ["--burst"])
        )
        cut = await asyncio.to_thread(_wait_for, lambda: delivered() >= len(deferred) // 4, wait)
        processes.kill(first)
        killed_at, at_kill = time.monotonic(), delivered()
        second = processes.worker(config, folder / "worker-2.log")
        store = RedisStore.from_url(server.url)
        try:
            finished = await asyncio.to_thread(
                _wait_for,
                lambda: delivered() == len(deferred) and processes.pending(store) == 0,
                wait,
            )
            dead = int(store.stats()["dead"])
        finally:
            processes.stop(second)
            store.close()
        result = tally("worker-kill", sim, effects, records)
        resent = result.details["resent_same_key"]
        result.details.update(
            killed=f"{killed_kind} worker, exit {first.returncode}",
            parked=len(deferred),
            delivered_before_kill=at_kill,
            dead_lettered=dead,
        )
        logs = "\n".join(processes.tail(folder / f"worker-{n}.log") for n in (1, 2))
        result.check(bool(deferred), "no call was deferred")
        result.check(
            cut and 0 < at_kill < len(deferred), f"not killed mid-drain: {at_kill}\n{logs}"
        )
        result.check(finished, f"the second worker did not finish the drain\n{logs}")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(dead == 0, f"{dead} request(s) dead-lettered")
        # Only what the killed worker sent in its last moments goes again: requests in flight
        # (at most its concurrency) and outcomes not yet written (group commit writes within
        # milliseconds): bounded by what it sent in its last second.
        last_second = sum(
            killed_at - 1.0 <= r.received_at <= killed_at for r in sim.requests(prefix="/p/")
        )
        concurrency = inspect.signature(Replayer).parameters["concurrency"].default
        bound = max(concurrency, last_second)
        result.details["resend_bound"] = bound
        result.check(
            resent <= bound, f"{resent} requests sent again > {bound} sent in the last 1 s"
        )
        return result
