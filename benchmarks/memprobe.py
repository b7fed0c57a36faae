"""`python -m benchmarks.memprobe SCENARIO SIDE MODE`: one memory measurement, in a fresh process.

SCENARIO: "providers20" (a gateway with 20 providers, each with its client open, against 20
          raw httpx.AsyncClient) or "inflight" (calls parked inside an in-memory transport).
SIDE:     "gateway" or "raw".
MODE:     "traced" (tracemalloc: Python allocations still alive) or "rss" (resident set delta,
          which also sees C allocations such as each client's OpenSSL context).

Prints one JSON object: {"bytes": total growth, "count": how many things it is for, ...}.
Everything is imported and warmed before the first reading, so only the measured objects count.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from benchmarks import fixtures

PROVIDERS = 20


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class Reading:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "traced":
            tracemalloc.start()

    def now(self) -> int:
        gc.collect()
        if self.mode == "traced":
            return tracemalloc.get_traced_memory()[0]
        return rss_bytes()


async def providers20(side: str, mode: str) -> dict[str, Any]:
    """Inside a running loop: the gateway's async clients belong to the loop that made them."""
    urls = [f"http://p{i}.invalid" for i in range(PROVIDERS)]
    # warm every code path once, so first-use caches are not counted
    warm = fixtures.gateway(urls[:1])
    _ = warm.provider("p0").aclient
    _ = httpx.AsyncClient(base_url=urls[0])
    reading = Reading(mode)
    before = reading.now()
    result: dict[str, Any] = {"count": PROVIDERS}
    keep: list[object] = []
    if side == "gateway":
        gw = fixtures.gateway(urls)
        result["policy_state_bytes"] = reading.now() - before  # before any client exists
        for name in gw.providers:
            _ = gw.provider(name).aclient
        keep.append(gw)
    else:
        keep.extend(httpx.AsyncClient(base_url=url) for url in urls)
    result["bytes"] = reading.now() - before
    return result


class ParkingTransport(httpx.AsyncBaseTransport):
    """Holds every request until released: the calls stay in flight while memory is read."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.parked = 0
        self.expected = 0
        self.all_parked = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.parked += 1
        if self.parked == self.expected:
            self.all_parked.set()
        await self.release.wait()
        return httpx.Response(200, headers=fixtures.RESPONSE_HEADERS, content=fixtures.BODY)


async def inflight(side: str, mode: str, calls: int) -> dict[str, Any]:
    transport = ParkingTransport()
    base_url = "http://bench.invalid"
    gw = fixtures.gateway([base_url], async_transport=transport)
    client = httpx.AsyncClient(base_url=base_url, transport=transport)
    http = gw.http

    async def one() -> object:
        if side == "gateway":
            return await http.request("GET", fixtures.PATH)
        return await client.get(fixtures.PATH)

    transport.release.set()  # warm-up: a few calls straight through, both paths
    for _ in range(20):
        await one()
    transport.release.clear()
    transport.parked = 0
    transport.expected = calls

    reading = Reading(mode)
    before = reading.now()
    tasks = [asyncio.ensure_future(one()) for _ in range(calls)]
    await asyncio.wait_for(transport.all_parked.wait(), 60)
    grown = reading.now() - before
    transport.release.set()
    await asyncio.gather(*tasks)
    await client.aclose()
    await gw.aclose()
    return {"bytes": grown, "count": calls}


def main(argv: list[str]) -> None:
    scenario, side, mode = argv[:3]
    if scenario == "providers20":
        result = asyncio.run(providers20(side, mode))
    else:
        result = asyncio.run(inflight(side, mode, int(argv[3])))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
