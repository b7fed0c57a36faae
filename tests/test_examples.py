"""The examples run as users run them, and tell the story they promise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import EarlyRun

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CAPABILITIES = EarlyRun(lambda _: [sys.executable, str(EXAMPLES / "capabilities.py")], timeout=180)
LLM = EarlyRun(lambda _: [sys.executable, str(EXAMPLES / "llm.py")], timeout=180)


@pytest.mark.early(CAPABILITIES)
def test_capabilities_example_fails_over_dedupes_and_replays() -> None:
    run = CAPABILITIES.run()
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "email   delivered by mailgun" in out  # sendgrid was down
    assert "sms     delivered by vonage" in out  # twilio was down
    assert "charge  delivered by stripe" in out and "deduplicated=True" in out
    assert "decline final: 402 card_declined" in out
    assert "post    deferred" in out and "replayed after recovery: 1 status created" in out


@pytest.mark.early(LLM)
def test_llm_example_fails_over_serves_stale_and_restarts_a_cut_stream() -> None:
    run = LLM.run()
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "answered by openai (gpt-4o-mini)" in out
    assert "answered by anthropic (claude-3-5-haiku-latest)" in out  # openai was down
    assert "answered by gemini (gemini-2.0-flash)" in out  # and then anthropic
    assert "not cacheable: ChainExhausted" in out  # all three down
    assert "stale answer from the cache" in out and "first given by gemini" in out
    streamed = [line for line in out.splitlines() if line.startswith("stream  ")]
    assert streamed[:4] == [  # three words from openai, then the cut and the restart
        "stream  openai: 'echo:'",
        "stream  openai: ' When'",
        "stream  openai: ' do'",
        "stream  cut: started over on anthropic, the partial answer dropped",
    ]
    assert all(line.startswith("stream  anthropic: ") for line in streamed[4:-2])
    assert streamed[-1] == "stream  answer 'echo: When do you open on Sundays?' after 1 restart"
