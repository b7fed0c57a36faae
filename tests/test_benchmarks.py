"""The benchmark runs as a user runs it and reports every row; its timings are never asserted.

`python -m benchmarks --quick --json PATH` in a subprocess: it must exit 0, print every row,
and write every row to the JSON with numeric figures whose ratios come from the same run's
baseline. Rows needing bench-only packages (tenacity, aiolimiter) may be skipped, but only when
the package really is missing; so may item 3's (an SDK extra missing) and item 6's (the redis
extra, or redis-server itself, missing).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EarlyRun

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = [
    "1.pipeline.sync",
    "1.pipeline.async",
    "1.net.sync",
    "1.net.async",
    "1.tenacity.sync",
    "1.tenacity.async",
    "1.vs-tenacity.sync",
    "1.vs-tenacity.async",
    "2.loopback.gateway.sync",
    "2.loopback.gateway.async",
    "2.loopback.handrolled.sync",
    "2.loopback.handrolled.async",
    *(
        f"3.sdk.{sdk}.{mode}"
        for sdk in ("openai", "stripe", "twilio")
        for mode in ("sync", "async")
    ),
    "3.sdk.sendgrid.sync",
    *(f"4.{metric}.{n}" for n in (1, 10, 100, 1000) for metric in ("throughput", "latency")),
    *(f"5.chain.{n}.{mode}" for mode in ("sync", "async") for n in (1, 3, 5)),
    "6.redis.sync",
    "6.redis.async",
    "6.redis.roundtrips.sync",
    "6.redis.roundtrips.async",
    "7.replay.spool",
    "7.replay.spool.httpx",
    "7.replay.redis",
    "8.providers20.traced",
    "8.providers20.rss",
    "8.inflight.traced",
    "8.inflight.rss",
    "9.park.sqlite",
    "9.ledger.sqlite",
    "9.cpu.email",
    "9.cpu.charge",
    "9.cpu.email.64",
    "9.cpu.charge.64",
]
NOT_YET: set[str] = set()
BENCH_ONLY = {  # need tenacity / aiolimiter, which the package does not depend on
    "1.tenacity.sync",
    "1.tenacity.async",
    "1.vs-tenacity.sync",
    "1.vs-tenacity.async",
    "2.loopback.handrolled.sync",
    "2.loopback.handrolled.async",
}
NEEDS_EXTRAS = {row for row in EXPECTED if row.startswith(("3.", "6."))}  # SDKs, Redis
ALWAYS_MEASURED = set(EXPECTED) - NOT_YET - BENCH_ONLY - NEEDS_EXTRAS


def quick_argv(scratch: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "--quick", "--json", str(scratch / "results.json")]


QUICK_RUN = EarlyRun(quick_argv, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def quick_run() -> tuple[str, dict[str, Any]]:
    """`python -m benchmarks --quick --json PATH`, started as the session began (EarlyRun)."""
    run = QUICK_RUN.run()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert QUICK_RUN.directory is not None
    return run.stdout, json.loads((QUICK_RUN.directory / "results.json").read_text())


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.early(QUICK_RUN)
def test_every_row_is_printed_and_written(quick_run: tuple[str, dict[str, Any]]) -> None:
    stdout, document = quick_run
    rows = {row["id"]: row for row in document["rows"]}
    assert list(rows) == EXPECTED
    for row in rows.values():
        assert f"| {row['item']} | {row['title']} " in stdout, row["id"]
    assert document["quick"] is True
    assert document["machine"]["python"]


@pytest.mark.early(QUICK_RUN)
def test_measured_rows_have_numbers_and_same_run_ratios(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    rows = {row["id"]: row for row in quick_run[1]["rows"]}
    for row_id in ALWAYS_MEASURED:
        assert rows[row_id]["status"] == "measured", rows[row_id]
    for row in rows.values():
        if row["status"] != "measured":
            continue
        median, baseline = row["median"], row["baseline_median"]
        assert _number(median) and _number(baseline) and baseline != 0, row
        assert row["ratio"] == pytest.approx(median / baseline, rel=1e-9), row
        assert row["delta"] == pytest.approx(median - baseline, rel=1e-9, abs=1e-9), row
        assert row["round_medians"] and all(_number(x) for x in row["round_medians"]), row
        assert row["baseline_round_medians"], row
        if row["p99"] is not None:
            assert _number(row["p99"]), row
        if row["target"] is None:
            assert row["met"] is None, row
        else:
            assert isinstance(row["met"], bool), row


@pytest.mark.early(QUICK_RUN)
def test_overhead_rows_derive_from_the_rows_above(quick_run: tuple[str, dict[str, Any]]) -> None:
    rows = {row["id"]: row for row in quick_run[1]["rows"]}
    for mode in ("sync", "async"):
        vs = rows[f"1.vs-tenacity.{mode}"]
        if vs["status"] != "measured":
            continue
        assert vs["median"] == pytest.approx(rows[f"1.pipeline.{mode}"]["delta"], rel=1e-9)
        assert vs["baseline_median"] == pytest.approx(rows[f"1.tenacity.{mode}"]["delta"], rel=1e-9)


@pytest.mark.early(QUICK_RUN)
def test_skips_only_for_missing_bench_packages(quick_run: tuple[str, dict[str, Any]]) -> None:
    for row in quick_run[1]["rows"]:
        if row["id"] in NOT_YET:
            assert row["status"] == "not yet measured", row
        elif row["status"] == "skipped" and "missing_binary" in row["extra"]:
            assert shutil.which(row["extra"]["missing_binary"]) is None, row
        elif row["status"] == "skipped":
            missing = row["extra"]["missing"]
            assert missing, row
            assert all(importlib.util.find_spec(name) is None for name in missing), row
        else:
            assert row["status"] == "measured", row


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks package is no installed package: import it from the checkout."""
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.mark.early(QUICK_RUN)
@pytest.mark.usefixtures("importable")
def test_sdk_rows_compare_each_drop_in_with_its_official_client_in_the_same_rounds(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    from benchmarks.suites.sdk_clients import PAIRS

    document = quick_run[1]
    rows = {row["id"]: row for row in document["rows"]}
    for pair in PAIRS:
        row = rows[pair.spec.id]
        if any(importlib.util.find_spec(name) is None for name in pair.needs):
            assert row["status"] == "skipped", row
            continue
        assert row["status"] == "measured", row
        assert row["baseline_label"] == pair.official
        rounds = document["config"]["rounds"]  # both sides timed in every interleaved round
        assert len(row["round_medians"]) == len(row["baseline_round_medians"]) == rounds, row
        assert row["ratio"] == pytest.approx(row["median"] / row["baseline_median"], rel=1e-9)
        assert row["met"] is (row["ratio"] <= 1.05), row
        if pair.library is not None:  # what of the ratio is the HTTP library's, same run
            assert set(row["extra"]["library_us"]) == {pair.library, "httpx"}, row
            assert all(_number(v) and v > 0 for v in row["extra"]["library_us"].values()), row


@pytest.mark.early(QUICK_RUN)
def test_shared_state_rows_measure_redis_against_memory_and_count_round_trips(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    document = quick_run[1]
    rows = {row["id"]: row for row in document["rows"]}
    runnable = importlib.util.find_spec("redis") is not None and shutil.which("redis-server")
    for mode in ("sync", "async"):
        latency, trips = rows[f"6.redis.{mode}"], rows[f"6.redis.roundtrips.{mode}"]
        if not runnable:
            assert latency["status"] == trips["status"] == "skipped"
            continue
        assert latency["status"] == trips["status"] == "measured", (latency, trips)
        assert latency["baseline_label"] == "same gateway, state in memory"
        rounds = document["config"]["rounds"]
        assert len(latency["round_medians"]) == len(latency["baseline_round_medians"]) == rounds
        # round trips per call: counted over the calls of each round, divided by those calls
        calls = trips["extra"]["calls_per_round"]
        assert trips["baseline_round_medians"] == [calls] * len(trips["round_medians"])
        assert all(float(n).is_integer() and n >= 0 for n in trips["round_medians"]), trips
        assert trips["ratio"] == pytest.approx(trips["median"] / calls, rel=1e-9)
        assert trips["met"] is (trips["ratio"] < 0.1), trips
        assert "limiter leases (EVALSHA)" in trips["notes"][0], trips
        assert "info" not in trips["extra"]["commands_per_call"], trips


@pytest.mark.redis
@pytest.mark.usefixtures("importable")
def test_round_trips_are_what_clients_send_not_what_scripts_run_or_the_count_itself() -> None:
    import redis

    from benchmarks.suites.shared_state import RoundTrips
    from resilient.testing.redis_server import RedisServer

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        script = client.register_script("redis.call('SET', KEYS[1], 1); return 1")
        script(keys=["warm"])  # connects and loads the script before anything is counted
        counted = RoundTrips(server.url)
        counted.begin()
        client.get("a")
        script(keys=["b"])  # one request, though the server runs SET inside it
        with client.pipeline() as pipe:  # one request: MULTI, 2 GETs, EXEC
            pipe.get("c")
            pipe.get("d")
            pipe.execute()
        counted.end()
        counted.begin()
        counted.end()  # nobody else asked anything
        client.close()
        counted.close()
    assert counted.per_round == [3, 0]
    assert counted.commands == {"get": 3, "evalsha": 1, "set": 1, "multi": 1, "exec": 1}


@pytest.mark.usefixtures("importable")
def test_without_redis_server_the_shared_state_rows_skip_and_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.harness import QUICK
    from benchmarks.suites import shared_state
    from resilient.testing.redis_server import INSTALL_HINT

    monkeypatch.setattr(shutil, "which", lambda name: None)
    rows = shared_state.run(QUICK)
    assert [row.spec for row in rows] == list(shared_state.SUITE.rows)
    for row in rows:
        assert row.status == "skipped"
        assert row.notes == [f"skipped: {INSTALL_HINT}"]
        assert row.extra == {"missing_binary": "redis-server"}


@pytest.mark.usefixtures("importable")
def test_the_sdk_routes_forget_what_they_created_every_keep_requests() -> None:
    from benchmarks import server
    from resilient.testing import SimRequest, SimResponse

    class State:
        def __init__(self) -> None:
            self.created: list[int] = []
            self.by_key: dict[int, int] = {}
            self.name = "kept"

    state = State()

    def create(request: SimRequest) -> SimResponse:
        state.created.append(1)
        state.by_key[len(state.created)] = 1
        return SimResponse(201, {}, b"")

    handle = server._bounded(state, create)
    request = SimRequest("POST", "/x", "", {}, b"")
    for _ in range(server.KEEP - 1):
        handle(request)
    assert len(state.created) == len(state.by_key) == server.KEEP - 1
    handle(request)  # the KEEP-th: emptied first, then this one's
    assert len(state.created) == len(state.by_key) == 1
    assert state.name == "kept"


@pytest.mark.usefixtures("importable")
def test_paired_comparison_alternates_the_subjects_call_by_call() -> None:
    """Both sides of a network row are timed at the same moments: a, b, a, b... in a round,
    each side first in half the rounds, every round's median kept for each."""
    from benchmarks.harness import compare_paired_async, compare_paired_sync

    calls: list[str] = []
    stats = compare_paired_sync(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        calls=3,
        rounds=4,
        warmup=0,
    )
    firsts = [calls[i] for i in range(0, len(calls), 6)]
    assert firsts == ["a", "b", "b", "a"]  # each side first in half the rounds
    assert all(calls[i] != calls[i + 1] for i in range(0, len(calls), 2))
    assert all(len(s.rounds) == 4 for s in stats.values())

    async def run() -> None:
        async def a() -> None:
            calls.append("a")

        async def b() -> None:
            calls.append("b")

        await compare_paired_async({"a": a, "b": b}, calls=2, rounds=1, warmup=0)

    calls.clear()
    asyncio.run(run())
    assert calls == ["a", "b", "a", "b"]
