"""`python -m chaos.app --config FILE --tag TAG`: the application the app-kill scenario kills.

Sends the scenario's mixed sync and async traffic through a gateway built from FILE until it is
killed, and prints one line per call (a `CallRecord`) the moment the call returns: whoever
kills it knows exactly which callers were told `deferred`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaos.scenarios import CallRecord, Load, drive
from resilient.config import load_settings
from resilient.gateway import Gateway


def _emit(record: CallRecord) -> None:
    """Called under drive's lock: lines from threads and tasks never interleave."""
    sys.stdout.write(record.to_line() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.app", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--tag", required=True, help="prefix of every idempotency key")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop by itself after")
    args = parser.parse_args(argv)
    load = Load(duration=args.seconds, threads=2, tasks=2)
    with Gateway(load_settings(args.config), ops=False) as gw:
        asyncio.run(drive(gw, load, args.tag, on_record=_emit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
