"""6. Shared state: the loopback round trip with breaker and limiter state in Redis, against the
same gateway with in-memory state; and the Redis round trips each call costs.

Both gateways are item 2's (fixtures.gateway: full pipeline, a rate limit set that never binds
at these rates) on the same simulator (own process); only `redis_url` differs. The Redis is a
real redis-server on a free port (resilient/testing/redis_server.py), started for this item and
stopped after; without one on PATH, or without the `redis` package, the rows say so and skip.

Round trips are counted by the server: INFO's `total_reads_processed` goes up once per request
the server reads from a client (a pipelined batch counts once; the commands a Lua script runs
inside Redis count not at all), less the one read of the INFO that takes the count. Each round
counts the calls it times, with nothing else talking to that server; INFO commandstats then
names them: EVALSHA is a limiter lease (resilient/shared_limiter.py), HMGET a breaker refresh
and HSET a breaker write (resilient/shared_breaker.py); the rest is the gateway's ops loop
(overrides version, published status) and connection set-up.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import fixtures, handrolled
from benchmarks.harness import (
    Config,
    Row,
    RowSpec,
    Stats,
    Suite,
    Target,
    compare_async,
    compare_sync,
    skipped,
    time_async,
    time_sync,
)
from resilient.testing.redis_server import INSTALL_HINT, RedisServer

ITEM = 6
MEMORY = "same gateway, state in memory"
FEWER_THAN_01 = Target("ratio_max", math.nextafter(0.1, 0.0), "< 0.1 per call")

SYNC = RowSpec("6.redis.sync", "loopback, gw.sync.http, state in Redis", "µs/call", MEMORY)
ASYNC = RowSpec("6.redis.async", "loopback, gw.http, state in Redis", "µs/call", MEMORY)
RT_SYNC = RowSpec(
    "6.redis.roundtrips.sync",
    "Redis round trips per call (= ratio), gw.sync.http",
    "round trips",
    "calls",
    FEWER_THAN_01,
)
RT_ASYNC = RowSpec(
    "6.redis.roundtrips.async",
    "Redis round trips per call (= ratio), gw.http",
    "round trips",
    "calls",
    FEWER_THAN_01,
)
SPECS = (SYNC, ASYNC, RT_SYNC, RT_ASYNC)

# Commands the library sends only from Python, never inside a Lua script, and what sends them.
ATTRIBUTED = {
    "evalsha": "limiter leases (EVALSHA)",
    "hmget": "breaker refreshes (HMGET)",
    "hset": "breaker writes (HSET)",
}


class RoundTrips:
    """Counts what everyone but itself asks a Redis server, between `begin()` and `end()`."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._reads = 0
        self._commands: Counter[str] = Counter()
        self.per_round: list[float] = []
        self.commands: Counter[str] = Counter()

    def _info(self) -> tuple[int, Counter[str]]:
        info: dict[str, Any] = self._client.info("stats", "commandstats")
        commands = Counter(
            {
                key.removeprefix("cmdstat_"): int(value["calls"])
                for key, value in info.items()
                if key.startswith("cmdstat_") and key != "cmdstat_info"
            }
        )
        return int(info["total_reads_processed"]), commands

    def begin(self) -> None:
        self._reads, self._commands = self._info()

    def end(self) -> None:
        reads, commands = self._info()
        self.per_round.append(reads - self._reads - 1)  # less the read of this INFO
        self.commands += commands - self._commands

    def close(self) -> None:
        self._client.close()


def _counting_rounds(cfg: Config) -> int:
    """Rounds of counted calls: a count needs no interleaving to be fair, a quarter will do."""
    return max(3, cfg.rounds // 4)


def _latency_row(spec: RowSpec, stats: dict[str, Stats]) -> Row:
    return Row(spec, ITEM, subject=stats["redis"], baseline=stats["memory"])


def _round_trip_row(spec: RowSpec, counted: RoundTrips, calls: int) -> Row:
    total = calls * len(counted.per_round)
    per_call = {name: n / total for name, n in sorted(counted.commands.items())}
    trips = sum(counted.per_round) / total
    named = {ATTRIBUTED[name]: per_call.get(name, 0.0) for name in ATTRIBUTED}
    rest = trips - sum(named.values())
    parts = [f"{n:.3f} {what}" for what, n in named.items()] + [f"{rest:.3f} other (ops loop)"]
    return Row(
        spec,
        ITEM,
        subject=Stats.of_rounds(counted.per_round),
        baseline=Stats.of_rounds([float(calls)] * len(counted.per_round)),
        notes=["per call, on average: " + ", ".join(parts)],
        extra={"calls_per_round": calls, "commands_per_call": per_call},
    )


def _sync(cfg: Config, base_url: str, redis_url: str) -> list[Row]:
    memory, shared = fixtures.gateway([base_url]), fixtures.gateway([base_url], redis_url=redis_url)
    on_memory, on_redis = memory.sync.http, shared.sync.http
    subjects: dict[str, Callable[[], object]] = {
        "memory": lambda: on_memory.request("GET", fixtures.PATH),
        "redis": lambda: on_redis.request("GET", fixtures.PATH),
    }
    counted = RoundTrips(redis_url)
    try:
        stats = compare_sync(subjects, cfg.loopback_calls, cfg.rounds, cfg.warmup)
        for _ in range(_counting_rounds(cfg)):
            counted.begin()
            time_sync(subjects["redis"], cfg.loopback_calls)
            counted.end()
    finally:
        counted.close()
        memory.close()
        shared.close()
    return [_latency_row(SYNC, stats), _round_trip_row(RT_SYNC, counted, cfg.loopback_calls)]


async def _async(cfg: Config, base_url: str, redis_url: str) -> list[Row]:
    memory, shared = fixtures.gateway([base_url]), fixtures.gateway([base_url], redis_url=redis_url)
    on_memory, on_redis = memory.http, shared.http
    subjects: dict[str, Callable[[], Awaitable[object]]] = {
        "memory": lambda: on_memory.request("GET", fixtures.PATH),
        "redis": lambda: on_redis.request("GET", fixtures.PATH),
    }
    counted = RoundTrips(redis_url)
    try:
        stats = await compare_async(subjects, cfg.loopback_calls, cfg.rounds, cfg.warmup)
        for _ in range(_counting_rounds(cfg)):
            counted.begin()
            await time_async(subjects["redis"], cfg.loopback_calls)
            counted.end()
    finally:
        counted.close()
        await memory.aclose()
        await shared.aclose()
    return [_latency_row(ASYNC, stats), _round_trip_row(RT_ASYNC, counted, cfg.loopback_calls)]


def _no_redis_server() -> list[Row]:
    note = f"skipped: {INSTALL_HINT}"
    return [
        Row(spec, ITEM, status="skipped", notes=[note], extra={"missing_binary": "redis-server"})
        for spec in SPECS
    ]


def run(cfg: Config) -> list[Row]:
    lacking = handrolled.missing("redis")
    if lacking:
        return [skipped(spec, ITEM, lacking) for spec in SPECS]
    if shutil.which("redis-server") is None:
        return _no_redis_server()
    with RedisServer() as server, fixtures.simulator_process() as sim:
        rows = _sync(cfg, sim.base_url, server.url)
        rows += asyncio.run(_async(cfg, sim.base_url, server.url))
    return rows


SUITE = Suite(ITEM, "shared breaker / limiter state in Redis (loopback)", SPECS, run)
