"""The `resilient` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resilient", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="an outage under traffic, on the embedded provider simulator"
    )
    demo.add_argument("--quick", action="store_true", help="a shorter run (about 10 s)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from resilient import demo as demo_module

        return demo_module.run(quick=args.quick)
    parser.error(f"unknown command {args.command}")  # argparse exits here
    return 2


if __name__ == "__main__":
    sys.exit(main())
