"""1. Pipeline overhead alone: the gateway over an in-memory transport vs the same call without it.

No sockets: the transport hands back a fresh 200 at once. The "pipeline" rows compare the
gateway with the same request, built the same way and sent directly through the very client
the gateway sends through, so the difference is the pipeline alone: limiter, breaker, retry
plan, attempt timeout, classification, events + log listener. The "vs raw httpx" rows compare it
with a plain httpx client instead, which also pays httpx's per-request client work (auth and
redirect flows, cookie jar, log line) that the gateway's lean client skips: what a user moving
from raw httpx sees. tenacity alone, on a plain httpx client, prices the retry decorator teams
add today.
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
from resilient.http_capability import HttpOperation

ITEM = 1
BASE_URL = "http://bench.invalid"
RAW = "raw httpx"
DIRECT = "same client, no pipeline"

SYNC = RowSpec("1.pipeline.sync", "pipeline overhead, sync (gw.sync.http)", "µs/call", DIRECT)
ASYNC = RowSpec(
    "1.pipeline.async",
    "pipeline overhead, async (gw.http)",
    "µs/call",
    DIRECT,
    Target("delta_max", 10.0, "Δ ≤ 10 µs"),
)
NET_SYNC = RowSpec("1.net.sync", "gw.sync.http vs raw httpx, sync", "µs/call", RAW)
NET_ASYNC = RowSpec("1.net.async", "gw.http vs raw httpx, async", "µs/call", RAW)
TEN_SYNC = RowSpec("1.tenacity.sync", "tenacity @retry alone, sync", "µs/call", RAW)
TEN_ASYNC = RowSpec("1.tenacity.async", "tenacity @retry alone, async", "µs/call", RAW)
VS_SYNC = RowSpec(
    "1.vs-tenacity.sync", "pipeline Δ / tenacity Δ, sync", "µs overhead", "tenacity Δ"
)
VS_ASYNC = RowSpec(
    "1.vs-tenacity.async",
    "pipeline Δ / tenacity Δ, async",
    "µs overhead",
    "tenacity Δ",
    Target("ratio_max", 0.5, "ratio < 0.5"),
)


def _deltas(subject: Stats, baseline: Stats) -> Stats:
    """The overhead the other rows print (difference of the medians); each round's own
    difference is kept for the JSON."""
    deltas = [s - b for s, b in zip(subject.rounds, baseline.rounds, strict=True)]
    return Stats(subject.median - baseline.median, None, tuple(deltas))


def _rows(stats: dict[str, Stats], specs: tuple[RowSpec, RowSpec, RowSpec, RowSpec]) -> list[Row]:
    pipeline, net, tenacity_row, vs = specs
    raw = stats["raw"]
    rows = [
        Row(pipeline, ITEM, subject=stats["gateway"], baseline=stats["direct"]),
        Row(net, ITEM, subject=stats["gateway"], baseline=raw),
    ]
    if "tenacity" not in stats:
        lacking = ["tenacity"]
        return [*rows, skipped(tenacity_row, ITEM, lacking), skipped(vs, ITEM, lacking)]
    ours, theirs = _deltas(stats["gateway"], stats["direct"]), _deltas(stats["tenacity"], raw)
    rows.append(Row(tenacity_row, ITEM, subject=stats["tenacity"], baseline=raw))
    rows.append(Row(vs, ITEM, subject=ours, baseline=theirs, notes=["Δs of the two rows above"]))
    return rows


def _sync(cfg: Config) -> list[Row]:
    mem = fixtures.MemoryTransport()
    gw = fixtures.gateway([BASE_URL], transport=mem)
    client = fixtures.raw_client(BASE_URL, mem)
    rt = gw.provider("p0")
    http = gw.sync.http

    def direct() -> object:
        op = HttpOperation("GET", fixtures.PATH, {})
        return rt.client.send(op._request(rt.client, rt, rt.settings.timeouts.attempt))

    subjects = {
        "raw": lambda: client.get(fixtures.PATH),
        "direct": direct,
        "gateway": lambda: http.request("GET", fixtures.PATH),
    }
    if not handrolled.missing("tenacity"):
        subjects["tenacity"] = handrolled.sync_tenacity(client, fixtures.PATH)
    try:
        stats = compare_sync(subjects, cfg.calls, cfg.rounds, cfg.warmup)
    finally:
        client.close()
        gw.close()
    return _rows(stats, (SYNC, NET_SYNC, TEN_SYNC, VS_SYNC))


async def _async(cfg: Config) -> list[Row]:
    mem = fixtures.AsyncMemoryTransport()
    gw = fixtures.gateway([BASE_URL], async_transport=mem)
    client = fixtures.raw_async_client(BASE_URL, mem)
    rt = gw.provider("p0")
    http = gw.http

    async def direct() -> object:
        op = HttpOperation("GET", fixtures.PATH, {})
        aclient = rt.aclient
        return await aclient.send(op._request(aclient, rt, rt.settings.timeouts.attempt))

    subjects = {
        "raw": lambda: client.get(fixtures.PATH),
        "direct": direct,
        "gateway": lambda: http.request("GET", fixtures.PATH),
    }
    if not handrolled.missing("tenacity"):
        subjects["tenacity"] = handrolled.async_tenacity(client, fixtures.PATH)
    try:
        stats = await compare_async(subjects, cfg.calls, cfg.rounds, cfg.warmup)
    finally:
        await client.aclose()
        await gw.aclose()
    return _rows(stats, (ASYNC, NET_ASYNC, TEN_ASYNC, VS_ASYNC))


def run(cfg: Config) -> list[Row]:
    return [*_sync(cfg), *asyncio.run(_async(cfg))]


SUITE = Suite(
    ITEM,
    "pipeline overhead (in-memory transport)",
    (SYNC, ASYNC, NET_SYNC, NET_ASYNC, TEN_SYNC, TEN_ASYNC, VS_SYNC, VS_ASYNC),
    run,
)
