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


def cli(config: Path, *args: str) -> Any:
    run = subprocess.run(
        [sys.executable, "-m", "resilient.cli", *args[:1], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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
            timeout=60,
            check=False,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.startswith("resilient: ")
