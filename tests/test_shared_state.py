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


def _redis(url: str) -> object:
    import redis

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def test_processes_sharing_a_limit_never_exceed_it_together(redis_url: str) -> None:
    from resilient.shared_limiter import SharedRateLimiter
    from resilient.units import Rate

    rate = Rate(50, 1.0)
    limiters = [SharedRateLimiter(_redis(redis_url), "p", rate) for _ in range(3)]
    sends = []
    for n in range(300):
        now = time.monotonic()  # each reservation reads the clock, as the pipeline does
        wait = limiters[n % 3].reserve(now, 60.0)
        assert wait is not None
        sends.append(time.monotonic() + wait)  # the pipeline sleeps `wait` once reserve returns
    sends.sort()
    for i, start in enumerate(sends):
        in_window = sum(1 for t in sends[i:] if t < start + rate.period)
        assert in_window <= rate.count  # any 1 s window, all three together


def test_leasing_keeps_redis_round_trips_far_below_one_per_call(redis_url: str) -> None:
    from resilient.shared_limiter import SharedRateLimiter
    from resilient.units import Rate

    limiter = SharedRateLimiter(_redis(redis_url), "busy", Rate(10_000, 1.0))
    calls = 5000
    for _ in range(calls):
        limiter.reserve(time.monotonic(), 60.0)
    assert limiter.round_trips / calls < 0.1


def test_a_caller_sparser_than_the_slots_still_takes_many_calls_per_lease(redis_url: str) -> None:
    """At a high limit a lease's slots are microseconds apart; a caller 1 ms apart must still
    use them (a slot may be taken a little late), not take one lease per call."""
    from resilient.shared_limiter import SharedRateLimiter
    from resilient.units import Rate

    now = [1000.0]
    limiter = SharedRateLimiter(
        _redis(redis_url), "sparse", Rate(1_000_000, 1.0), clock=lambda: now[0]
    )
    calls = 2000
    for _ in range(calls):
        assert limiter.reserve(now[0], 60.0) is not None
        now[0] += 0.001
    assert limiter.round_trips / calls < 0.1


def test_shared_limit_falls_back_to_local_when_redis_is_away(redis_server: RedisServer) -> None:
    from resilient.shared_limiter import SharedRateLimiter
    from resilient.units import Rate

    limiter = SharedRateLimiter(_redis(redis_server.url), "p", Rate(10, 1.0))
    redis_server.stop()
    now = time.monotonic()
    waits = [limiter.reserve(now, 60.0) for _ in range(3)]
    assert waits[0] == 0.0 and waits[2] == pytest.approx(0.2)  # local spacing, still 10/s


HAMMER = textwrap.dedent(
    """
    import json, sys, time
    from resilient.config import settings_from_mapping
    from resilient.gateway import Gateway
    with Gateway(settings_from_mapping(json.loads(sys.argv[1])), ops=False) as gw:
        first = time.time()
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            gw.sync.http.request("GET", "/x")
        print(json.dumps([first, time.time()]))
    """
)


def test_three_processes_stay_under_a_shared_limit_measured_at_the_provider(
    simulator: Simulator, redis_url: str
) -> None:
    simulator.route("GET", "/a/x", lambda r: SimResponse.json({}))
    settings = {
        "gateway": {"redis_url": redis_url},
        "providers": {"a": {"kind": "http", "base_url": simulator.url("/a"), "rate_limit": "20/s"}},
        "capabilities": {"http": {"chain": ["a"], "timeout": "30s"}},
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, json.dumps(settings), "2.5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    spans = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    sending = max(end for _, end in spans) - min(start for start, _ in spans)
    arrivals = simulator.requests(prefix="/a")
    assert len(arrivals) >= 30  # they did get served
    # While any of them was sending, at most 20 slots a second existed for all three together,
    # however late a request left its slot (one limit each would have let three times that).
    assert len(arrivals) <= 20 * sending + 1


def test_a_gateway_keeps_serving_while_redis_is_down(
    simulator: Simulator, redis_server: RedisServer
) -> None:
    simulator.route("GET", "/a/x", lambda r: SimResponse.json({}))
    settings = settings_from_mapping(
        {
            "gateway": {"redis_url": redis_server.url},
            "providers": {
                "a": {"kind": "http", "base_url": simulator.url("/a"), "rate_limit": "1000/s"}
            },
            "capabilities": {"http": {"chain": ["a"]}},
        }
    )
    with Gateway(settings) as gw:
        assert gw.sync.http.request("GET", "/x").status == "delivered"
        redis_server.stop()
        results = [gw.sync.http.request("GET", "/x").status for _ in range(20)]
        assert results == ["delivered"] * 20  # breaker, limiter, ops loop: all on local state
        redis_server.start()
        assert gw.sync.http.request("GET", "/x").status == "delivered"
