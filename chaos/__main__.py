"""`python -m chaos`: run every scenario, print the summary table, exit 1 on a broken invariant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import cast

from chaos.scenarios import PROFILES, SCENARIOS, Profile, ScenarioResult, run, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="short")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios"
    )
    args = parser.parse_args(argv)
    profile = cast(Profile, args.profile)
    results: list[ScenarioResult] = []
    for name in args.only or SCENARIOS:
        print(f"running {name} ({profile})...", file=sys.stderr, flush=True)
        results.append(run(name, profile))
    print(table(results))
    for result in results:
        for violation in result.violations:
            print(f"FAIL {result.name}: {violation}")
    if args.json is not None:
        payload = {"profile": profile, "scenarios": [r.to_json() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
