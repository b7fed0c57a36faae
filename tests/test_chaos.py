"""The chaos suite's short profile: each scenario under load, its invariants counted at the
simulator (and in Redis and the spool for the crash scenarios; by idempotency key, or at
Twilio by message body); and `python -m chaos` end to end (table, JSON, exit status)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.scenarios import (
    SCENARIOS,
    CallRecord,
    ScenarioResult,
    max_per_second,
    same_key_schedule,
    table,
)
from resilient.testing import RedisServer
from tests.conftest import EarlyRun

ROOT = Path(__file__).resolve().parent.parent
CHAOS_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def scenario_argv(name: str) -> Callable[[Path], list[str]]:
    return lambda scratch: [
        *(sys.executable, "-m", "chaos", "--profile", "short"),
        *("--only", name, "--json", str(scratch / "result.json")),
    ]


# Each scenario runs as `python -m chaos --only NAME` does: on its own simulator, Redis and
# processes, from the start of the session (EarlyRun), its tens of seconds beside the rest of
# the suite; the tests below check what it reported.
SCENARIO_RUNS = {
    name: EarlyRun(scenario_argv(name), env=CHAOS_ENV, timeout=600) for name in SCENARIOS
}


def run(name: str) -> ScenarioResult:
    """The short profile's result of scenario `name` (waiting for its run to end)."""
    early = SCENARIO_RUNS[name]
    proc = early.run()
    assert early.directory is not None
    written = early.directory / "result.json"
    assert written.exists(), proc.stdout + proc.stderr  # it ran to the end
    [data] = json.loads(written.read_text())["scenarios"]
    del data["ok"]
    return ScenarioResult(**data)


def early(name: str) -> pytest.MarkDecorator:
    return pytest.mark.early(SCENARIO_RUNS[name])


def common(result: ScenarioResult) -> None:
    assert result.calls > 0
    assert result.details["modes"].keys() == {"sync", "async"}  # threads and tasks both ran
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.violations == []


@early("primary-down")
def test_primary_down_serves_or_defers_then_replays_every_call() -> None:
    result = run("primary-down")
    common(result)
    assert result.failed == 0
    assert result.served + result.deferred == result.calls
    assert result.deferred > 0 and result.replayed == result.deferred
    assert result.details["served_by"].get("f", 0) > 0  # the fallback served during the outage
    assert result.details["probes_while_down"] <= result.details["probe_bound"]
    back_after = result.details["primary_back_after_s"]
    assert back_after is not None and back_after <= 5.0


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=early(name)) for name in ("429-retry-after", "429-no-hint")]
)
def test_rate_limit_storm_never_hammers_the_provider(name: str) -> None:
    result = run(name)
    common(result)
    details = result.details
    assert result.failed == 0
    limit = details["limit_per_s"] + details["jitter_allowance"]
    assert result.max_attempts_per_s_at_provider <= limit
    assert details["storm_attempts"] <= details["attempt_bound"]
    assert details["settled_attempts_per_s"] <= details["settled_bound"]
    assert details["served_by_fallback_during_storm"] > 0


@early("silent-provider")
def test_silent_provider_every_call_ends_within_its_deadline() -> None:
    result = run("silent-provider")
    common(result)
    assert result.details["slowest_call_s"] <= result.details["deadline_s"] + 1.0
    assert result.served > 0
    assert set(result.details["errors"]) <= {"AmbiguousOutcome", "DeadlineExceeded"}


@early("connection-reset")
def test_connection_resets_are_retried_or_failed_over_and_no_payment_goes_twice() -> None:
    result = run("connection-reset")
    common(result)
    details = result.details
    assert all(details["reset_hits"])  # resets before headers and mid-body, at p and Stripe
    assert details["retried_then_served"] > 0  # a reset attempt, then served by the same one
    assert details["failed_over_to_f"] > 0
    assert details["charges_cut_mid_response"] > 0
    # a key Stripe ever saw never reached PayPal; its caller got an honest "maybe", not a retry
    # elsewhere (or Stripe's own saved answer on a retry)
    assert details["keys_at_both_processors"] == 0
    assert set(details["cut_charge_outcomes"]) <= {"AmbiguousOutcome", "delivered:stripe"}
    assert set(details["errors"]) <= {"AmbiguousOutcome"}


