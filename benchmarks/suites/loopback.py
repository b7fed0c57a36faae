"""2. Loopback round trip: raw httpx to the simulator, the gateway, and the hand-rolled stack.

The simulator runs in its own process (the other core), so the figures are the client's real
round trip: HTTP/1.1 keep-alive over 127.0.0.1, one request at a time.
"""

from __future__ import annotations

import asyncio

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
)

ITEM = 2
RAW = "raw httpx"
WITHIN_5 = Target("ratio_max", 1.05, "≤ 1.05x")

GW_SYNC = RowSpec("2.loopback.gateway.sync", "loopback, gw.sync.http", "µs/call", RAW, WITHIN_5)
GW_ASYNC = RowSpec("2.loopback.gateway.async", "loopback, gw.http", "µs/call", RAW, WITHIN_5)
HR_SYNC = RowSpec(
    "2.loopback.handrolled.sync",
    "loopback, tenacity + pybreaker + token bucket, sync",
    "µs/call",
    RAW,
)
HR_ASYNC = RowSpec(
    "2.loopback.handrolled.async",
    "loopback, tenacity + pybreaker + aiolimiter, async",
    "µs/call",
    RAW,
)


def _rows(stats: dict[str, Stats], gw: RowSpec, hr: RowSpec, lacking: list[str]) -> list[Row]:
    rows = [Row(gw, ITEM, subject=stats["gateway"], baseline=stats["raw"])]
    if lacking:
        rows.append(skipped(hr, ITEM, lacking))
    else:
        rows.append(Row(hr, ITEM, subject=stats["handrolled"], baseline=stats["raw"]))
    return rows


def _sync(cfg: Config, base_url: str, lacking: list[str]) -> list[Row]:
    gw = fixtures.gateway([base_url])
    client = fixtures.raw_client(base_url)
    http = gw.sync.http
    subjects = {
        "raw": lambda: client.get(fixtures.PATH),
        "gateway": lambda: http.request("GET", fixtures.PATH),
    }
    if not lacking:
        subjects["handrolled"] = handrolled.sync_stack(client, fixtures.PATH)
    try:
        stats = compare_sync(subjects, cfg.loopback_calls, cfg.rounds, cfg.warmup)
    finally:
        client.close()
        gw.close()
    return _rows(stats, GW_SYNC, HR_SYNC, lacking)


async def _async(cfg: Config, base_url: str, lacking: list[str]) -> list[Row]:
    gw = fixtures.gateway([base_url])
    client = fixtures.raw_async_client(base_url)
    http = gw.http
    subjects = {
        "raw": lambda: client.get(fixtures.PATH),
        "gateway": lambda: http.request("GET", fixtures.PATH),
    }
    if not lacking:
        subjects["handrolled"] = handrolled.async_stack(client, fixtures.PATH)
    try:
        stats = await compare_async(subjects, cfg.loopback_calls, cfg.rounds, cfg.warmup)
    finally:
        await client.aclose()
        await gw.aclose()
    return _rows(stats, GW_ASYNC, HR_ASYNC, lacking)


def run(cfg: Config) -> list[Row]:
    lacking_sync = handrolled.missing("tenacity")
    lacking_async = handrolled.missing("tenacity", "aiolimiter")
    with fixtures.simulator_process() as sim:
        rows = _sync(cfg, sim.base_url, lacking_sync)
        rows += asyncio.run(_async(cfg, sim.base_url, lacking_async))
    return rows


SUITE = Suite(
    ITEM,
    "loopback round trip (simulator in its own process)",
    (GW_SYNC, GW_ASYNC, HR_SYNC, HR_ASYNC),
    run,
)
