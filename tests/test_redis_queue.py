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
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert provider_a.effects == {key: 1 for key in keys}


def test_rq_workers_replay_parked_requests(
    config: Path, simulator: Simulator, provider_a: IdempotentProvider
) -> None:
    workers = [worker(config), worker(config)]  # two workers share the queue
    try:
        keys = park(config, simulator, 50)
        wait_until(lambda: len(provider_a.effects) == 50, timeout=30)
        assert provider_a.effects == {key: 1 for key in keys}
        assert max(provider_a.seen.values()) == 1  # no request was even sent twice
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=20)


def test_sigkill_mid_replay_loses_nothing_and_does_nothing_twice(
    config: Path, simulator: Simulator, provider_a: IdempotentProvider
) -> None:
    simulator.inject(Fault.latency(0.05), prefix="/a")
    keys = park(config, simulator, 300)
    first = worker(config)
    wait_until(lambda: len(provider_a.seen) >= 40, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert len(provider_a.effects) < 300  # killed mid-replay
    second = worker(config)
    try:
        wait_until(lambda: len(provider_a.effects) == 300, timeout=60)
    finally:
        second.terminate()
        second.wait(timeout=20)
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

        wait_until(moved, timeout=30)
        assert redis_store.stats()["ready"] == 10
    outage.clear()
    run = worker(config, "--burst")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert provider_a.effects == {f"op-{n}": 1 for n in range(10)}
