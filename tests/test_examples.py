"""The examples run as users run them, and tell the story they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_capabilities_example_fails_over_dedupes_and_replays() -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "capabilities.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "email   delivered by mailgun" in out  # sendgrid was down
    assert "sms     delivered by vonage" in out  # twilio was down
    assert "charge  delivered by stripe" in out and "deduplicated=True" in out
    assert "decline final: 402 card_declined" in out
    assert "post    deferred" in out and "replayed after recovery: 1 status created" in out
