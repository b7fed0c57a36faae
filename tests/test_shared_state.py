"""State shared through a real Redis between real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.shared_breaker import SharedBreakerStorage
from resilient.testing import Fault, RedisServer, SimResponse, Simulator

WATCHER = textwrap.dedent(
    """
    import json, sys, time
    from resilient.config import settings_from_mapping
    from resilient.gateway import Gateway
    settings = settings_from_mapping(json.loads(sys.argv[1]))
    with Gateway(settings, ops=False) as gw:
        print("ready", flush=True)
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            result = gw.sync.http.request("GET", "/x")
            print(json.dumps([time.time(), result.provider]), flush=True)
            time.sleep(0.05)
    """
)


def config(redis_url: str, base: str, a_path: str) -> dict[str, object]:
    return {
        "gateway": {"redis_url": redis_url},
        "providers": {
            "a": {
                "kind": "http",
                "base_url": f"{base}{a_path}",
                "retry": {"attempts": 1},
                "breaker": {"min_calls": 4, "window": "10s", "open_for": "30s"},
            },
            "b": {"kind": "http", "base_url": f"{base}/b"},
        },
        "capabilities": {"http": {"chain": ["a", "b"]}},
    }


def test_one_process_trips_the_breaker_and_another_stops_calling_within_a_second(
    simulator: Simulator, redis_url: str, tmp_path: Path
) -> None:
    for prefix in ("/a", "/a-seen-failing", "/b"):
        simulator.route("GET", f"{prefix}/x", lambda r: SimResponse.json({}))
    simulator.inject(Fault.status(503), prefix="/a-seen-failing")
    # The other process reaches `a` on a healthy path: only the shared state can stop it.
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WATCHER,
            json.dumps(config(redis_url, simulator.base_url, "/a")),
            "6",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None and other.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    here = settings_from_mapping(config(redis_url, simulator.base_url, "/a-seen-failing"))
    with Gateway(here, ops=False) as gw:
        for _ in range(4):
            gw.sync.http.request("GET", "/x")
        assert gw.provider("a").breaker.state == "open"
    tripped = time.time()
    out, _ = other.communicate(timeout=30)
    calls = [json.loads(line) for line in out.splitlines()]
    before = [p for t, p in calls if t < tripped]
    after = [p for t, p in calls if t > tripped + 1.0]
    assert before and set(before) == {"a"}  # it was using `a` until then
    assert after and set(after) == {"b"}  # and stopped within a second of the trip


def test_redis_unreachable_keeps_serving_on_local_state(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    storage = SharedBreakerStorage(client, "p", refresh=0.0)
    storage.state = "open"
    redis_server.stop()
    assert storage.state == "open"  # the local copy answers
    storage.state = "closed"  # a write while Redis is away is kept locally
    assert storage.state == "closed"
    redis_server.start()
    storage.state = "closed"
    fresh = SharedBreakerStorage(redis.Redis.from_url(redis_server.url), "p", refresh=0.0)
    assert fresh.state == "closed"  # reconciled by the next write


@pytest.mark.parametrize("refresh", [0.5])
def test_the_hot_path_reads_redis_at_most_once_per_refresh(redis_url: str, refresh: float) -> None:
    import redis

    class Counting(redis.Redis):  # type: ignore[type-arg]
        reads = 0

        def hmget(self, *args: object, **kwargs: object) -> object:
            Counting.reads += 1
            return super().hmget(*args, **kwargs)  # type: ignore[arg-type]

    now = [100.0]
    storage = SharedBreakerStorage(
        Counting.from_url(redis_url), "p", refresh=refresh, clock=lambda: now[0]
    )
    for _ in range(1000):
        storage.state  # noqa: B018 - the read under test
    assert Counting.reads == 1
    now[0] += refresh
    storage.state  # noqa: B018
    assert Counting.reads == 2
