"""`python -m benchmarks.profiling [--sync] [--calls N] [--pyinstrument] [--raw]`: where a call's
time goes on the gateway path (in-memory transport, the same setup as item 1).

cProfile by default, sorted by own time; `--raw` profiles plain httpx on the same transport, to
tell the gateway's share from httpx's. `--pyinstrument` prints pyinstrument's call tree instead
(pip install pyinstrument).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
from collections.abc import Callable

from benchmarks import fixtures

BASE_URL = "http://bench.invalid"


def _calls(sync: bool, raw: bool, n: int) -> Callable[[], None]:
    """A function making n calls, set up and warmed outside of it."""
    if sync:
        mem = fixtures.MemoryTransport()
        client = fixtures.raw_client(BASE_URL, mem)
        http = fixtures.gateway([BASE_URL], transport=mem).sync.http

        def one() -> object:
            return client.get(fixtures.PATH) if raw else http.request("GET", fixtures.PATH)

        for _ in range(200):
            one()

        def run() -> None:
            for _ in range(n):
                one()

        return run

    loop = asyncio.new_event_loop()
    amem = fixtures.AsyncMemoryTransport()
    aclient = fixtures.raw_async_client(BASE_URL, amem)
    ahttp = fixtures.gateway([BASE_URL], async_transport=amem).http

    async def many(k: int) -> None:
        for _ in range(k):
            if raw:
                await aclient.get(fixtures.PATH)
            else:
                await ahttp.request("GET", fixtures.PATH)

    loop.run_until_complete(many(200))
    return lambda: loop.run_until_complete(many(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("--sync", action="store_true", help="gw.sync.http instead of gw.http")
    parser.add_argument("--raw", action="store_true", help="plain httpx, for comparison")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args(argv)
    run = _calls(args.sync, args.raw, args.calls)
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        profiler.start()
        run()
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return 0
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
