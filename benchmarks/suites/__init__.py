"""The numbered items of the benchmark, one module each, in the order the table prints them.

Adding an item is adding a module that defines `SUITE` (a `benchmarks.harness.Suite`) and
naming it here. A suite with `run=None` prints its rows as "not yet measured".
"""

from __future__ import annotations

import importlib

from benchmarks.harness import Suite

MODULES = (
    "pipeline",  # 1 pipeline overhead, in-memory transport
    "loopback",  # 2 loopback round trip: raw httpx, gateway, tenacity + pybreaker + aiolimiter
    "sdk_clients",  # 3 SDK clients, ours vs the official ones
    "concurrency",  # 4 1..1000 calls in flight
    "chain",  # 5 chain length with open breakers in front
    "shared_state",  # 6 Redis shared breaker / limiter state
    "replay",  # 7 replay throughput
    "memory",  # 8 memory of 20 providers and per in-flight call
    "durability",  # 9 parks and ledger claims per second, the durable ledger per call
)


def load() -> list[Suite]:
    suites = []
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.suites.{name}")
        suites.append(module.SUITE)
    return suites
