"""Deferral on Redis with RQ workers, against a real redis-server and the simulator."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.testing import Fault, RedisServer, SimRequest, SimResponse, Simulator

CONFIG = """
[gateway]
redis_url = "{redis}"
spool_path = "{spool}"

[providers.a]
kind = "http"
base_url = "{base}/a"
retry = {{ attempts = 1 }}
breaker = {{ min_calls = 1000 }}

[capabilities.notify]
chain = ["a"]
defer = true
timeout = "1s"
"""


class IdempotentProvider:
    """A provider that honours Idempotency-Key, as Stripe does: a repeated key gets the first
    answer and does nothing again. Counts first-time effects per key."""

    def __init__(self) -> None:
        self.effects: collections.Counter[str] = collections.Counter()
        self.seen: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, request: SimRequest) -> SimResponse:
        key = request.headers.get("idempotency-key", "")
        with self._lock:
            self.seen[key] += 1
            if self.seen[key] == 1:
                self.effects[key] += 1
        return SimResponse.json({"key": key}, status=202)


@pytest.fixture
def provider_a(simulator: Simulator) -> Iterator[IdempotentProvider]:
    handler = IdempotentProvider()
    simulator.route("POST", "/a/v1/m", handler)
    yield handler


@pytest.fixture
def config(simulator: Simulator, redis_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "resilient.toml"
    path.write_text(
        CONFIG.format(redis=redis_url, spool=tmp_path / "spool.db", base=simulator.base_url)
    )
    return path


def park(config: Path, sim: Simulator, count: int) -> list[str]:
    """`count` notifications parked while provider `a` was down."""
    outage = sim.inject(Fault.status(503), prefix="/a")
    with Gateway(load_settings(config), background_replay=False) as gw:
        results = [
            gw.sync.notify.request(
                "POST", "/v1/m", json={"n": n}, headers={"Idempotency-Key": f"op-{n}"}
            )
            for n in range(count)
        ]
    outage.clear()
    assert {r.status for r in results} == {"deferred"}
    return [f"op-{n}" for n in range(count)]


def worker(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "resilient.cli", "worker", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# How long a worker may take to exit after SIGTERM. RQ finishes the running drain job first
# (a slice of a few seconds), and its pubsub thread can hold the exit for up to a minute more:
# RQ polls that channel every 60 s and redis-py's stop() waits for the poll to end (a race
# that a busy machine loses often). Generous, as a slow machine needs; a hang still fails.
STOP_WITHIN = 90.0


def stop(*processes: subprocess.Popen[str]) -> None:
    """SIGTERM each of `processes` (all at once) and wait for them to exit; one that doesn't
    within STOP_WITHIN is killed (never left running into the next test, replaying from the
    shared Redis) and fails the test."""
    for process in processes:
        process.terminate()
    end = time.monotonic() + STOP_WITHIN
    hung = []
    for process in processes:
        try:  # reading its pipes meanwhile: a full one would hold the worker up
            process.communicate(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            hung.append(process.communicate()[1][-2000:])
    assert not hung, f"still running {STOP_WITHIN} s after SIGTERM; stderr: {hung}"


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_worker_burst_drains_redis(
    config: Path, simulator: Simulator, provider_a: IdempotentProvider
) -> None:
    keys = park(config, simulator, 20)
    run = worker(config, "--burst")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert provider_a.effects == {key: 1 for key in keys}


def test_rq_workers_replay_parked_requests(
    config: Path, simulator: Simulator, provider_a: IdempotentProvider
) -> None:
    workers = [worker(config), worker(config)]  # two workers share the queue
    try:
        keys = park(config, simulator, 50)
        wait_until(lambda: len(provider_a.effects) == 50, timeout=120)
        assert provider_a.effects == {key: 1 for key in keys}
        assert max(provider_a.seen.values()) == 1  # no request was even sent twice
    finally:
        stop(*workers)


def test_sigkill_mid_replay_loses_nothing_and_does_nothing_twice(
    config: Path, simulator: Simulator, provider_a: IdempotentProvider, redis_url: str
) -> None:
    import redis

    from queues.rq_jobs import _RUNNING

    simulator.inject(Fault.latency(0.05), prefix="/a")
    keys = park(config, simulator, 300)
    first = worker(config)
    wait_until(lambda: len(provider_a.seen) >= 40, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert len(provider_a.effects) < 300  # killed mid-replay
    # The dead worker's drain job left its running mark, which keeps any other worker from
    # draining the capability until it expires by itself (seconds later). It does expire: it
    # has a TTL; the test brings that moment forward instead of sleeping until it comes.
    with redis.Redis.from_url(redis_url) as client:
        running = _RUNNING.format("notify")
        assert client.pttl(running) > 0
        client.pexpire(running, 200)
    second = worker(config)
    try:
        wait_until(lambda: len(provider_a.effects) == 300, timeout=120)
    finally:
        stop(second)
    assert provider_a.effects == {key: 1 for key in keys}  # none lost, none done twice
    # Requests in flight at the kill were sent again with the same key and absorbed by it.
    assert all(count <= 2 for count in provider_a.seen.values())


def test_redis_down_spills_to_the_spool_then_drains_into_redis(
    config: Path,
    simulator: Simulator,
    provider_a: IdempotentProvider,
    redis_server: RedisServer,
) -> None:
    outage = simulator.inject(Fault.status(503), prefix="/a")
    with Gateway(load_settings(config), background_replay=False) as gw:
        redis_server.stop()
        results = [
            gw.sync.notify.request(
                "POST", "/v1/m", json={"n": n}, headers={"Idempotency-Key": f"op-{n}"}
            )
            for n in range(10)
        ]
        assert {r.status for r in results} == {"deferred"}  # accepted while Redis was down
        backend = gw.deferral
        assert backend.spill.stats()["ready"] == 10  # type: ignore[attr-defined]
        redis_server.start()
        spill, redis_store = backend.spill, backend.redis  # type: ignore[attr-defined]

        def moved() -> bool:  # leased rows are mid-move: the spill is empty only when both are 0
            left = spill.stats()
            return left["ready"] + left["leased"] == 0

        wait_until(moved, timeout=120)
        assert redis_store.stats()["ready"] == 10
    outage.clear()
    run = worker(config, "--burst")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert provider_a.effects == {f"op-{n}": 1 for n in range(10)}
