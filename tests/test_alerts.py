"""Alert rules over status snapshots (sans-I/O), and the monitor over a real gateway."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from resilient import CallFailed
from resilient.alerts import (
    BREAKER_OPEN,
    ERROR_RATE,
    P95_LATENCY,
    QUEUE_AGE,
    Alert,
    AlertChanged,
    AlertMonitor,
    AlertRules,
)
from resilient.gateway import Gateway
from resilient.settings import (
    AlertSettings,
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
)
from resilient.telemetry import Event
from resilient.testing import Fault, SimResponse, Simulator
from tests.conftest import provider

DEFAULTS = AlertSettings()  # p95 2 s, error rate 1 %, breaker open 300 s, queue age 600 s


def make_gateway(*providers: ProviderSettings, defer: bool = False, **settings: Any) -> Gateway:
    """One "http" capability over `providers`; no ops loop (tests set provider state by hand)."""
    chain = tuple(p.name for p in providers)
    return Gateway(
        GatewaySettings(
            providers={p.name: p for p in providers},
            capabilities={"http": CapabilitySettings("http", chain, defer=defer)},
            **settings,
        ),
        ops=False,
    )


def snapshot(queue: dict[str, Any] | None = None, **providers: dict[str, Any]) -> dict[str, Any]:
    """A status snapshot shaped like Gateway.status(), healthy unless told otherwise."""
    healthy = {
        "enabled": True,
        "breaker": "closed",
        "calls_in_window": 0,
        "failure_rate": 0.0,
        "latency_p50": None,
        "latency_p95": None,
        "samples": 0,
    }
    return {
        "providers": {name: {**healthy, **fields} for name, fields in providers.items()},
        "capabilities": {"http": {"chain": list(providers)}},
        "queue": queue,
    }


def keys(alerts: list[Alert]) -> list[tuple[str, str, bool]]:
    return [(a.rule, a.subject, a.firing) for a in alerts]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- the rules, sans-I/O ------------------------------------------------------------------------


def test_p95_latency_fires_once_and_resolves_once() -> None:
    rules = AlertRules(DEFAULTS)
    slow = {"latency_p95": 2.5, "samples": 50}
    assert rules.evaluate(snapshot(a={"latency_p95": 2.0, "samples": 50}), 0) == []  # at: fine
    (fired,) = rules.evaluate(snapshot(a=slow), 1)
    assert fired == Alert(P95_LATENCY, "a", 2.5, 2.0, fired.message, firing=True)
    assert "a" in fired.message and "2.5" in fired.message
    assert rules.evaluate(snapshot(a={**slow, "latency_p95": 3.0}), 2) == []  # still firing
    assert keys(rules.firing) == [(P95_LATENCY, "a", True)]
    (resolved,) = rules.evaluate(snapshot(a={"latency_p95": 0.4, "samples": 60}), 3)
    assert keys([resolved]) == [(P95_LATENCY, "a", False)] and resolved.value == 0.4
    assert rules.evaluate(snapshot(a={"latency_p95": 0.4, "samples": 60}), 4) == []
    assert rules.firing == []


def test_p95_of_a_few_samples_is_not_an_alert() -> None:
    rules = AlertRules(DEFAULTS)
    assert rules.evaluate(snapshot(a={"latency_p95": 9.0, "samples": 2}), 0) == []
    assert keys(rules.evaluate(snapshot(a={"latency_p95": 9.0, "samples": 20}), 1)) == [
        (P95_LATENCY, "a", True)
    ]


def test_error_rate_needs_enough_calls() -> None:
    rules = AlertRules(DEFAULTS)
    one_in_two = {"calls_in_window": 2, "failure_rate": 0.5}
    assert rules.evaluate(snapshot(a=one_in_two), 0) == []
    (fired,) = rules.evaluate(snapshot(a={"calls_in_window": 40, "failure_rate": 0.05}), 1)
    assert (fired.rule, fired.subject, fired.value, fired.threshold) == (
        ERROR_RATE,
        "a",
        0.05,
        0.01,
    )
    assert "5.0%" in fired.message and "1.0%" in fired.message
    assert rules.evaluate(snapshot(a={"calls_in_window": 40, "failure_rate": 0.2}), 2) == []
    (resolved,) = rules.evaluate(snapshot(a={"calls_in_window": 200, "failure_rate": 0.005}), 3)
    assert keys([resolved]) == [(ERROR_RATE, "a", False)]


def test_error_rate_holds_while_the_breaker_empties_its_window() -> None:
    """A breaker that opens clears its window: that is no evidence the errors stopped."""
    rules = AlertRules(DEFAULTS, min_calls=10)
    assert keys(rules.evaluate(snapshot(a={"calls_in_window": 10, "failure_rate": 0.6}), 0)) == [
        (ERROR_RATE, "a", True)
    ]
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1) == []
    assert rules.evaluate(snapshot(a={"breaker": "half-open"}), 2) == []
    assert keys(rules.firing) == [(ERROR_RATE, "a", True)]
    # closed again with too few calls to judge: nothing says it is failing any more
    assert keys(rules.evaluate(snapshot(a={"calls_in_window": 3}), 3)) == [(ERROR_RATE, "a", False)]


def test_min_calls_comes_from_the_settings_when_they_have_it() -> None:
    assert AlertRules(DEFAULTS).min_calls == 20
    assert AlertRules(DEFAULTS, min_calls=5).min_calls == 5
    with_min_calls = SimpleNamespace(**{**asdict(DEFAULTS), "min_calls": 7})  # [alerts] min_calls
    assert AlertRules(with_min_calls).min_calls == 7  # type: ignore[arg-type]


def test_breaker_open_longer_than_the_threshold_fires_once_resolves_on_close() -> None:
    rules = AlertRules(DEFAULTS)
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1000) == []  # first seen open
    assert rules.evaluate(snapshot(a={"breaker": "half-open"}), 1100) == []  # probing
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1299) == []  # probe failed, reopened
    (fired,) = rules.evaluate(snapshot(a={"breaker": "open"}), 1301)
    assert (fired.rule, fired.subject, fired.value, fired.threshold) == (
        BREAKER_OPEN,
        "a",
        301,
        300,
    )
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1400) == []
    assert rules.evaluate(snapshot(a={"breaker": "half-open"}), 1450) == []  # holds
    assert keys(rules.firing) == [(BREAKER_OPEN, "a", True)]
    (resolved,) = rules.evaluate(snapshot(a={"breaker": "closed"}), 1500)
    assert keys([resolved]) == [(BREAKER_OPEN, "a", False)] and resolved.value == 500
    # a new trip starts a new count
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1600) == []
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 1850) == []
    assert keys(rules.evaluate(snapshot(a={"breaker": "open"}), 1901)) == [
        (BREAKER_OPEN, "a", True)
    ]


def test_a_breaker_that_closes_in_time_never_fires() -> None:
    rules = AlertRules(DEFAULTS)
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 0) == []
    assert rules.evaluate(snapshot(a={"breaker": "closed"}), 200) == []
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 250) == []
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 500) == []  # 250 s since this trip


def test_queue_age() -> None:
    rules = AlertRules(DEFAULTS)
    queue = {"ready": 3, "leased": 0, "dead": 0}
    assert rules.evaluate(snapshot({**queue, "oldest_age": 600.0}), 0) == []
    (fired,) = rules.evaluate(snapshot({**queue, "oldest_age": 700.0}), 1)
    assert (fired.rule, fired.subject, fired.value) == (QUEUE_AGE, "queue", 700.0)
    assert rules.evaluate(snapshot({"error": "OperationalError"}), 2) == []  # unknown: holds
    assert keys(rules.firing) == [(QUEUE_AGE, "queue", True)]
    (resolved,) = rules.evaluate(snapshot({**queue, "oldest_age": 0.0}), 3)
    assert keys([resolved]) == [(QUEUE_AGE, "queue", False)]


def test_a_subject_that_leaves_the_status_resolves() -> None:
    rules = AlertRules(DEFAULTS)
    rules.evaluate(snapshot(a={"breaker": "open"}), 0)
    rules.evaluate(snapshot({"oldest_age": 900.0}, a={"breaker": "open"}), 400)
    assert sorted(keys(rules.firing)) == [(BREAKER_OPEN, "a", True), (QUEUE_AGE, "queue", True)]
    resolved = rules.evaluate(snapshot(b={}), 500)  # provider a removed, queue gone
    assert sorted(keys(resolved)) == [(BREAKER_OPEN, "a", False), (QUEUE_AGE, "queue", False)]
    assert rules.firing == []
    assert rules.evaluate(snapshot(a={"breaker": "open"}), 600) == []  # back: counts anew


def test_several_rules_fire_independently() -> None:
    rules = AlertRules(DEFAULTS, min_calls=5)
    bad = {"latency_p95": 4.0, "samples": 10, "calls_in_window": 10, "failure_rate": 0.3}
    assert sorted(keys(rules.evaluate(snapshot(a=bad, b={}), 0))) == [
        (ERROR_RATE, "a", True),
        (P95_LATENCY, "a", True),
    ]
    calm = {**bad, "failure_rate": 0.0}
    assert keys(rules.evaluate(snapshot(a=calm, b={}), 1)) == [(ERROR_RATE, "a", False)]
    assert keys(rules.firing) == [(P95_LATENCY, "a", True)]


# -- over a real gateway ------------------------------------------------------------------------


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    for name in ("a", "b"):
        simulator.route("GET", f"/{name}/v1/m", lambda r: SimResponse.json({"ok": True}))
        simulator.route("POST", f"/{name}/v1/m", lambda r: SimResponse.json({"ok": True}))
    yield simulator


def test_latency_and_error_rate_from_real_calls(sim: Simulator) -> None:
    sim.inject(Fault.latency(0.05), prefix="/a")
    sim.inject(Fault.status(503), prefix="/b", times=1)
    steady = BreakerSettings(min_calls=100, window=30.0)
    once = RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.01)
    with (
        make_gateway(provider("a", sim.url("/a"), breaker=steady)) as gw_a,
        make_gateway(provider("b", sim.url("/b"), breaker=steady, retry=once)) as gw_b,
    ):
        rules = AlertRules(AlertSettings(p95_latency=0.02), min_calls=3)
        for _ in range(3):
            gw_a.sync.http.request("GET", "/v1/m")
        (fired,) = rules.evaluate(gw_a.status(), 0)
        assert (fired.rule, fired.subject) == (P95_LATENCY, "a") and fired.value >= 0.05

        default_rules = AlertRules(DEFAULTS)  # min 20 calls
        gw_b.sync.http.request("GET", "/v1/m")  # 503 then 200: one failure in two attempts
        assert gw_b.status()["providers"]["b"]["failure_rate"] == 0.5
        assert default_rules.evaluate(gw_b.status(), 0) == []
        for _ in range(19):
            gw_b.sync.http.request("GET", "/v1/m")
        (fired,) = default_rules.evaluate(gw_b.status(), 1)
        assert (fired.rule, fired.subject, fired.value) == (ERROR_RATE, "b", round(1 / 21, 4))


def test_monitor_emits_each_change_once_and_a_pager_hook_gets_it(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The documented hook: subscribe to gw.events and route AlertChanged to a pager."""
    sim.inject(Fault.status(503), prefix="/a")
    tripping = BreakerSettings(min_calls=3, window=5.0, open_for=60.0, open_for_max=60.0)
    now = [0.0]
    with make_gateway(
        provider("a", sim.url("/a"), breaker=tripping), provider("b", sim.url("/b"))
    ) as gw:
        pager: list[str] = []

        def page(event: Event) -> None:
            if isinstance(event, AlertChanged) and event.firing:
                pager.append(f"[{event.rule}] {event.message}")

        changes: list[AlertChanged] = []
        gw.events.subscribe(page)
        gw.events.subscribe(lambda e: changes.append(e) if isinstance(e, AlertChanged) else None)
        rules = AlertRules(AlertSettings(breaker_open=120.0))
        monitor = AlertMonitor(gw, rules, interval=60, clock=lambda: now[0], start=False)

        for _ in range(3):
            assert gw.sync.http.request("GET", "/v1/m").provider == "b"
        assert gw.provider("a").breaker.state == "open"
        with caplog.at_level(logging.INFO, logger="resilient.alerts"):
            assert monitor.check() == []  # first seen open
            now[0] = 121.0
            (fired,) = monitor.check()
            now[0] = 180.0
            assert monitor.check() == []  # still firing: no second page
            gw.provider("a").breaker.force("closed")
            now[0] = 200.0
            (resolved,) = monitor.check()
            assert monitor.check() == []
    assert (fired.rule, fired.subject, fired.firing) == (BREAKER_OPEN, "a", True)
    assert (resolved.rule, resolved.subject, resolved.firing) == (BREAKER_OPEN, "a", False)
    assert pager == [f"[breaker_open] {fired.message}"]
    assert changes == [
        AlertChanged(BREAKER_OPEN, "a", True, 121.0, 120.0, fired.message),
        AlertChanged(BREAKER_OPEN, "a", False, 200.0, 120.0, resolved.message),
    ]
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "resilient.alerts"]
    assert lines == [
        (logging.WARNING, f"alert breaker_open firing: {fired.message}"),
        (logging.INFO, f"alert breaker_open resolved: {resolved.message}"),
    ]


