"""7. Replay throughput: parked requests one worker replays per second (SQLite spool, Redis).

Each round parks N requests (the provider's breaker held open, so every call parks), closes the
breaker and times one Replayer draining them all through the pipeline to the loopback
simulator (own process), each outcome written back to the store. The baseline is the same N
requests sent directly with raw httpx at the same concurrency, in the same run; raw aiohttp's
rate is noted for scale. Rows: the worker's default client (aiohttp), httpx for comparison,
and the Redis store. Target: ≥ 2,000 replays per second per worker.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from benchmarks import fixtures
from benchmarks.harness import Config, Row, RowSpec, Stats, Suite, Target
from queues.replayer import Replayer
from resilient.gateway import Gateway
from resilient.settings import CapabilitySettings, GatewaySettings
from resilient.testing.redis_server import RedisServer

ITEM = 7
IN_FLIGHT = 32  # the replayer's default concurrency
FLOOR = Target("value_min", 2000.0, "≥ 2,000 req/s")
RAW = "raw httpx, same requests"
SPECS = {
    "spool.aiohttp": RowSpec(
        "7.replay.spool", "replay, SQLite spool (worker: aiohttp)", "req/s", RAW, FLOOR
    ),
    "spool.httpx": RowSpec(  # for comparison: the floor is the worker's, with its default
        "7.replay.spool.httpx", "replay, SQLite spool, httpx client", "req/s", RAW
    ),
    "redis.aiohttp": RowSpec(
        "7.replay.redis", "replay, Redis store (worker: aiohttp)", "req/s", RAW, FLOOR
    ),
}


def _gateway(base_url: str, spool: Path, client: str, redis_url: str | None) -> Gateway:
    provider = fixtures.provider_settings("p0", base_url, rate_limit=None)
    return Gateway(
        GatewaySettings(
            source="<benchmarks>",
            redis_url=redis_url,
            spool_path=str(spool),
            async_client="aiohttp" if client == "aiohttp" else "httpx",
            providers={"p0": provider},
            capabilities={"http": CapabilitySettings("http", ("p0",), defer=True)},
        ),
        background_replay=False,
    )


def _park(gw: Gateway, n: int) -> None:
    gw.provider("p0").breaker.force("open")
    for i in range(n):
        result = gw.sync.http.request(
            "POST",
            fixtures.PATH,
            json={"n": i},
            headers={"Idempotency-Key": f"op-{time.time_ns()}-{i}"},
        )
        if result.status != "deferred":  # pragma: no cover - the benchmark's own setup broke
            raise RuntimeError(f"expected the call to park, got {result.status}")
    gw.provider("p0").breaker.force("closed")


async def _drain(gw: Gateway, n: int) -> tuple[float, float]:
    """Replays per second, and the worker's CPU per replay (µs)."""
    replayer = Replayer(
        gw, gw.deferral.store, concurrency=IN_FLIGHT, ramp_start=1e9, ramp_ceiling=1e9
    )
    settled = 0
    started, cpu = time.perf_counter(), time.process_time()
    while settled < n:
        settled += await replayer.drain_once()
    elapsed = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu) / n * 1e6
    await gw.provider("p0").aclose_loop_client()
    if replayer.stats.delivered != n:  # pragma: no cover
        raise RuntimeError(f"replayed {replayer.stats.delivered} of {n}: {replayer.stats}")
    return n / elapsed, cpu_us


async def _direct(send: Callable[[int], Awaitable[object]], n: int) -> float:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            await send(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def _raw_httpx(base_url: str, n: int) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=fixtures.RAW_TIMEOUT) as client:

        async def send(i: int) -> None:
            (
                await client.post(
                    fixtures.PATH, json={"n": i}, headers={"Idempotency-Key": f"d{i}"}
                )
            ).raise_for_status()

        return await _direct(send, n)


async def _raw_aiohttp(base_url: str, n: int) -> float:
    async with aiohttp.ClientSession(base_url) as session:

        async def send(i: int) -> None:
            async with session.post(fixtures.PATH, json={"n": i}) as response:
                await response.read()

        return await _direct(send, n)


def _measure(cfg: Config, key: str, base_url: str, redis_url: str | None) -> Row:
    n = 150 if cfg.quick else 3000
    rounds = 1 if cfg.quick else 3
    replays: list[float] = []
    cpu: list[float] = []
    direct: list[float] = []
    aiohttp_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        gw = _gateway(base_url, Path(tmp) / "spool.db", key.split(".")[1], redis_url)
        with gw:
            for _ in range(rounds):
                direct.append(asyncio.run(_raw_httpx(base_url, n)))
                _park(gw, n)
                rate, cpu_us = asyncio.run(_drain(gw, n))
                replays.append(rate)
                cpu.append(cpu_us)
                aiohttp_rates.append(asyncio.run(_raw_aiohttp(base_url, n)))
    note = (
        f"{n} parked per round; worker CPU {statistics.median(cpu):.0f} µs per replay; "
        f"raw aiohttp sends the same at {statistics.median(aiohttp_rates):.0f} req/s"
    )
    return Row(
        SPECS[key],
        ITEM,
        subject=Stats.of_rounds(replays),
        baseline=Stats.of_rounds(direct),
        notes=[note],
        extra={
            "parked_per_round": n,
            "worker_cpu_us_per_replay": cpu,
            "raw_aiohttp_req_s": aiohttp_rates,
        },
    )


def run(cfg: Config) -> list[Row]:
    rows = []
    with fixtures.simulator_process() as sim:
        rows.append(_measure(cfg, "spool.aiohttp", sim.base_url, None))
        rows.append(_measure(cfg, "spool.httpx", sim.base_url, None))
        if shutil.which("redis-server") is None:
            note = "skipped: no redis-server on PATH"
            rows.append(
                Row(
                    SPECS["redis.aiohttp"],
                    ITEM,
                    status="skipped",
                    notes=[note],
                    extra={"missing": ["redis-server"]},
                )
            )
        else:
            with RedisServer() as server:
                rows.append(_measure(cfg, "redis.aiohttp", sim.base_url, server.url))
    return rows


SUITE = Suite(7, "replay throughput of deferred requests", tuple(SPECS.values()), run=run)
