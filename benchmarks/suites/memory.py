"""8. Memory: a gateway with 20 providers, and each call in flight, against raw httpx.

Every reading runs in a fresh interpreter (`python -m benchmarks.memprobe`), imports and
first-use caches warmed before the first reading, so one measurement cannot inherit another's
heap. tracemalloc counts Python allocations still alive; RSS also counts C allocations (each
httpx client's OpenSSL context), at page granularity and with allocator slack: read it as the
order of magnitude.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import product
from typing import Any

from benchmarks import fixtures
from benchmarks.harness import Config, Row, RowSpec, Stats, Suite

ITEM = 8
CLIENTS = "20 raw httpx.AsyncClient"
RAW_CALL = "raw httpx call in flight"

P_TRACED = RowSpec(
    "8.providers20.traced", "gateway, 20 providers, clients open (tracemalloc)", "KiB", CLIENTS
)
P_RSS = RowSpec("8.providers20.rss", "gateway, 20 providers, clients open (RSS)", "KiB", CLIENTS)
I_TRACED = RowSpec(
    "8.inflight.traced", "per call in flight, gw.http (tracemalloc)", "bytes/call", RAW_CALL
)
I_RSS = RowSpec("8.inflight.rss", "per call in flight, gw.http (RSS)", "bytes/call", RAW_CALL)

SPECS = {
    ("providers20", "traced"): P_TRACED,
    ("providers20", "rss"): P_RSS,
    ("inflight", "traced"): I_TRACED,
    ("inflight", "rss"): I_RSS,
}


def _probe_all(cfg: Config) -> dict[tuple[str, str, str], dict[str, Any]]:
    """One round: every (scenario, side, mode) probe, two processes at a time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fixtures.ROOT), *sys.path[1:]])}
    keys = list(product(("providers20", "inflight"), ("gateway", "raw"), ("traced", "rss")))
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i in range(0, len(keys), 2):
        procs = {
            key: subprocess.Popen(
                [sys.executable, "-m", "benchmarks.memprobe", *key, str(cfg.inflight_calls)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=fixtures.ROOT,
                env=env,
            )
            for key in keys[i : i + 2]
        }
        for key, proc in procs.items():
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"memprobe {' '.join(key)} exited {proc.returncode}")
            results[key] = json.loads(out)
    return results


def run(cfg: Config) -> list[Row]:
    rounds = [_probe_all(cfg) for _ in range(cfg.memory_rounds)]
    rows = []
    for (scenario, mode), spec in SPECS.items():

        def values(side: str, scenario: str = scenario, mode: str = mode) -> list[float]:
            found = [r[scenario, side, mode] for r in rounds]
            if scenario == "providers20":
                return [f["bytes"] / 1024 for f in found]
            return [f["bytes"] / f["count"] for f in found]

        row = Row(
            spec,
            ITEM,
            subject=Stats.of_rounds(values("gateway")),
            baseline=Stats.of_rounds(values("raw")),
        )
        if scenario == "providers20":
            policy = Stats.of_rounds(
                [r[scenario, "gateway", mode]["policy_state_bytes"] / 1024 for r in rounds]
            ).median
            row.extra["policy_state_kib"] = policy
            row.notes.append(
                f"policy state alone, before any client: {policy:.0f} KiB "
                f"({policy / 20:.1f} KiB per provider)"
            )
        else:
            row.extra["calls_in_flight"] = cfg.inflight_calls
            if mode == "traced":
                row.notes.append(f"{cfg.inflight_calls} calls parked in an in-memory transport")
        rows.append(row)
    return rows


SUITE = Suite(ITEM, "memory", (P_TRACED, P_RSS, I_TRACED, I_RSS), run)
