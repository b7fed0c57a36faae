"""`resilient queue ...` and `resilient worker --burst`, run as ops run them: subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.testing import Fault, SimResponse, Simulator

CONFIG = """
[gateway]
spool_path = "{spool}"

[providers.a]
kind = "http"
base_url = "{base}/a"
retry = {{ attempts = 1 }}
breaker = {{ min_calls = 100 }}

[capabilities.http]
chain = ["a"]
defer = true
"""


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`resilient VERB --config CONFIG ARGS...` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "resilient.cli", *args[:1], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli(config: Path, *args: str) -> Any:
    run = run_cli(config, *args)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.fixture
def parked(simulator: Simulator, tmp_path: Path) -> tuple[Simulator, Path, list[str]]:
    """A config file, and three requests parked in its spool while provider `a` was down."""
    simulator.route("POST", "/a/v1/m", lambda r: SimResponse.json({}, status=202))
    config = tmp_path / "resilient.toml"
    config.write_text(CONFIG.format(spool=tmp_path / "spool.db", base=simulator.base_url))
    outage = simulator.inject(Fault.status(503), prefix="/a")
    with Gateway(load_settings(config), background_replay=False) as gw:
        ids = [gw.sync.http.request("POST", "/v1/m", json={"n": n}).deferral_id for n in range(3)]
    outage.clear()
    return simulator, config, [i for i in ids if i]


def test_stats_list_and_show(parked: tuple[Simulator, Path, list[str]]) -> None:
    _, config, ids = parked
    assert cli(config, "queue", "--json", "stats")["ready"] == 3
    listed = cli(config, "queue", "--json", "list")
    assert sorted(row["id"] for row in listed) == sorted(ids)
    shown = cli(config, "queue", "--json", "show", ids[0])
    assert shown["request"]["attempts"][0]["status"] == 503
    assert shown["request"]["payload"]["json"] == {"n": 0}


def test_worker_burst_drains_and_exits(parked: tuple[Simulator, Path, list[str]]) -> None:
    sim, config, _ = parked
    stats = cli(config, "worker", "--burst")
    assert stats["delivered"] == 3
    assert len(sim.effects(prefix="/a")) == 3
    assert cli(config, "queue", "--json", "stats")["ready"] == 0


def test_dead_letters_redrive_and_purge(parked: tuple[Simulator, Path, list[str]]) -> None:
    sim, config, ids = parked
    rejecting = sim.inject(Fault.status(422), prefix="/a")
    cli(config, "worker", "--burst")
    dead = cli(config, "queue", "--json", "dead")
    assert {row["reason"] for row in dead} == {"rejected by provider"}
    rejecting.clear()
    assert cli(config, "queue", "--json", "redrive", ids[0]) == {"redriven": ids[0]}
    assert cli(config, "worker", "--burst")["delivered"] == 1
    assert cli(config, "queue", "--json", "purge") == {"purged": 2}
    assert cli(config, "queue", "--json", "stats") == {
        "ready": 0,
        "leased": 0,
        "dead": 0,
        "oldest_age": 0.0,
    }


def test_replay_by_provider_makes_rescheduled_requests_due(
    parked: tuple[Simulator, Path, list[str]],
) -> None:
    _, config, _ = parked
    assert cli(config, "queue", "--json", "replay", "--provider", "a") == {"due_now": 3}


def test_unknown_ids_and_providers_are_clear_errors(
    parked: tuple[Simulator, Path, list[str]],
) -> None:
    _, config, _ = parked
    for args in (["show", "nope"], ["redrive", "nope"], ["replay", "--provider", "zzz"]):
        run = subprocess.run(
            [sys.executable, "-m", "resilient.cli", "queue", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.startswith("resilient: ")


SMS_CONFIG = """
[gateway]
spool_path = "{spool}"

[providers.twilio]
kind = "twilio"
api_key = "auth-token"
account_sid = "AC123"
base_url = "{base}/twilio"
timeout = "{timeout}"
retry = {{ attempts = 1 }}
breaker = {{ min_calls = 100 }}

