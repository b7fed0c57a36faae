"""4. Concurrency scaling: 1, 10, 100 and 1,000 calls in flight through one gateway (async).

A closed loop: N workers call back to back on the loopback simulator (own process). The gateway
and raw httpx use the same client limits (httpx's defaults: 100 connections), so at 1,000 in
flight both queue in httpcore's pool, which then dominates both sides.

Each side's transport is wrapped to record the most requests it held at once: if the breaker,
the limiter or anything else in the pipeline serialized calls, the gateway's peak would stay
far below N. Client CPU per call (this process) is reported too: it shows the pipeline's cost
even where the simulator, not the client, is what saturates.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable

import httpx

from benchmarks import fixtures
from benchmarks.harness import (
    Config,
    LoadRound,
    Row,
    RowSpec,
    Stats,
    Suite,
    Target,
    closed_loop,
    percentile,
)

ITEM = 4
RAW = "raw httpx"
LEVELS = (1, 10, 100, 1000)


def _specs(n: int) -> tuple[RowSpec, RowSpec]:
    return (
        RowSpec(
            f"4.throughput.{n}",
            f"{n} in flight: throughput, gw.http",
            "calls/s",
            RAW,
            Target("ratio_min", 0.95, "≥ 0.95x"),
        ),
        RowSpec(
            f"4.latency.{n}",
            f"{n} in flight: latency, gw.http",
            "µs/call",
            RAW,
            Target("ratio_max", 1.05, "≤ 1.05x"),
        ),
    )


SPECS = {n: _specs(n) for n in LEVELS}


def _summarize(rounds: list[LoadRound]) -> tuple[Stats, Stats]:
    throughput = Stats.of_rounds([r.throughput for r in rounds])
    latency = Stats.of_rounds(
        [statistics.median(r.latencies_ns) for r in rounds],
        [percentile(r.latencies_ns, 0.99) for r in rounds],
        scale=1e-3,
    )
    return throughput, latency


async def _level(
    cfg: Config,
    n: int,
    sim: fixtures.SimulatorProcess,
    sides: dict[str, tuple[Callable[[], Awaitable[object]], fixtures.PeakTransport]],
) -> list[Row]:
    seconds = cfg.concurrency_seconds
    results: dict[str, list[LoadRound]] = {name: [] for name in sides}
    server_cpu: dict[str, list[float]] = {name: [] for name in sides}
    for fn, peak in sides.values():
        if not cfg.quick:
            await closed_loop(fn, n, 0.0)  # warm-up: one call per worker opens the connections
        peak.reset_peak()
    names = list(sides)
    for r in range(cfg.concurrency_rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, peak = sides[name]
            cpu0 = sim.cpu_seconds()
            result = await closed_loop(fn, n, seconds, peak.reset_peak)
            results[name].append(result)
            server_cpu[name].append((sim.cpu_seconds() - cpu0) / len(result.latencies_ns) * 1e6)
    gw_tp, gw_lat = _summarize(results["gateway"])
    raw_tp, raw_lat = _summarize(results["raw"])

    cpu = {name: statistics.median(r.cpu_per_call_us for r in results[name]) for name in sides}
    server = {name: statistics.median(server_cpu[name]) for name in sides}
    peaks = {name: max(r.peak_in_flight for r in results[name]) for name in sides}
    calls = {name: statistics.median(len(r.latencies_ns) for r in results[name]) for name in sides}
    errors = {name: sum(r.errors for r in results[name]) for name in sides}
    extra = {
        "seconds_per_round": seconds,
        "calls_per_round": calls,
        "client_cpu_us_per_call": cpu,
        "server_cpu_us_per_call": server,
        "peak_in_flight": peaks,
        "errors": errors,
    }
    notes = [
        f"client CPU/call {cpu['gateway']:.0f} µs (gateway) vs {cpu['raw']:.0f} µs (raw), "
        f"simulator CPU/call {server['raw']:.0f} µs; "
        f"peak in flight at the transport: gateway {peaks['gateway']}, raw {peaks['raw']}"
    ]
    for name in sides:
        if errors[name]:
            first = next(r.first_error for r in results[name] if r.errors)
            notes.append(f"{errors[name]} {name} calls failed (e.g. {first})")
    tp_spec, lat_spec = SPECS[n]
    return [
        Row(tp_spec, ITEM, subject=gw_tp, baseline=raw_tp, notes=notes, extra=extra),
        Row(lat_spec, ITEM, subject=gw_lat, baseline=raw_lat, extra=extra),
    ]


async def _run(cfg: Config, sim: fixtures.SimulatorProcess) -> list[Row]:
    gw_transport = fixtures.PeakTransport(httpx.AsyncHTTPTransport(limits=fixtures.LIMITS))
    raw_transport = fixtures.PeakTransport(httpx.AsyncHTTPTransport(limits=fixtures.LIMITS))
    gw = fixtures.gateway([sim.base_url], async_transport=gw_transport)
    client = fixtures.raw_async_client(sim.base_url, raw_transport)
    http = gw.http
    sides: dict[str, tuple[Callable[[], Awaitable[object]], fixtures.PeakTransport]] = {
        "raw": (lambda: client.get(fixtures.PATH), raw_transport),
        "gateway": (lambda: http.request("GET", fixtures.PATH), gw_transport),
    }
    rows: list[Row] = []
    try:
        for n in cfg.concurrency:
            rows += await _level(cfg, n, sim, sides)
    finally:
        await client.aclose()
        await gw.aclose()
    return rows


def run(cfg: Config) -> list[Row]:
    with fixtures.simulator_process() as sim:
        return asyncio.run(_run(cfg, sim))


SUITE = Suite(
    ITEM,
    "concurrency scaling (async, loopback)",
    tuple(spec for n in LEVELS for spec in SPECS[n]),
    run,
)
