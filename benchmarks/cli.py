"""`python -m benchmarks [--quick] [--json PATH] [--only 1,2]`: run the items, print one table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks import suites
from benchmarks.harness import FULL, QUICK, Config, Row, Suite, table

PACKAGES = ("resilient-gateway", "httpx", "httpcore", "h11", "pybreaker", "tenacity",
            "aiolimiter", "matplotlib")  # fmt: skip


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "unknown"
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
    }


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run_suite(suite: Suite, cfg: Config) -> list[Row]:
    """The suite's declared rows, in declared order, whatever happened while measuring."""
    if suite.run is None:
        reason = suite.pending_reason or "not yet measured"
        return [Row(spec, suite.item, status="not yet measured", notes=[reason])
                for spec in suite.rows]  # fmt: skip
    started = time.perf_counter()
    try:
        measured = {row.spec.id: row for row in suite.run(cfg)}
    except Exception as exc:
        traceback.print_exc()
        note = f"error: {type(exc).__name__}: {exc}"
        return [Row(spec, suite.item, status="error", notes=[note]) for spec in suite.rows]
    finally:
        print(f"  ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    rows = []
    for spec in suite.rows:
        row = measured.get(spec.id)
        if row is None:
            row = Row(spec, suite.item, status="error", notes=["the suite did not report it"])
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="What the gateway costs per request, against raw httpx, in one table.",
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", metavar="ITEMS", help="comma-separated item numbers, e.g. 1,4")
    args = parser.parse_args(argv)

    cfg = QUICK if args.quick else FULL
    wanted = {int(x) for x in args.only.split(",")} if args.only else None
    info = machine()
    load_before = loadavg()
    print(
        f"resilient-gateway benchmarks ({'quick' if cfg.quick else 'full'} run): "
        f"{info['nproc']} CPU(s), {info['cpu_model']}, Python {info['python']}, "
        f"load {load_before}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    rows: list[Row] = []
    for suite in suites.load():
        if wanted is not None and suite.item not in wanted:
            continue
        print(f"[{suite.item}] {suite.title} ...", file=sys.stderr)
        rows.extend(run_suite(suite, cfg))
    elapsed = time.perf_counter() - started

    print(
        f"\n## resilient-gateway benchmarks — {'quick smoke' if cfg.quick else 'full run'}\n"
        f"{info['nproc']} CPU(s) · {info['cpu_model']} · Python {info['python']} · "
        f"httpx {info['packages']['httpx']} · load avg {load_before} → {loadavg()} · "
        f"{elapsed:.0f} s\n"
    )
    print(table(rows))
    notes = [(row.spec.id, note) for row in rows for note in row.notes]
    if notes:
        print("\nNotes:")
        for row_id, note in notes:
            print(f"- {row_id}: {note}")
    print(
        "\nratio = median / baseline median, both measured in this run, rounds interleaved; "
        "median and p99 are medians over rounds of each round's median and p99. "
        "Timings µs per call unless the unit says otherwise."
    )
    if cfg.quick:
        print("(quick smoke: too few calls for the figures to mean anything)")

    if args.json:
        document = {
            "schema": 1,
            "quick": cfg.quick,
            "config": cfg.__dict__,
            "machine": info,
            "load_before": load_before,
            "load_after": loadavg(),
            "elapsed_s": elapsed,
            "rows": [row.to_json() for row in rows],
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        print(f"\nJSON written to {path}", file=sys.stderr)
    return 1 if any(row.status == "error" for row in rows) else 0
