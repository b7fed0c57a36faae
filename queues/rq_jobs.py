"""Replay on RQ: `resilient worker` runs RQ workers (with the scheduler) on any number of
machines; the work is a `drain` job per capability.

One RQ job per parked request, forked per job, could not move thousands a second; so a job
drains a capability for a bounded slice, many requests concurrently, then schedules its
successor: at once while there is work, after a short pause when there is none. Redis keys
keep at most one drain pending or running per capability however many workers run; the running
key expires by itself, so when a worker dies mid-job, any other worker's `keep_scheduled` loop
starts the capability again. Workers run jobs in-process (SimpleWorker), so each keeps its
gateway, breakers and ramp between jobs.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import redis
from rq import Queue

from queues.backend import RedisBackend
from queues.replayer import worker_settings
from resilient.config import load_settings
from resilient.errors import ResilientError
from resilient.gateway import Gateway

QUEUE = "resilient-replay"
SLICE = 5.0  # seconds one job drains before it hands the worker back
IDLE_PAUSE = 0.5  # seconds before the next job when nothing was due
RUNNING_TTL = SLICE + 10.0  # a job's running mark outlives it by this much at most
REARM_INTERVAL = 2.0  # seconds between a worker's checks that every capability is scheduled
_PENDING = "resilient:q:pending:{}"
_RUNNING = "resilient:q:running:{}"

_runners: dict[str | None, RedisBackend] = {}


def _runner(config: str | None) -> RedisBackend:
    """This worker process's gateway and Redis backend for `config`, built once."""
    runner = _runners.get(config)
    if runner is None:
        gateway = Gateway(worker_settings(load_settings(config)), background_replay=False)
        backend = gateway.deferral
        if not isinstance(backend, RedisBackend):
            raise ResilientError(
                f"RQ workers need [gateway] redis_url in {config or '$RESILIENT_CONFIG'}"
            )
        runner = _runners[config] = backend
    return runner


def schedule(
    connection: redis.Redis, config: str | None, capability: str, delay: float = 0.0
) -> bool:
    """Queue the next drain of `capability` unless one is already pending or running."""
    if connection.exists(_RUNNING.format(capability)):
        return False
    job_id = f"resilient-drain-{capability}-{uuid.uuid4().hex[:12]}"
    if not connection.set(_PENDING.format(capability), job_id, nx=True, ex=300):
        return False
    queue = Queue(QUEUE, connection=connection)
    options: dict[str, Any] = {"job_id": job_id, "job_timeout": SLICE * 4 + 120}
    if delay > 0:
        queue.enqueue_in(timedelta(seconds=delay), drain, config, capability, **options)
    else:
        queue.enqueue(drain, config, capability, **options)
    return True


def drain(config: str | None, capability: str) -> dict[str, int]:
    """The RQ job: replay `capability` for up to SLICE seconds, then schedule the next."""
    backend = _runner(config)
    connection = backend.redis._redis
    connection.set(_RUNNING.format(capability), "1", ex=int(RUNNING_TTL))
    connection.delete(_PENDING.format(capability))
    replayer = backend.replayer

    async def work() -> int:
        settled = await replayer.expire()
        until = time.monotonic() + SLICE
        while time.monotonic() < until:
            done = await replayer.drain(capability)
            settled += done
            if not done:
                break
        for rt in replayer.gateway.providers.values():
            await rt.aclose_loop_client()  # this job's loop ends here
        return settled

    try:
        settled: int = asyncio.run(work())
    finally:
        connection.delete(_RUNNING.format(capability))
    schedule(connection, config, capability, delay=0.0 if settled else IDLE_PAUSE)
    return {"settled": settled}


def keep_scheduled(
    connection: redis.Redis, config: str | None, capabilities: list[str], stop: threading.Event
) -> None:
    """Re-arm any capability with no drain pending or running (its worker died mid-job)."""
    while not stop.wait(REARM_INTERVAL):
        for capability in capabilities:
            try:
                schedule(connection, config, capability)
            except redis.RedisError:
                break  # Redis away: the worker itself will say so; try again next round
