"""5. Chain length: 1, 3 and 5 providers, every one but the last with its breaker forced open.

In-memory transport, so the figure is the pipeline's own cost: each skipped provider costs a
breaker admission, a "breaker open" attempt record, and a Rejected and a FailedOver event (the
latter logged at WARNING by the default listener). Raw httpx is the baseline of every row;
each longer chain's note gives the cost per skipped provider against the chain of 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from benchmarks import fixtures
from benchmarks.harness import Config, Row, RowSpec, Stats, Suite, compare_async, compare_sync

ITEM = 5
RAW = "raw httpx"
LENGTHS = (1, 3, 5)


def _spec(n: int, mode: str) -> RowSpec:
    api = "gw.sync.http" if mode == "sync" else "gw.http"
    skipped = f", {n - 1} open in front" if n > 1 else ""
    return RowSpec(f"5.chain.{n}.{mode}", f"chain of {n}{skipped}, {api}", "µs/call", RAW)


SPECS = {(n, mode): _spec(n, mode) for mode in ("sync", "async") for n in LENGTHS}


def _urls(n: int) -> list[str]:
    return [f"http://p{i}.invalid" for i in range(n)]


def _rows(stats: dict[str, Stats], mode: str) -> list[Row]:
    raw, one = stats["raw"], stats["chain1"]
    rows = []
    for n in LENGTHS:
        subject = stats[f"chain{n}"]
        row = Row(SPECS[n, mode], ITEM, subject=subject, baseline=raw)
        if n > 1:
            per = (subject.median - one.median) / (n - 1)
            row.notes.append(f"{per:.1f} µs per skipped provider (vs the chain of 1)")
            row.extra["us_per_skipped_provider"] = per
        rows.append(row)
    return rows


def _sync(cfg: Config) -> list[Row]:
    mem = fixtures.MemoryTransport()
    client = fixtures.raw_client("http://p0.invalid", mem)
    gateways = {n: fixtures.gateway(_urls(n), transport=mem) for n in LENGTHS}
    subjects: dict[str, Callable[[], object]] = {"raw": lambda: client.get(fixtures.PATH)}
    for n, gw in gateways.items():
        fixtures.open_all_but_last(gw)
        subjects[f"chain{n}"] = partial(gw.sync.http.request, "GET", fixtures.PATH)
    try:
        stats = compare_sync(subjects, cfg.calls, cfg.rounds, cfg.warmup)
    finally:
        client.close()
        for gw in gateways.values():
            gw.close()
    return _rows(stats, "sync")


async def _async(cfg: Config) -> list[Row]:
    mem = fixtures.AsyncMemoryTransport()
    client = fixtures.raw_async_client("http://p0.invalid", mem)
    gateways = {n: fixtures.gateway(_urls(n), async_transport=mem) for n in LENGTHS}
    subjects: dict[str, Callable[[], Awaitable[object]]] = {
        "raw": lambda: client.get(fixtures.PATH)
    }
    for n, gw in gateways.items():
        fixtures.open_all_but_last(gw)
        subjects[f"chain{n}"] = partial(gw.http.request, "GET", fixtures.PATH)
    try:
        stats = await compare_async(subjects, cfg.calls, cfg.rounds, cfg.warmup)
    finally:
        await client.aclose()
        for gw in gateways.values():
            await gw.aclose()
    return _rows(stats, "async")


def run(cfg: Config) -> list[Row]:
    return [*_sync(cfg), *asyncio.run(_async(cfg))]


SUITE = Suite(
    ITEM,
    "chain length with open breakers in front (in-memory transport)",
    tuple(SPECS[n, mode] for mode in ("sync", "async") for n in LENGTHS),
    run,
)
