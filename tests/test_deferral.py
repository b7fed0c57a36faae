"""Deferral end to end: park during an outage, replay after recovery, counted at the simulator."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queues.spool import Spool
from queues.store import DEAD
from resilient import ChainExhausted, FatalError, InvalidRequest, Secret
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.settings import BreakerSettings, CapabilitySettings, GatewaySettings
from resilient.telemetry import DeadLettered
from resilient.testing import Fault, SimResponse, Simulator
from tests.conftest import caller, provider

KEY = "sk-deferral-test-5b1f0c"


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    simulator.route("POST", "/a/v1/m", lambda r: SimResponse.json({"ok": True}, status=202))
    simulator.route("POST", "/b/v1/m", lambda r: SimResponse.json({"ok": True}, status=202))
    yield simulator


def deferring_gateway(
    sim: Simulator, tmp_path: Path, *, deadline: float = 60.0, chain: tuple[str, ...] = ("a",)
) -> Gateway:
    breaker = BreakerSettings(min_calls=3, window=5.0, open_for=0.3, open_for_max=0.3)
    providers = {
        name: provider(name, sim.url(f"/{name}"), breaker=breaker, api_key=Secret(KEY))
        for name in chain
    }
    return Gateway(
        GatewaySettings(
            spool_path=str(tmp_path / "spool.db"),
            providers=providers,
            capabilities={"http": CapabilitySettings("http", chain, defer=True, deadline=deadline)},
        )
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def pending(gw: Gateway) -> int:
    stats = gw._deferral.spool.stats()  # type: ignore[union-attr]
    return int(stats["ready"] + stats["leased"])


async def test_outage_parks_then_replays_each_request_exactly_once(
    sim: Simulator, tmp_path: Path, mode: str
) -> None:
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        call = caller(gw, mode)
        results = [
            await call("POST", "/v1/m", json={"n": n}, headers={"Idempotency-Key": f"op-{n}"})
            for n in range(15)
        ]
        assert {r.status for r in results} == {"deferred"}
        assert all(r.deferral_id and r.attempts for r in results)
        assert pending(gw) == 15  # durable before the calls returned
        await asyncio.sleep(0.5)
        assert not sim.effects(prefix="/a")  # nothing replayed into the outage
        outage.clear()
        await asyncio.to_thread(wait_until, lambda: pending(gw) == 0)
    delivered = collections.Counter(r.idempotency_key for r in sim.effects(prefix="/a"))
    assert delivered == {f"op-{n}": 1 for n in range(15)}


def test_replay_waits_for_recovery_with_bounded_probes(sim: Simulator, tmp_path: Path) -> None:
    sim.inject(Fault.status(503), prefix="/a", duration=1.5)
    with deferring_gateway(sim, tmp_path) as gw:
        for n in range(30):
            assert gw.sync.http.request("POST", "/v1/m", json={"n": n}).status == "deferred"
        parked_at = time.monotonic()
        sent_before = len(sim.requests(prefix="/a"))
        wait_until(lambda: pending(gw) == 0)
        during_outage = [
            r
            for r in sim.requests(prefix="/a")[sent_before:]
            if r.received_at < parked_at + 1.4 and r.status == 503
        ]
    # While the provider was down, the replayer only probed: one request per open period (0.3 s)
    assert len(during_outage) <= 6
    assert len(sim.effects(prefix="/a")) == 30


def test_past_its_deadline_a_request_is_dead_lettered_never_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path, deadline=0.3) as gw:
        assert gw.sync.http.request("POST", "/v1/m", json={}).status == "deferred"
        spool = gw._deferral.spool  # type: ignore[union-attr]
        wait_until(lambda: spool.stats()["dead"] == 1)
        outage.clear()
        time.sleep(0.5)
        (dead,) = spool.entries(DEAD)
    assert dead.reason == "deadline passed before delivery"
    assert not sim.effects(prefix="/a")


def test_a_request_the_provider_rejects_on_replay_is_dead_lettered_with_history(
    sim: Simulator, tmp_path: Path
) -> None:
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        dead_letters: list[DeadLettered] = []
        gw.events.subscribe(
            lambda e: dead_letters.append(e) if isinstance(e, DeadLettered) else None
        )
        result = gw.sync.http.request("POST", "/v1/m", json={})
        outage.clear()
        sim.inject(Fault.status(422), prefix="/a")
        spool = gw._deferral.spool  # type: ignore[union-attr]
        wait_until(lambda: spool.stats()["dead"] == 1)
        entry, parked = spool.get(result.deferral_id)  # type: ignore[misc]
    assert entry.reason == "rejected by provider"
    assert dead_letters == [DeadLettered("http", result.deferral_id or "", "rejected by provider")]
    assert parked is not None and [a["status"] for a in parked.attempts][-1] == 422
    assert parked.attempts[0]["status"] == 503  # the original call's attempts come first


def test_parked_requests_survive_a_restart(sim: Simulator, tmp_path: Path) -> None:
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        for n in range(5):
            gw.sync.http.request("POST", "/v1/m", json={"n": n})
    outage.clear()
    with deferring_gateway(sim, tmp_path) as gw:  # a new process would see the same file
        wait_until(lambda: pending(gw) == 0)
    assert len(sim.effects(prefix="/a")) == 5


def test_no_credentials_are_parked(sim: Simulator, tmp_path: Path) -> None:
    sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        gw.sync.http.request(
            "POST", "/v1/m", json={"x": 1}, headers={"Authorization": f"Bearer {KEY}"}
        )
        gw.sync.http.request("POST", "/v1/m", json={"x": 2})
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("spool"))
    assert b"Bearer" not in stored and KEY.encode() not in stored
    assert sim.requests(prefix="/a")[0].headers["authorization"] == f"Bearer {KEY}"


def test_bad_input_is_rejected_before_anything_is_sent_or_parked(
    sim: Simulator, tmp_path: Path
) -> None:
    with deferring_gateway(sim, tmp_path) as gw:
        with pytest.raises(InvalidRequest, match="files"):
            gw.sync.http.request("POST", "/v1/m", files={"f": b"x"})
        assert pending(gw) == 0
    assert not sim.requests()


def test_per_call_defer_overrides_the_capability(sim: Simulator, tmp_path: Path) -> None:
    sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        with pytest.raises(ChainExhausted):
            gw.sync.http.request("POST", "/v1/m", json={}, defer=False)
        assert pending(gw) == 0


def test_fatal_errors_are_raised_not_parked(sim: Simulator, tmp_path: Path) -> None:
    sim.inject(Fault.status(400), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        with pytest.raises(FatalError):
            gw.sync.http.request("POST", "/v1/m", json={})
        assert pending(gw) == 0


def test_corrupt_spool_row_is_dead_lettered_and_the_rest_delivered(
    sim: Simulator, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db")
    outage = sim.inject(Fault.status(503), prefix="/a")
    with deferring_gateway(sim, tmp_path) as gw:
        for n in range(3):
            gw.sync.http.request("POST", "/v1/m", json={"n": n})
    first = spool.entries()[0]
    with spool._transaction() as db:
        db.execute("UPDATE deferred SET body = ? WHERE id = ?", (b"\x00garbage", first.id))
    outage.clear()
    with deferring_gateway(sim, tmp_path) as gw:
        wait_until(lambda: pending(gw) == 0)
    assert len(sim.effects(prefix="/a")) == 2
    (dead,) = spool.entries(DEAD)
    assert dead.id == first.id and (dead.reason or "").startswith("corrupt payload")


def test_encryption_key_in_config_makes_the_spool_unreadable_without_it(
    sim: Simulator, tmp_path: Path
) -> None:
    from cryptography.fernet import Fernet

    from resilient.config import settings_from_mapping

    key = Fernet.generate_key().decode()
    settings = settings_from_mapping(
        {
            "gateway": {"spool_path": str(tmp_path / "spool.db"), "encryption_key": key},
            "providers": {"a": {"kind": "http", "base_url": sim.url("/a")}},
            "capabilities": {"http": {"chain": ["a"], "defer": True}},
        }
    )
    sim.inject(Fault.status(503), prefix="/a")
    with Gateway(settings, background_replay=False) as gw:
        gw.sync.http.request("POST", "/v1/m", json={"secret-ish": "personal data 4711"})
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("spool"))
    assert b"4711" not in stored and b"personal" not in stored
    assert key not in repr(settings)
    with pytest.raises(Exception, match="encryption_key"):
        settings_from_mapping({"gateway": {"encryption_key": "not-a-key"}})


def test_a_replay_that_ends_ambiguous_is_tried_again_when_a_repeat_is_safe(
    sim: Simulator, tmp_path: Path
) -> None:
    """A replay whose attempts all time out may have acted; with an idempotency key its
    provider honours, repeating it cannot act twice, so it is rescheduled (and delivered
    once), not dead-lettered for an operator."""
    settings = settings_from_mapping(
        {
            "gateway": {"spool_path": str(tmp_path / "spool.db")},
            "providers": {
                "a": {
                    "kind": "http",
                    "base_url": sim.url("/a"),
                    "timeout": {"connect": "300ms", "read": "300ms", "attempt": "300ms"},
                    "retry": {"attempts": 2, "backoff": "10ms..20ms"},
                    "breaker": {"min_calls": 1000},
                }
            },
            "capabilities": {"http": {"chain": ["a"], "defer": True, "timeout": "2s"}},
        }
    )
    down = sim.inject(Fault.status(503), prefix="/a")
    with Gateway(settings, background_replay=False, ops=False) as gw:
        parked = gw.sync.http.request(
            "POST", "/v1/m", json={}, headers={"Idempotency-Key": "op-amb"}
        )
        assert parked.status == "deferred"
    down.clear()
    sim.inject(Fault.hang(), prefix="/a", times=2)  # the first replay: two silent attempts
    with Gateway(settings, ops=False) as gw:
        wait_until(lambda: bool(sim.effects(prefix="/a")), timeout=15.0)
        assert gw.deferral.store.entries(DEAD) == []
    assert [r.idempotency_key for r in sim.effects(prefix="/a")] == ["op-amb"]
