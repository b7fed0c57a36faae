"""Attacks "deferred means durably parked": the application SIGKILLed right after a call returned
`deferred`; every such call is still parked and is delivered once providers recover (SQLite
spool and Redis).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from chaos import processes
from chaos.scenarios.harness import Effects, Profile, _serve, _wait_for, tally
from chaos.scenarios.result import CallRecord, ScenarioResult
from queues.redis_store import RedisStore
from queues.spool import Spool
from queues.store import Store
from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.testing import Fault, RedisServer, Simulator


def _run_until_killed(
    app: subprocess.Popen[str], min_deferred: int, limit: float
) -> tuple[list[CallRecord], bool]:
    """Read the application's call records as they come; SIGKILL it the moment a call returns
    `deferred` once `min_deferred` calls have. Returns every record it printed (those that came
    out before the kill landed too) and whether it was killed that way (else after `limit`)."""
    records: list[CallRecord] = []
    deferred, killed = 0, False
    watchdog = threading.Timer(limit, processes.kill, (app,))
    watchdog.start()
    try:
        assert app.stdout is not None
        for line in app.stdout:
            record = CallRecord.from_line(line)
            records.append(record)
            deferred += record.status == "deferred"
            if not killed and record.status == "deferred" and deferred >= min_deferred:
                processes.kill(app)
                killed = True
    finally:
        watchdog.cancel()
        processes.kill(app)  # already dead unless reading failed
    return records, killed


def _crash_and_recover(
    sim: Simulator, effects: Effects, folder: Path, redis_url: str | None, min_deferred: int
) -> tuple[list[CallRecord], dict[str, Any], list[str]]:
    """One application killed right after a call returned `deferred` (both providers down);
    then, providers back, a new gateway (embedded spool) or a `resilient worker --burst`
    (Redis) delivers what it parked. Returns its records, details and violations."""
    folder.mkdir()
    tag = f"crash-{folder.name}"
    mapping = processes.config_mapping(sim, folder, redis_url=redis_url)
    config = processes.write_config(folder / "resilient.yaml", mapping)
    outage = [sim.inject(Fault.status(503), prefix=p) for p in ("/p/", "/f/")]
    records, killed = _run_until_killed(
        processes.app(config, tag, folder / "app.log"), min_deferred, limit=60.0
    )
    reported = {r.key for r in records if r.status == "deferred"}
    store: Store = (
        RedisStore.from_url(redis_url) if redis_url else Spool(mapping["gateway"]["spool_path"])
    )
    problems: list[str] = []
    try:
        missing = reported - processes.parked_operations(store)
        for fault in outage:
            fault.clear()

        def delivered() -> bool:
            return reported <= effects.keys() and processes.pending(store) == 0

        end = time.monotonic() + 60.0
        if redis_url:
            while not delivered() and time.monotonic() < end:
                processes.burst(config, folder / "worker.log")
        else:
            with Gateway(load_settings(config), ops=False):
                _wait_for(delivered, end - time.monotonic())
        done, dead = delivered(), int(store.stats()["dead"])
    finally:
        store.close()
    if not killed:
        problems.append(
            f"{tag}: never deferred {min_deferred} calls\n{processes.tail(folder / 'app.log')}"
        )
    if missing:
        problems.append(f"{tag}: {len(missing)} deferred call(s) not in the store after the kill")
    if not done:
        problems.append(
            f"{tag}: parked requests not delivered\n{processes.tail(folder / 'worker.log')}"
        )
    if dead:
        problems.append(f"{tag}: {dead} request(s) dead-lettered")
    details = {
        "calls": len(records),
        "deferred_before_kill": len(reported),
        "missing_after_kill": len(missing),
        "dead_lettered": dead,
    }
    return records, details, problems


async def app_killed(profile: Profile = "short") -> ScenarioResult:
    """(8) The application process (`python -m chaos.app`, traffic while both providers are
    down) is killed with SIGKILL right after a call returned `deferred`: every call it was told
    was deferred is still parked, and is delivered once providers recover: by a new gateway
    over the same SQLite spool, and by a worker from Redis."""
    min_deferred = 50 if profile == "short" else 1000
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = _serve(sim)
        records: list[CallRecord] = []
        details: dict[str, Any] = {}
        problems: list[str] = []
        for variant, redis_url in (("spool", None), ("redis", server.url)):
            ran, details[variant], found = await asyncio.to_thread(
                _crash_and_recover, sim, effects, Path(tmp) / variant, redis_url, min_deferred
            )
            records += ran
            problems += found
        sent = {r.key for r in records}
        acted = effects.keys()  # an Effects, not a dict: keys() is a fresh set
        in_flight = {key for key in acted if key.startswith("crash-") and key not in sent}
        result = tally("app-kill", sim, effects, records, in_flight=in_flight)
        result.details.update(details, in_flight_at_kill_delivered=len(in_flight))
        for problem in problems:
            result.check(False, problem)
        result.check(result.deferred > 0, "no call was deferred")
        result.check(result.replayed == result.deferred, "not every deferred call was delivered")
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        return result
