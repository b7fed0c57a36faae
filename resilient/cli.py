"""The `resilient` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from resilient import ops_cli
from resilient.errors import ResilientError


def _demo(args: argparse.Namespace) -> int:
    from resilient import demo

    return demo.run(quick=args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    """Commands of other packages (`queues`: worker, queue) join through the `resilient.cli`
    entry point: each is a function that adds its subparsers, with `handler` as default."""
    parser = argparse.ArgumentParser(prog="resilient", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="an outage under traffic, on the embedded provider simulator"
    )
    demo.add_argument("--quick", action="store_true", help="a shorter run (about 10 s)")
    demo.set_defaults(handler=_demo)
    ops_cli.register(commands)
    for ep in entry_points(group="resilient.cli"):
        ep.load()(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ResilientError as exc:  # a config error, an unknown id: one clear line, no traceback
        print(f"resilient: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