def test_monitor_thread_evaluates_on_its_interval(sim: Simulator) -> None:
    sim.inject(Fault.status(503), prefix="/a")
    tripping = BreakerSettings(min_calls=3, window=5.0, open_for=60.0, open_for_max=60.0)
    with make_gateway(
        provider("a", sim.url("/a"), breaker=tripping), provider("b", sim.url("/b"))
    ) as gw:
        changes: list[AlertChanged] = []
        gw.events.subscribe(lambda e: changes.append(e) if isinstance(e, AlertChanged) else None)
        rules = AlertRules(AlertSettings(breaker_open=0.1, interval=0.02))
        with AlertMonitor(gw, rules) as monitor:
            assert monitor.interval == 0.02
            for _ in range(3):
                gw.sync.http.request("GET", "/v1/m")
            wait_until(lambda: len(changes) == 1)
            gw.provider("a").breaker.force("closed")
            wait_until(lambda: len(changes) == 2)
            time.sleep(0.1)  # several more evaluations: nothing new to say
        settled = len(changes)
        gw.provider("a").breaker.force("open")
        time.sleep(0.2)  # closed: evaluates no more
    assert [(c.rule, c.subject, c.firing) for c in changes] == [
        (BREAKER_OPEN, "a", True),
        (BREAKER_OPEN, "a", False),
    ]
    assert settled == 2


