"""Secrets never leak: recognizable fake API keys on a provider of every capability, run through
failures, retries, fatal and ambiguous outcomes, deferral to the SQLite spool and to Redis, and
replay, then searched for in every place the library writes: zero hits. The keys must have been
sent on the wire, so the test cannot pass by never using them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from providers import Charge, Email, Post, Sms
from resilient import CallFailed
from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.metrics import PrometheusMetrics
from resilient.testing import Fault, SimResponse, Simulator
from resilient.testing.routes import mount

KEYS = {
    "sendgrid": {"api_key": "sk-SECRET-canary-0001"},
    "mailgun": {"api_key": "sk-SECRET-canary-0002"},
    "twilio": {"api_key": "sk-SECRET-canary-0003"},
    "vonage": {"api_key": "sk-SECRET-canary-0004", "api_secret": "sk-SECRET-canary-0005"},
    "stripe": {"api_key": "sk_test_SECRET-canary-0006"},  # the simulator wants sk_
    "paypal": {"api_key": "sk-SECRET-canary-0007"},
    "mastodon": {"api_key": "sk-SECRET-canary-0008"},
    "api": {"api_key": "sk-SECRET-canary-0009"},
}
CANARIES = [value for options in KEYS.values() for value in options.values()]
FAST = {"attempts": 2, "backoff": "10ms..30ms"}
BREAKER = {"min_calls": 1000}  # every call reaches the provider: more traffic carrying the keys


def config(sim: Simulator, spool: Path, redis_url: str | None) -> dict[str, Any]:
    def provider(kind: str, name: str, **options: object) -> dict[str, Any]:
        return {
            "kind": kind,
            "base_url": sim.url(f"/{name}"),
            "retry": FAST,
            "breaker": BREAKER,
            **KEYS[name],
            **options,
        }

    gateway: dict[str, Any] = {"spool_path": str(spool)}
    if redis_url:
        gateway["redis_url"] = redis_url
    return {
        "gateway": gateway,
        "providers": {
            "sendgrid": provider("sendgrid", "sendgrid"),
            "mailgun": provider("mailgun", "mailgun", domain="mg.example.com"),
            "twilio": provider("twilio", "twilio", account_sid="AC123", sender="+15550001"),
            "vonage": provider("vonage", "vonage", sender="Brand"),
            "stripe": provider("stripe", "stripe"),
            "paypal": provider("paypal", "paypal", client_id="client-1"),
            "brand-mastodon": provider("mastodon", "mastodon"),
            "api": provider("http", "api"),
        },
        "capabilities": {
            "email": {"chain": ["sendgrid", "mailgun"], "defer": True},
            "sms": {"chain": ["twilio", "vonage"], "defer": True},
            "payments": {"chain": ["stripe", "paypal"]},
            "social": {"chain": ["brand-mastodon"], "defer": True},
            "http": {"chain": ["api"], "defer": True},
        },
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML: load_settings reads it as a .yaml file
    return path


ISSUED: list[Callable[[], Iterable[str]]] = []  # secrets a provider issued (PayPal tokens)


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    mount(simulator, "sendgrid", prefix="/sendgrid")
    untyped: Any = mount  # mount's overloads name only some providers (no plain-str overload)
    untyped(simulator, "mailgun", prefix="/mailgun")
    mount(simulator, "twilio", prefix="/twilio")
    mount(simulator, "vonage", prefix="/vonage")
    mount(simulator, "stripe", prefix="/stripe")
    untyped(simulator, "mastodon", prefix="/mastodon")
    paypal = mount(simulator, "paypal", prefix="/paypal")
    simulator.route("POST", "/api/v1/m", lambda r: SimResponse.json({"ok": True}, status=202))
    ISSUED.append(lambda: list(paypal.tokens))
    yield simulator
    ISSUED.clear()


class Evidence:
    """Everything the library wrote or raised, as text, to search for the keys."""

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = {}

    def add(self, where: str, data: object) -> None:
        text = data.decode("latin-1") if isinstance(data, bytes) else str(data)
        self.texts.setdefault(where, []).append(text)

    def failure(self, where: str, exc: BaseException) -> None:
        self.add(where, str(exc))
        self.add(where, repr(exc))
        self.add(where, "".join(traceback.format_exception(exc)))
        for attempt in getattr(exc, "attempts", ()):
            self.add(where, f"{attempt} {attempt!r}")

    def hits(self, needles: Iterable[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for needle in needles:
            for where, texts in self.texts.items():
                if any(needle in text for text in texts):
                    found.setdefault(where, []).append(needle)
        return found


def wire_forms(sim: Simulator) -> dict[str, str]:
    """Each canary as it appeared on the wire (in a header, a Basic credential, a body or a
    query), mapped to that exact text, so encoded forms are searched for too."""
    forms: dict[str, str] = {}
    for request in sim.requests():
        texts = [request.body.decode("latin-1"), request.query, *request.headers.values()]
        for value in request.headers.values():
            scheme, _, credential = value.partition(" ")
            if scheme.lower() == "basic":
                with contextlib.suppress(ValueError):
                    texts.append(base64.b64decode(credential).decode("latin-1"))
        for canary in CANARIES:
            for text in texts:
                if canary in text:
                    forms.setdefault(canary, canary)
            for value in request.headers.values():
                if canary in value or (
                    value.lower().startswith("basic ")
                    and canary in base64.b64decode(value[6:]).decode("latin-1")
                ):
                    forms[f"{canary}@header"] = value
    return forms


def dump_redis(url: str, evidence: Evidence, where: str) -> int:
    client: Any = redis.Redis.from_url(url)
    count = 0
    try:
        for key in client.scan_iter(count=1000):
            count += 1
            evidence.add(where, key)
            kind = client.type(key)
            if kind == b"string":
                value = client.get(key)
                if value is not None:
                    evidence.add(where, value)
            dumped = client.dump(key)
            if dumped is not None:
                evidence.add(where, dumped)
            if kind == b"hash":
                for field, value in client.hgetall(key).items():
                    evidence.add(where, field + b"=" + value)
            elif kind == b"list":
                for value in client.lrange(key, 0, -1):
                    evidence.add(where, value)
            elif kind == b"set":
                for value in client.smembers(key):
                    evidence.add(where, value)
            elif kind == b"zset":
                for value in client.zrange(key, 0, -1):
                    evidence.add(where, value)
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    for field, value in fields.items():
                        evidence.add(where, field + b"=" + value)
    finally:
        client.close()
    return count


def read_spool(spool: Path, evidence: Evidence, where: str) -> int:
    size = 0
    for path in spool.parent.glob(spool.name + "*"):  # spool.db, -wal, -shm, -journal
        data = path.read_bytes()
        size += len(data)
        evidence.add(f"{where} {path.name}", data)
    return size


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


async def exercise(gw: Gateway, sim: Simulator, evidence: Evidence) -> int:
    """Every capability through retries, fail-over, fatal and ambiguous outcomes and parking;
    returns how many calls were parked."""

    async def attempt(where: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        except CallFailed as exc:
            evidence.failure(where, exc)
            return None
        except Exception as exc:  # any other error text counts too
            evidence.failure(where, exc)
            return None

    email = Email(sender="no-reply@example.com", to=["ada@example.com"], subject="Hi", text="hi")
    sms = Sms(to="+15550100", body="Your code is 1234")

    # retries: one 503 each, then served
    sim.inject(Fault.status(503), prefix="/sendgrid", times=1)
    sim.inject(Fault.rate_limited(), prefix="/stripe", times=1)
    assert (await gw.email.send(email)).status == "delivered"
    charge = Charge(amount=1999, currency="usd", payment_method="pm_card_visa")
    assert (await gw.payments.charge(charge)).status == "delivered"
    # Stripe rate limited on every attempt: provably nothing done, so PayPal charges
    sim.inject(Fault.rate_limited(), prefix="/stripe", times=2)
    other = Charge(amount=2500, currency="usd", payment_method="pm_card_visa")
    assert (await asyncio.to_thread(gw.sync.payments.charge, other)).provider == "paypal"
    # fail-over: the primary SMS provider down, sync and async
    twilio_down = sim.inject(Fault.status(503), prefix="/twilio")
    assert (await gw.sms.send(sms)).provider == "vonage"
    assert (await asyncio.to_thread(gw.sync.sms.send, sms)).provider == "vonage"
    twilio_down.clear()
    # a fatal error and an ambiguous one, both raised with their attempts
    declined = Charge(amount=500, currency="usd", payment_method="pm_card_chargeDeclined")
    await attempt("exception: decline", lambda: gw.payments.charge(declined))
    sim.inject(Fault.reset_mid_body(), prefix="/stripe", times=4)
    ambiguous = Charge(amount=700, currency="usd", payment_method="pm_card_visa")
    await attempt("exception: ambiguous charge", lambda: gw.payments.charge(ambiguous))
    # a chain exhausted without deferral, a 401 that is the provider refusing our key
    api_down = sim.inject(Fault.status(503), prefix="/api")
    await attempt(
        "exception: exhausted",
        lambda: gw.http.request("POST", "/v1/m", json={"x": 1}, defer=False),
    )
    # a 401 (the provider refusing our key): the post's only network, so it parks
    sim.inject(Fault.status(401, json={"error": "bad key"}), prefix="/mastodon", times=1)
    refused = await attempt(
        "exception: 401", lambda: gw.social.post(Post(account="brand-mastodon", text="hello"))
    )
    assert refused is not None and refused.status == "deferred"
    # outages of every deferring capability: parked, sync and async
    down = [
        api_down,
        sim.inject(Fault.status(503), prefix="/sendgrid"),
        sim.inject(Fault.status(503), prefix="/mailgun"),
        sim.inject(Fault.status(503), prefix="/twilio"),
        sim.inject(Fault.status(503), prefix="/vonage"),
        sim.inject(Fault.status(503), prefix="/mastodon"),
    ]
    parked = [
        await gw.email.send(email),
        await asyncio.to_thread(gw.sync.sms.send, sms),
        await gw.social.post(Post(account="brand-mastodon", text="We're back")),
        await gw.http.request("POST", "/v1/m", json={"n": 1}, headers={"X-Api-Key": "nope"}),
        await asyncio.to_thread(
            gw.sync.http.request,
            "POST",
            "/v1/m",
            json={"n": 2},
            headers={"Authorization": f"Bearer {KEYS['api']['api_key']}"},
        ),
    ]
    assert [r.status for r in parked] == ["deferred"] * len(parked)
    del down
    return len(parked) + 1  # and the refused post


def search(evidence: Evidence, sim: Simulator) -> None:
    forms = wire_forms(sim)
    sent = {canary for canary in CANARIES if canary in forms}
    assert sent == set(CANARIES), f"keys never sent on the wire: {set(CANARIES) - sent}"
    issued = {token for tokens in ISSUED for token in tokens()}
    assert issued, "PayPal issued no access token: it was never used"
    hits = evidence.hits({*CANARIES, *forms.values(), *issued})
    assert hits == {}, f"secrets found in: {hits}"


async def test_keys_never_leak_through_spool_logs_metrics_exceptions_or_status(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    evidence = Evidence()
    spool = tmp_path / "spool.db"
    path = write_config(tmp_path / "embedded.yaml", config(sim, spool, None))
    async with Gateway(load_settings(path)) as gw:
        metrics = PrometheusMetrics(gw, registry=CollectorRegistry())
        parked = await exercise(gw, sim, evidence)
        assert read_spool(spool, evidence, "spool while parked") > 0
        evidence.add("status while parked", json.dumps(gw.status(), default=str))
        evidence.add("metrics while parked", metrics.render())
        before = len(sim.effects())
        sim.clear_faults()
        spooled = gw.deferral.spool  # type: ignore[attr-defined]
        await asyncio.to_thread(
            wait_until, lambda: spooled.stats()["ready"] + spooled.stats()["leased"] == 0
        )
        assert len(sim.effects()) >= before + parked  # replayed
        evidence.add("status", json.dumps(gw.status(), default=str))
        evidence.add("metrics", metrics.render())
        metrics.close()
    read_spool(spool, evidence, "spool after replay")
    for record in caplog.records:
        evidence.add("log", logging.Formatter().format(record))
        evidence.add("log", repr(record.args))
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG really was on
    assert (
        "exception: decline" in evidence.texts and "exception: ambiguous charge" in evidence.texts
    )
    search(evidence, sim)


async def test_keys_never_leak_through_redis_or_the_replay_worker(
    sim: Simulator, tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    evidence = Evidence()
    spool = tmp_path / "spool.db"
    path = write_config(tmp_path / "redis.yaml", config(sim, spool, redis_url))
    async with Gateway(load_settings(path), background_replay=False) as gw:
        metrics = PrometheusMetrics(gw, registry=CollectorRegistry())
        parked = await exercise(gw, sim, evidence)
        assert gw.deferral.redis.stats()["ready"] == parked  # type: ignore[attr-defined]
        assert dump_redis(redis_url, evidence, "redis while parked") > 0
        evidence.add("status while parked", json.dumps(gw.status(), default=str))
        evidence.add("metrics", metrics.render())
        metrics.close()
    read_spool(spool, evidence, "spool")
    sim.clear_faults()
    before = len(sim.effects())
    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "resilient.cli", "worker", "--config", str(path), "--burst"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert worker.returncode == 0, worker.stderr
    evidence.add("worker output", worker.stdout + worker.stderr)
    assert len(sim.effects()) >= before + parked  # the worker replayed every parked call
    dump_redis(redis_url, evidence, "redis after replay")
    for record in caplog.records:
        evidence.add("log", logging.Formatter().format(record))
    search(evidence, sim)


def test_the_search_finds_a_planted_key_in_any_form() -> None:
    """The negative control: the search would see a leak, plain or as a Basic credential."""
    evidence = Evidence()
    evidence.add("log", "calling with key sk-SECRET-canary-0001")
    basic = "Basic " + base64.b64encode(b"AC123:sk-SECRET-canary-0003").decode()
    evidence.add("redis", b"\x00" + basic.encode() + b"\xff")
    try:
        raise RuntimeError("token sk-SECRET-canary-0002 refused")
    except RuntimeError as exc:
        evidence.failure("exception", exc)
    hits = evidence.hits([*CANARIES, basic])
    assert hits == {
        "log": ["sk-SECRET-canary-0001"],
        "redis": [basic],
        "exception": ["sk-SECRET-canary-0002"],
    }