@early("redis-outage")
def test_redis_outage_spills_to_the_spool_then_replays_everything() -> None:
    result = run("redis-outage")
    common(result)
    details = result.details
    assert result.failed == 0
    assert result.deferred > 0 and result.replayed == result.deferred
    assert details["parked_in_redis_before_stop"] > 0  # survived the restart (append-only)
    assert details["spilled_to_spool"] > 0  # parked while Redis was away
    assert details["served_while_redis_down"] > 0  # local breaker state kept serving
    assert details["dead_lettered"] == {}


@early("worker-kill")
def test_worker_killed_mid_drain_another_finishes_nothing_lost_or_done_twice() -> None:
    result = run("worker-kill")
    common(result)
    details = result.details
    assert result.deferred == result.calls > 0  # everything parked in Redis first
    assert details["killed"].endswith("exit -9")
    assert 0 < details["delivered_before_kill"] < details["parked"]
    assert result.replayed == result.deferred
    assert details["resent_same_key"] <= details["resend_bound"]  # only its last moments
    assert details["dead_lettered"] == 0


@early("app-kill")
def test_app_killed_after_deferred_the_request_is_still_there_and_delivered() -> None:
    result = run("app-kill")
    common(result)
    assert result.failed == 0
    for store in ("spool", "redis"):
        details = result.details[store]
        assert details["deferred_before_kill"] >= 50
        assert details["missing_after_kill"] == 0
        assert details["dead_lettered"] == 0
    assert result.deferred > 0 and result.replayed == result.deferred


@early("same-key")
def test_same_key_from_two_processes_is_charged_once_and_both_get_that_charge() -> None:
    result = run("same-key")
    common(result)
    details = result.details
    keys = details["sqlite"]["keys"]
    # every (process, key) ends with one delivered answer: the charge, or the same one reused
    assert result.served == 2 * 2 * keys
    assert details["payment_intents"] + details["paypal_orders"] == 2 * keys  # one per key
    assert details["paypal_orders"] > 0 and details["payment_intents"] > 0  # both paths ran
    assert details["receipts_unknown_to_processors"] == 0
    for variant in ("sqlite", "redis"):
        second = details[variant]["second_call"]
        assert sum(second.values()) == keys  # one call per key carried it out
        assert second.get("waited", 0) > 0  # overlapped, and got the other's outcome
        assert second.get("in_progress", 0) > 0  # its deadline first; its retry got the charge
        assert details[variant]["stripe_429s"] > 0


@early("worker-kill-paced")
def test_worker_killed_while_a_paced_batch_drains_sends_every_sms_once() -> None:
    result = run("worker-kill-paced")
    assert result.violations == []
    assert result.deferred == result.calls > 0  # everything parked first
    assert result.replayed == result.deferred and result.lost == 0 and result.duplicated == 0
    details = result.details
    [kill] = details["kills"]
    assert kill["exit"] == [-9] and kill["held_in_flight"]
    assert 0 < kill["delivered_at_kill"] < result.deferred
    assert details["lookups"] >= sum(details["held_per_kill"].values())  # asked, not resent
    assert result.max_attempts_per_s_at_provider <= details["pace_bound"]
    assert details["dead_lettered"] == 0


def test_a_call_record_survives_its_line() -> None:
    record = CallRecord("k-1", "sync", "deferred", None, 12.5, 0.25, (("p", "retryable"),))
    assert CallRecord.from_line(record.to_line()) == record
    charged = replace(record, status="delivered", receipt="pi_1", deduplicated=True)
    assert CallRecord.from_line(charged.to_line()) == charged