def test_monitor_survives_a_failing_status_read(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_gateway(provider("a", sim.url("/a"))) as gw:
        reads = [0]
        real_status = gw.status

        def flaky() -> dict[str, Any]:
            reads[0] += 1
            if reads[0] == 1:
                raise RuntimeError("store away")
            return real_status()

        monkeypatch.setattr(gw, "status", flaky)
        with (
            caplog.at_level(logging.ERROR, logger="resilient.alerts"),
            AlertMonitor(gw, AlertRules(AlertSettings(interval=0.02))),
        ):
            wait_until(lambda: reads[0] >= 3)
    assert any("alert evaluation failed" in r.getMessage() for r in caplog.records)


def test_queue_age_alert_from_a_parked_request(sim: Simulator, tmp_path: Path) -> None:
    outage = sim.inject(Fault.status(503), prefix="/a")
    breaker = BreakerSettings(min_calls=3, window=5.0, open_for=0.3, open_for_max=0.3)
    with make_gateway(
        provider("a", sim.url("/a"), breaker=breaker),
        defer=True,
        spool_path=str(tmp_path / "spool.db"),
    ) as gw:
        rules = AlertRules(AlertSettings(queue_age=0.05, breaker_open=3600))
        assert gw.sync.http.request("POST", "/v1/m", json={}).status == "deferred"
        wait_until(lambda: gw.status()["queue"]["oldest_age"] > 0.05)
        (fired,) = rules.evaluate(gw.status(), 0)
        assert (fired.rule, fired.subject) == (QUEUE_AGE, "queue") and fired.value > 0.05
        outage.clear()
        wait_until(lambda: gw.status()["queue"]["ready"] + gw.status()["queue"]["leased"] == 0)
        resolved = [a for a in rules.evaluate(gw.status(), 1) if a.rule == QUEUE_AGE]
    assert keys(resolved) == [(QUEUE_AGE, "queue", False)]
    assert len(sim.effects(prefix="/a")) == 1


def test_monitor_defaults_come_from_the_gateway_settings(sim: Simulator) -> None:
    alerts = AlertSettings(p95_latency=1.5, interval=7.0)
    with make_gateway(provider("a", sim.url("/a")), alerts=alerts) as gw:
        monitor = AlertMonitor(gw, start=False)
        assert monitor.rules.settings == alerts and monitor.interval == 7.0
        with pytest.raises(ValueError, match="interval"):
            AlertMonitor(gw, interval=0, start=False)
        with contextlib.suppress(CallFailed):
            gw.sync.http.request("GET", "/v1/m")
        assert monitor.check() == []
