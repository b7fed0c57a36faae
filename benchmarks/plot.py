"""`python -m benchmarks.plot RESULTS.json [-o OUT.png]`: item 4 as a picture.

Three panels against calls in flight (1, 10, 100, 1,000; log scale): throughput, median and p99
latency, and the gateway's cost over raw httpx's (time per call and median latency, both as
gateway / raw, so above 1 is slower) against the 1.05x target. Needs matplotlib
(a bench-only dependency: pip install matplotlib). Write the JSON with
`python -m benchmarks --json RESULTS.json` (or `--only 4`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _series(rows: dict[str, dict[str, Any]], metric: str) -> tuple[list[int], dict[str, Any]]:
    levels = sorted(
        int(row_id.rsplit(".", 1)[1])
        for row_id, row in rows.items()
        if row_id.startswith(f"4.{metric}.") and row["status"] == "measured"
    )
    pick = [rows[f"4.{metric}.{n}"] for n in levels]
    return levels, {
        "gateway": [r["median"] for r in pick],
        "raw": [r["baseline_median"] for r in pick],
        "gateway_p99": [r["p99"] for r in pick],
        "raw_p99": [r["baseline_p99"] for r in pick],
        "ratio": [r["ratio"] for r in pick],
    }


def plot(document: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["id"]: row for row in document["rows"]}
    levels, tp = _series(rows, "throughput")
    lat_levels, lat = _series(rows, "latency")
    if not levels or not lat_levels:
        raise SystemExit("no measured item-4 rows in this JSON: run with --only 4 or all items")
    machine = document.get("machine", {})
    fig, (ax_tp, ax_lat, ax_ratio) = plt.subplots(1, 3, figsize=(16, 5.2))
    fig.suptitle(
        "resilient-gateway vs raw httpx, async loopback, one client "
        f"({machine.get('nproc', '?')} CPU {machine.get('cpu_model', '')}, "
        f"Python {machine.get('python', '?')}"
        f"{', quick smoke' if document.get('quick') else ''})",
        fontsize=11,
    )

    ax_tp.plot(levels, tp["raw"], "o-", color="tab:gray", label="raw httpx")
    ax_tp.plot(levels, tp["gateway"], "s-", color="tab:blue", label="gateway (gw.http)")
    ax_tp.set_title("throughput (median over rounds)")
    ax_tp.set_ylabel("calls / s")
    ax_tp.set_ylim(bottom=0)

    ax_lat.plot(lat_levels, lat["raw"], "o-", color="tab:gray", label="raw httpx, median")
    ax_lat.plot(lat_levels, lat["raw_p99"], "o--", color="tab:gray", alpha=0.6, label="raw p99")
    ax_lat.plot(lat_levels, lat["gateway"], "s-", color="tab:blue", label="gateway, median")
    ax_lat.plot(
        lat_levels, lat["gateway_p99"], "s--", color="tab:blue", alpha=0.6, label="gateway p99"
    )
    ax_lat.set_title("latency per call")
    ax_lat.set_ylabel("µs (log)")
    ax_lat.set_yscale("log")

    cost = [1 / r for r in tp["ratio"]]  # time per call, gateway / raw: > 1 is slower
    ax_ratio.axhspan(0, 1.05, color="tab:green", alpha=0.10, label="target: ≤ 1.05x")
    ax_ratio.axhline(1.0, color="black", linewidth=0.8)
    ax_ratio.plot(levels, cost, "s-", color="tab:blue", label="1 / throughput ratio")
    ax_ratio.plot(lat_levels, lat["ratio"], "^-", color="tab:orange", label="median latency ratio")
    for x, y in zip(lat_levels, lat["ratio"], strict=True):
        ax_ratio.annotate(f"{y:.2f}x", (x, y), textcoords="offset points", xytext=(4, 6))
    low = min([*cost, *lat["ratio"], 0.95])
    high = max([*cost, *lat["ratio"], 1.1])
    ax_ratio.set_ylim(low - 0.05, high + 0.05)
    ax_ratio.set_title("gateway cost / raw httpx cost, same run (> 1: slower)")
    ax_ratio.set_ylabel("ratio")

    for ax in (ax_tp, ax_lat, ax_ratio):
        ax.set_xscale("log")
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("calls in flight")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot")
    parser.add_argument("results", help="JSON written by python -m benchmarks --json")
    parser.add_argument("-o", "--out", help="PNG path (default: next to the JSON)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: pip install matplotlib", file=sys.stderr)
        return 2
    source = Path(args.results)
    out = Path(args.out) if args.out else source.with_name(source.stem + "-concurrency.png")
    print(plot(json.loads(source.read_text()), out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
