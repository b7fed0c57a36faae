"""`python -m benchmarks.server`: the loopback simulator serving the benchmark route.

Prints its base URL on one line, serves until its standard input closes (the benchmark that
started it ends, or dies), then stops. The request log is bounded for long runs.
"""

from __future__ import annotations

import sys

from resilient.testing import SimResponse, Simulator

PATH = "/v1/ping"
BODY = b'{"ok":true}'


def main() -> None:
    sim = Simulator(max_records=256)
    answer = SimResponse(200, {"content-type": "application/json"}, BODY)
    for method in ("GET", "POST"):
        sim.route(method, PATH, lambda request: answer)
    with sim:
        print(sim.base_url, flush=True)
        sys.stdin.read()  # until EOF


if __name__ == "__main__":
    main()
