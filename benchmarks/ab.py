"""`python -m benchmarks.ab NAME=TREE [NAME=TREE ...]`: several versions of the core, one process.

Before/after figures for a change to the hot path, measured the way every figure here is: in
the same process and the same run, rounds interleaved, against raw httpx. Each TREE is a
directory holding a `resilient/` package (a checkout, or a copy with a diff applied); it is
copied under a private name (`rg_NAME`, its imports rewritten) so the versions load side by side.

    cp -r . /tmp/after && (cd /tmp/after && patch -p1 < change.diff)
    python -m benchmarks.ab before=. after=/tmp/after

Prints, per version, sync and async: the median per call over the in-memory transport of item 1,
its overhead over raw httpx, and the gain against the first version.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import fixtures
from benchmarks.harness import Stats, compare_async, compare_sync

BASE_URL = "http://bench.invalid"


def install(name: str, tree: Path, into: Path) -> str:
    """Copy `tree/resilient` to `into/rg_<name>` with its imports renamed; the package name."""
    package = f"rg_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
    target = into / package
    shutil.copytree(tree / "resilient", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bresilient\.", f"{package}.", text)
        text = re.sub(r"\bfrom resilient import\b", f"from {package} import", text)
        text = re.sub(r"^import resilient\b", f"import {package}", text, flags=re.MULTILINE)
        path.write_text(text)
    return package


def gateway(package: str, **transports: Any) -> Any:
    """The item-1 gateway, built from that version's own settings classes."""
    settings = importlib.import_module(f"{package}.settings")
    units = importlib.import_module(f"{package}.units")
    provider = settings.ProviderSettings(
        name="p0",
        kind="http",
        base_url=BASE_URL,
        timeouts=settings.TimeoutSettings(connect=5.0, read=30.0, write=30.0, attempt=30.0),
        retry=settings.RetrySettings(attempts=3, backoff_base=0.2, backoff_cap=5.0),
        breaker=settings.BreakerSettings(open_for=3600.0, open_for_max=3600.0),
        rate_limit=units.Rate(1_000_000, 1.0),
    )
    config = settings.GatewaySettings(
        source="<benchmarks.ab>",
        providers={"p0": provider},
        capabilities={"http": settings.CapabilitySettings("http", ("p0",))},
    )
    return importlib.import_module(f"{package}.gateway").Gateway(config, **transports)


def report(mode: str, stats: dict[str, Stats]) -> None:
    raw = stats["raw"].median
    names = [name for name in stats if name != "raw"]
    first = stats[names[0]].median - raw
    print(f"{mode}: raw httpx {raw:.1f} µs/call")
    for name in names:
        overhead = stats[name].median - raw
        print(
            f"  {name:24s} {stats[name].median:8.1f} µs/call   overhead {overhead:6.1f} µs   "
            f"gain vs {names[0]} {first - overhead:+6.1f} µs"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab")
    parser.add_argument("versions", nargs="+", metavar="NAME=TREE")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="benchmarks-ab-"))
    try:
        packages: dict[str, str] = {}
        for spec in args.versions:
            name, _, tree = spec.partition("=")
            if not tree or not (Path(tree) / "resilient").is_dir():
                parser.error(f"{spec!r}: expected NAME=TREE, TREE holding a resilient/ package")
            packages[name] = install(name, Path(tree), scratch)
        sys.path.insert(0, str(scratch))

        mem = fixtures.MemoryTransport()
        client = fixtures.raw_client(BASE_URL, mem)
        subjects: dict[str, Callable[[], object]] = {"raw": lambda: client.get(fixtures.PATH)}
        for name, package in packages.items():
            http = gateway(package, transport=mem).sync.http
            subjects[name] = partial(http.request, "GET", fixtures.PATH)
        report("sync", compare_sync(subjects, args.calls, args.rounds, 200))

        async def run_async() -> dict[str, Stats]:
            amem = fixtures.AsyncMemoryTransport()
            aclient = fixtures.raw_async_client(BASE_URL, amem)
            subjects: dict[str, Callable[[], Awaitable[object]]] = {
                "raw": lambda: aclient.get(fixtures.PATH)
            }
            for name, package in packages.items():
                http = gateway(package, async_transport=amem).http
                subjects[name] = partial(http.request, "GET", fixtures.PATH)
            return await compare_async(subjects, args.calls, args.rounds, 200)

        report("async", asyncio.run(run_async()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
