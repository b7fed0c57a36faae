"""The quick start's demo, run as a user runs it: a subprocess of the installed command."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import EarlyRun

DEMO = EarlyRun(lambda _: [sys.executable, "-m", "resilient.cli", "demo", "--quick"], timeout=180)


@pytest.mark.early(DEMO)
def test_demo_tells_the_outage_story() -> None:
    run = DEMO.run()
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "breaker OPEN" in out and "breaker half-open" in out and "breaker closed" in out
    assert "story complete: no call lost" in out
    assert "parked notifications replayed exactly once" in " ".join(out.split())

    def row(name: str) -> str:
        line = next(line for line in out.splitlines() if f"│ {name}" in line)
        return line.split("│")[2].strip()

    assert row("failed") == "0"
    assert int(row("parked")) > 0 and row("replayed after recovery") == row("parked")
    assert row("lost (counted at the simulator)") == "0"
    assert row("duplicates (counted at the simulator)") == "0"