def test_same_key_schedule_races_both_processes_and_b_sometimes_comes_late_and_short() -> None:
    for n in range(6):
        (a_at, a_mode, a_deadline), (b_at, b_mode, b_deadline) = (
            same_key_schedule(role, n) for role in ("A", "B")
        )
        assert {a_mode, b_mode} == {"sync", "async"} and a_deadline is None
        late = n % 3 == 2
        assert (b_at > a_at) == late and (b_deadline is not None) == late


def test_append_only_redis_keeps_its_data_across_a_restart() -> None:
    with RedisServer(appendonly=True) as server:
        assert server.command("SET", "parked", "1") == b"+OK"
        server.restart()
        assert server.command("GET", "parked") == b"$1"  # a bulk reply of one byte: "1"
        data = server._dir
    assert data is not None and not data.exists()  # leaving the block removes its files


@early("flapping")
def test_flapping_provider_does_not_thrash_the_breaker_or_storm_retries() -> None:
    result = run("flapping")
    common(result)
    details = result.details
    assert result.failed == 0
    assert details["breaker_opens"] > 0
    assert details["breaker_transitions"] <= details["transition_bound"]
    assert details["attempts_at_p"] <= details["attempt_bound"]


@early("slow-provider")
def test_slow_provider_is_counted_unhealthy_and_failed_over() -> None:
    result = run("slow-provider")
    common(result)
    assert result.failed == 0
    assert result.details["breaker_opens"] > 0
    after = result.details["after_open"]
    assert after > 0 and result.details["served_by_fallback_after_open"] >= 0.8 * after


def test_every_issue_scenario_is_registered() -> None:
    assert list(SCENARIOS) == [
        "primary-down",
        "429-retry-after",
        "429-no-hint",
        "silent-provider",
        "connection-reset",
        "flapping",
        "redis-outage",
        "worker-kill",
        "app-kill",
        "slow-provider",
        "same-key",
        "worker-kill-paced",
    ]


def test_max_per_second_counts_a_sliding_window() -> None:
    assert max_per_second([]) == 0
    assert max_per_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_per_second([0.0, 2.0, 4.0]) == 1


def test_table_flags_a_broken_invariant() -> None:
    good = ScenarioResult("good", calls=3, served=3)
    bad = ScenarioResult("bad", calls=2, served=1, lost=1)
    bad.check(bad.lost == 0, "lost 1")
    lines = table([good, bad]).splitlines()
    assert lines[0].split()[:3] == ["scenario", "calls", "served"]
    assert lines[2].split()[0] == "good" and lines[2].split()[-1] == "ok"
    assert lines[3].split()[0] == "bad" and lines[3].split()[-1] == "FAIL"


CLI_ONLY = ["silent-provider", "slow-provider"]
CLI = EarlyRun(
    lambda scratch: [
        *(sys.executable, "-m", "chaos", "--profile", "short"),
        *("--json", str(scratch / "chaos.json"), "--only", *CLI_ONLY),
    ],
    cwd=ROOT,
    env=CHAOS_ENV,
    timeout=300,
)


@pytest.mark.early(CLI)
def test_cli_prints_the_table_writes_json_and_exits_zero() -> None:
    """Two quick scenarios (every one runs above): the command's table and JSON agree."""
    only = CLI_ONLY
    proc = CLI.run()
    assert CLI.directory is not None
    out = CLI.directory / "chaos.json"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0].split()
    assert header[:7] == [
        "scenario",
        "calls",
        "served",
        "deferred",
        "replayed",
        "lost",
        "duplicated",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2 : 2 + len(only)]}
    assert list(rows) == only
    data = json.loads(out.read_text())
    assert data["profile"] == "short"
    assert [s["name"] for s in data["scenarios"]] == only
    for scenario in data["scenarios"]:
        assert scenario["ok"] and scenario["violations"] == []
        assert scenario["lost"] == 0 and scenario["duplicated"] == 0
        row = rows[scenario["name"]]
        assert int(row[1]) == scenario["calls"] and int(row[5]) == scenario["lost"]
        assert row[-1] == "ok"