[capabilities.sms]
chain = ["twilio"]
defer = true
timeout = "5s"
deadline = "{deadline}"
"""
MESSAGES = "/twilio/2010-04-01/Accounts/AC123/Messages.json"


def failing_cli(config: Path, *args: str) -> str:
    run = run_cli(config, *args)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    return run.stderr


# Twilio's attempt timeout while a fault holds its requests (the hang ends in it), and once
# Twilio answers again: a busy machine may take more than half a second to serve a request.
HANGING = "500ms"
ANSWERING = "10s"


def write_sms_config(
    config: Path, simulator: Simulator, deadline: str = "1h", timeout: str = ANSWERING
) -> None:
    config.write_text(
        SMS_CONFIG.format(
            spool=config.parent / "spool.db",
            base=simulator.base_url,
            deadline=deadline,
            timeout=timeout,
        )
    )


def park_sms(
    simulator: Simulator, tmp_path: Path, deadline: str = "1h", timeout: str = ANSWERING
) -> tuple[Path, str, Any]:
    """A config file, and one SMS parked in its spool while Twilio was down."""
    from providers import Sms
    from resilient.testing.routes import twilio as twilio_routes

    twilio = twilio_routes.mount(simulator, "/twilio")
    config = tmp_path / "resilient.toml"
    write_sms_config(config, simulator, deadline, timeout)
    outage = simulator.inject(Fault.status(503), prefix="/twilio")
    with Gateway(load_settings(config), background_replay=False) as gw:
        sms = Sms(to="+15550100", body="code 7", sender="+15550001", idempotency_key="otp-7")
        deferral_id = gw.sync.sms.send(sms).deferral_id
    outage.clear()
    assert deferral_id
    return config, deferral_id, twilio


@pytest.mark.parametrize("done", [True, False], ids=["done", "not-done"])
def test_an_ambiguous_letter_is_reconciled_not_resent_blind(
    simulator: Simulator, tmp_path: Path, done: bool
) -> None:
    """A replay times out on Twilio, and Twilio can't be asked then: the letter is buried as
    ambiguous. Redrive refuses it; `reconcile` asks Twilio once it answers: a message found
    ends the letter as delivered, one provably not sent goes back in line and out once."""
    config, deferral_id, twilio = park_sms(simulator, tmp_path, timeout=HANGING)
    simulator.inject(Fault.hang(after_effect=done), method="POST", path=MESSAGES)
    simulator.inject(Fault.status(500), method="GET", path=MESSAGES)
    cli(config, "worker", "--burst")
    assert len(twilio.messages) == (1 if done else 0)  # Twilio took it, or not, as set up
    [letter] = cli(config, "queue", "--json", "dead")
    assert letter["reason"].startswith("ambiguous outcome")
    assert "reconcile" in failing_cli(config, "queue", "redrive", deferral_id)

    simulator.clear_faults()
    write_sms_config(config, simulator)  # Twilio answers again: no half-second verdicts now
    [report] = cli(config, "queue", "--json", "reconcile", "--all")
    assert report["asked"].startswith("lookup: ")
    if done:
        assert report["outcome"].startswith("delivered by twilio")
        assert cli(config, "queue", "--json", "stats")["dead"] == 0
    else:
        assert report["outcome"] == "not done: back in line"
        assert cli(config, "worker", "--burst")["delivered"] == 1
    assert [m["body"] for m in twilio.messages.values()] == ["code 7"]


def test_an_expired_letter_is_redriven_only_with_a_new_deadline(
    simulator: Simulator, tmp_path: Path
) -> None:
    import time

    config, deferral_id, twilio = park_sms(simulator, tmp_path, deadline="1s")
    time.sleep(1.2)
    cli(config, "worker", "--burst")
    [letter] = cli(config, "queue", "--json", "dead")
    assert letter["reason"] == "deadline passed before delivery"
    assert "--extend" in failing_cli(config, "queue", "redrive", deferral_id)
    redriven = cli(config, "queue", "--json", "redrive", deferral_id, "--extend", "1h")
    assert redriven["redriven"] == deferral_id and "deadline" in redriven
    assert cli(config, "worker", "--burst")["delivered"] == 1
    assert len(twilio.messages) == 1


def test_a_forced_redrive_of_an_ambiguous_letter_sends_it_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    config, deferral_id, twilio = park_sms(simulator, tmp_path, timeout=HANGING)
    simulator.inject(Fault.hang(), method="POST", path=MESSAGES)
    simulator.inject(Fault.status(500), method="GET", path=MESSAGES)
    cli(config, "worker", "--burst")
    simulator.clear_faults()
    write_sms_config(config, simulator)  # Twilio answers again: no half-second verdicts now
    assert cli(config, "queue", "--json", "redrive", deferral_id, "--force") == {
        "redriven": deferral_id
    }
    assert cli(config, "worker", "--burst")["delivered"] == 1
    assert len(twilio.messages) == 1
