"""Attacks "exactly once without an idempotency key": paced SMS replays through Twilio with
workers SIGKILLed while requests are held in flight; every parked message is sent once
(looked up, never blindly resent), within the rate limit.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos import processes
from chaos.scenarios.charger import _charge_record
from chaos.scenarios.harness import Profile, _dead_letters, _pick, _wait_for
from chaos.scenarios.result import CallRecord, ScenarioResult, _percentile, max_per_second
from providers import Sms
from queues.spool import Spool
from resilient.config import settings_from_mapping
from resilient.errors import CallFailed
from resilient.gateway import Gateway
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount

MESSAGES = f"/twilio/2010-04-01/Accounts/{processes.TWILIO_ACCOUNT}/Messages.json"


async def _park_sms(sim: Simulator, folder: Path, bodies: list[str]) -> list[CallRecord]:
    """Send each body once (to four numbers in turn) while Twilio answers 503: every message
    parks. The parking gateway is not paced (parking is not under test here)."""
    outage = sim.inject(Fault.status(503), prefix="/twilio/")
    settings = settings_from_mapping(processes.sms_mapping(sim, folder, rate=None))
    gate = asyncio.Semaphore(50)
    with Gateway(settings, ops=False, background_replay=False) as gw:

        async def park(n: int, body: str) -> CallRecord:
            key = f"paced-{n}"
            sms = Sms(to=f"+1555010{n % 4}", body=body, sender="+15550001", idempotency_key=key)
            async with gate:
                started = time.monotonic()
                try:
                    result = await gw.sms.send(sms)
                except CallFailed as exc:
                    return _charge_record(key, "async", started, None, exc)
                return CallRecord(
                    key,
                    "async",
                    result.status,
                    result.provider,
                    started,
                    time.monotonic() - started,
                )

        records = await asyncio.gather(*(park(n, body) for n, body in enumerate(bodies)))
    outage.clear()
    return list(records)


def _kill_while_held(
    sim: Simulator,
    workers: list[subprocess.Popen[str]],
    delivered: Callable[[], int],
    target: int,
    held: tuple[int, int],
    wait: float,
) -> dict[str, Any]:
    """Once `target` messages are delivered, Twilio holds the next requests (`held`: so many
    done first, so many not done) and the moment all of them are in flight, SIGKILL every
    worker: they die with requests whose outcome they never learnt."""
    reached = _wait_for(lambda: delivered() >= target, wait)
    done, not_done = held
    hung = [
        sim.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES, times=done),
        sim.inject(Fault.hang(), method="POST", path=MESSAGES, times=not_done),
    ]
    in_flight = _wait_for(lambda: sum(h.hits for h in hung) >= done + not_done, wait)
    for worker in workers:
        processes.kill(worker)
    for fault in hung:
        fault.clear()
    return {
        "workers": len(workers),
        "exit": [worker.returncode for worker in workers],
        "reached": reached,
        "held_in_flight": in_flight,
        "delivered_at_kill": delivered(),
    }


async def worker_killed_paced(profile: Profile = "short") -> ScenarioResult:
    """(11) SMS parked for Twilio (which takes no idempotency key) drain through `resilient
    worker` at Twilio's rate limit; mid-drain Twilio holds some requests (some done, some not)
    and, while they are in flight, the worker is SIGKILLed; two workers sharing the spool drain
    the rest (the long profile kills those too, later in the drain, and starts two more). Every
    parked message is sent exactly once, counted at Twilio by body: what the dead worker may
    have sent is looked up in Twilio's Messages list, never simply sent again."""
    count, rate = _pick(profile, (60, 10), (600, 20))
    cuts = _pick(profile, (0.3,), (0.25, 0.6))
    held = _pick(profile, (3, 2), (6, 4))  # per kill: done then held; held, not done
    wait = _pick(profile, 60.0, 240.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        twilio = mount(sim, "twilio", prefix="/twilio")
        folder = Path(tmp)
        mapping = processes.sms_mapping(sim, folder, rate=f"{rate}/s")
        config = processes.write_config(folder / "resilient.yaml", mapping)
        bodies = [f"paced {n} of {count}" for n in range(count)]
        records = await _park_sms(sim, folder, bodies)
        parked = {b for b, r in zip(bodies, records, strict=True) if r.status == "deferred"}

        def sent() -> Counter[str]:
            return Counter(m["body"] for m in dict(twilio.messages).values())

        def delivered() -> int:
            return len(parked & set(sent()))

        drain_from = time.monotonic()
        spool = Spool(mapping["gateway"]["spool_path"])
        logs = [folder / "worker-1.log"]
        running = [processes.worker(config, logs[0])]
        kills: list[dict[str, Any]] = []
        try:
            for cut in cuts:
                kill = await asyncio.to_thread(
                    _kill_while_held, sim, running, delivered, int(len(parked) * cut), held, wait
                )
                kills.append(kill)
                logs += [folder / f"worker-{len(logs) + n}.log" for n in (1, 2)]
                running = [processes.worker(config, log) for log in logs[-2:]]
            finished = await asyncio.to_thread(
                _wait_for,
                lambda: delivered() == len(parked) and processes.pending(spool) == 0,
                wait,
            )
            await asyncio.sleep(1.0)  # a duplicate would come with the same drain
            dead = int(spool.stats()["dead"])
            letters = _dead_letters(spool)
        finally:
            for worker in running:
                processes.stop(worker)
            spool.close()
        counts = sent()
        sends = [r.received_at for r in sim.requests(method="POST", path=MESSAGES)]
        sends = [at for at in sends if at >= drain_from]
        lookups = len(sim.requests(method="GET", path=MESSAGES))
        result = ScenarioResult(
            name="worker-kill-paced",
            calls=len(records),
            served=sum(r.status == "delivered" for r in records),
            deferred=len(parked),
            replayed=sum(counts[b] >= 1 for b in parked),
            lost=sum(counts[b] == 0 for b in parked),
            duplicated=sum(n > 1 for n in counts.values()),
            max_attempts_per_s_at_provider=max_per_second(sends),
            p99_latency=_percentile([r.latency for r in records], 0.99),
            failed=sum(r.status not in ("delivered", "deferred") for r in records),
        )
        unknown = set(counts) - parked
        # each worker paces itself: the most at Twilio is two workers' limits, plus arrivals
        # bunched by a late wake-up (as in the 429 storms)
        pace_bound = 2 * rate + rate // 2
        result.details.update(
            rate_limit_per_s=rate,
            pace_bound=pace_bound,
            kills=kills,
            held_per_kill={"done": held[0], "not_done": held[1]},
            sends=len(sends),
            lookups=lookups,
            dead_lettered=dead,
            dead_letters=letters,
            drain_s=round(time.monotonic() - drain_from, 1),
        )
        tails = "\n".join(processes.tail(log, 5) for log in logs)
        result.check(len(parked) == count, f"only {len(parked)} of {count} messages parked")
        for n, kill in enumerate(kills, 1):
            result.check(
                kill["reached"] and kill["held_in_flight"],
                f"kill {n}: the drain or the held requests never came\n{tails}",
            )
            result.check(
                0 < kill["delivered_at_kill"] < len(parked),
                f"kill {n}: not mid-drain ({kill['delivered_at_kill']} delivered)",
            )
            result.check(
                all(code == -9 for code in kill["exit"]), f"kill {n}: exits {kill['exit']}"
            )
        result.check(finished, f"the drain did not finish\n{tails}")
        result.check(result.lost == 0, f"{result.lost} parked message(s) never sent")
        result.check(result.duplicated == 0, f"{result.duplicated} message(s) sent twice")
        result.check(not unknown, f"{len(unknown)} message(s) nobody parked")
        result.check(dead == 0, f"{dead} request(s) dead-lettered")
        result.check(
            lookups >= sum(held) * len(cuts),
            f"{lookups} lookups: fewer than the requests held at the kills",
        )
        result.check(
            result.max_attempts_per_s_at_provider <= pace_bound,
            f"{result.max_attempts_per_s_at_provider} sends/s at Twilio > {pace_bound}",
        )
        return result
