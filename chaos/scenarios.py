"""Chaos scenarios: sustained mixed sync/async traffic through a Gateway while the simulator
(or the environment: Redis, a worker, the application itself) misbehaves, with outcomes counted
at the simulator (effects by idempotency key), not only from what callers saw.

Every scenario uses the "http" capability with a primary provider `p` (where the fault is
injected) and a fallback `f`, each under its own path prefix on a private simulator; the reset
scenario adds payments over the simulated Stripe and PayPal. Every call carries a unique
idempotency key, so the simulator's records say exactly which calls took effect, where, and how
many times. The crash scenarios run a real redis-server and kill real processes with SIGKILL.
Two scenarios test the operation ledger ("exactly once") across processes: two applications
charging the same keys over Stripe and PayPal (payments), and paced SMS replays through the
simulated Twilio, which takes no idempotency key (counted there by message body).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import redis

from chaos import processes
from chaos.processes import PAYPAL_KEY, STRIPE_KEY
from providers import Charge, Sms
from queues.backend import EmbeddedBackend, RedisBackend
from queues.redis_store import RedisStore
from queues.replayer import Replayer
from queues.spool import Spool
from queues.store import DEAD, Store
from resilient.config import load_settings, settings_from_mapping
from resilient.errors import CallFailed, OperationInProgress
from resilient.gateway import Gateway
from resilient.secrets import Secret
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.telemetry import BreakerChanged, DeadLettered, Event
from resilient.testing import Fault, RedisServer, SimRequest, SimResponse, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.paypal import PayPalState
from resilient.testing.routes.stripe import StripeState
from resilient.units import parse_rate

Profile = Literal["short", "long"]
T = TypeVar("T")
PROFILES: tuple[str, ...] = ("short", "long")
PATH = "/v1/m"


@dataclass
class ScenarioResult:
    """What one scenario did, counted at the simulator. `violations` lists broken invariants."""

    name: str
    calls: int = 0
    served: int = 0  # delivered to the caller (by any provider)
    deferred: int = 0  # parked and returned `deferred` to the caller
    replayed: int = 0  # deferred calls that later took effect at the simulator
    lost: int = 0  # delivered or deferred, yet never took effect at the simulator
    duplicated: int = 0  # keys that took effect more than once (on any provider)
    max_attempts_per_s_at_provider: int = 0  # at the faulted provider, per 1 s bucket
    p99_latency: float = 0.0  # seconds, as callers saw it
    failed: int = 0  # calls that raised CallFailed to the caller
    details: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class CallRecord:
    key: str
    mode: str  # "sync" or "async"
    status: str  # "delivered", "deferred" or the exception class name
    provider: str | None
    started: float  # time.monotonic(), the simulator's clock too (system-wide on Linux)
    latency: float
    attempts: tuple[tuple[str, str], ...] = ()  # (provider, outcome class) per attempt
    receipt: str | None = None  # the provider's id for what was done (a Receipt's message_id)
    deduplicated: bool = False  # answered from the ledger: this call sent nothing

    def to_line(self) -> str:
        """One JSON line: how the application process reports a call to the scenario."""
        return json.dumps(asdict(self))

    @classmethod
    def from_line(cls, line: str) -> CallRecord:
        data = json.loads(line)
        data["attempts"] = tuple((provider, outcome) for provider, outcome in data["attempts"])
        return cls(**data)


@dataclass(frozen=True)
class Load:
    """Traffic shape: `threads` blocking callers plus `tasks` asyncio callers, each pausing
    `pace` seconds between calls, for `duration` seconds."""

    duration: float
    threads: int = 3
    tasks: int = 4
    pace: float = 0.02


# -- the harness ------------------------------------------------------------------------------


class Effects:
    """The providers' side: both honour `Idempotency-Key` as Stripe does (a repeated key gets
    the first answer and does nothing again), so `effects` counts what each key really did, per
    provider, and `resent` how often a key came back to a provider that had already acted."""

    def __init__(self) -> None:
        self.effects: Counter[tuple[str, str]] = Counter()  # (provider, key) -> 1
        self.resent: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: SimRequest) -> SimResponse:
        provider = request.path.split("/")[1]
        key = request.headers.get("idempotency-key", "")
        self.record(provider, key)
        return SimResponse.json({"by": provider, "key": key}, status=202)

    def record(self, provider: str, key: str) -> None:
        """`provider` acted on `key` (the first time), or was asked again and absorbed it."""
        with self._lock:
            if self.effects[(provider, key)]:
                self.resent[(provider, key)] += 1
            else:
                self.effects[(provider, key)] += 1

    def by_key(self) -> Counter[str]:
        """Effects per key, summed over providers: 2 means done by both, a real duplicate."""
        with self._lock:
            counts: Counter[str] = Counter()
            for (_, key), count in self.effects.items():
                counts[key] += count
            return counts

    def keys(self) -> set[str]:
        return set(self.by_key())


def _serve(sim: Simulator) -> Effects:
    effects = Effects()
    for prefix in ("/p", "/f"):
        sim.route("POST", prefix + PATH, effects)
    return effects


def _serve_payments(sim: Simulator, effects: Effects) -> tuple[StripeState, PayPalState]:
    """Stripe and PayPal (their simulated APIs, idempotency included) under /stripe and
    /paypal, each new charge counted in `effects` by its idempotency key (Stripe's
    `Idempotency-Key`, PayPal's `PayPal-Request-Id`: both the operation id). Returns their
    states: what each really created, whatever the keys said."""
    stripe = mount(sim, "stripe", prefix="/stripe")
    paypal = mount(sim, "paypal", prefix="/paypal")
    create_intent = stripe.handler(stripe.create_payment_intent)

    def charge_at_stripe(request: SimRequest) -> SimResponse:
        response = create_intent(request)
        if response.status == 200:  # executed now, or Stripe's saved answer to a repeat
            effects.record("stripe", request.headers.get("idempotency-key", ""))
        return response

    def charge_at_paypal(request: SimRequest) -> SimResponse:
        response = paypal.create_order(request)
        if response.status in (200, 201):  # 201 a new order, 200 a repeated request id
            effects.record("paypal", request.headers.get("paypal-request-id", ""))
        return response

    sim.route("POST", "/stripe/v1/payment_intents", charge_at_stripe)
    sim.route("POST", "/paypal/v2/checkout/orders", charge_at_paypal)
    return stripe, paypal


def _provider(name: str, sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {
        "kind": "http",
        "timeouts": TimeoutSettings(connect=0.5, read=1.0, write=1.0, attempt=1.0),
        "retry": RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.05),
        "breaker": BreakerSettings(
            min_calls=5, window=2.0, open_for=0.5, open_for_max=2.0, failure_ratio=0.5
        ),
    }
    values.update(overrides)
    return ProviderSettings(name=name, base_url=sim.url(f"/{name}"), **values)


def _gateway(
    primary: ProviderSettings,
    fallback: ProviderSettings,
    *,
    spool: Path,
    defer: bool = False,
    timeout: float | None = None,
) -> Gateway:
    return Gateway(
        GatewaySettings(
            source=f"chaos:{primary.name}",
            spool_path=str(spool),
            overrides_path=str(spool.with_suffix(".overrides.json")),
            providers={primary.name: primary, fallback.name: fallback},
            capabilities={
                "http": CapabilitySettings(
                    "http", (primary.name, fallback.name), defer=defer, timeout=timeout
                )
            },
        ),
        ops=False,
    )


SyncSend = Callable[[str], Any]  # one call for this idempotency key, blocking
AsyncSend = Callable[[str], Awaitable[Any]]  # the same, awaited


def http_sends(gw: Gateway) -> tuple[SyncSend, AsyncSend]:
    """POST PATH through gw.sync.http and gw.http, the key as its Idempotency-Key."""

    def sync_send(key: str) -> Any:
        return gw.sync.http.request("POST", PATH, json={"k": key}, headers={"Idempotency-Key": key})

    async def async_send(key: str) -> Any:
        return await gw.http.request(
            "POST", PATH, json={"k": key}, headers={"Idempotency-Key": key}
        )

    return sync_send, async_send


def charge_sends(gw: Gateway) -> tuple[SyncSend, AsyncSend]:
    """A charge through gw.sync.payments and gw.payments, the key as its idempotency key."""

    def charge(key: str) -> Charge:
        return Charge(
            amount=1999, currency="usd", payment_method="pm_card_visa", idempotency_key=key
        )

    def sync_send(key: str) -> Any:
        return gw.sync.payments.charge(charge(key))

    async def async_send(key: str) -> Any:
        return await gw.payments.charge(charge(key))

    return sync_send, async_send


async def drive(
    gw: Gateway,
    load: Load,
    tag: str,
    *,
    sends: tuple[SyncSend, AsyncSend] | None = None,
    on_record: Callable[[CallRecord], None] | None = None,
) -> list[CallRecord]:
    """Run the load until it ends: threads through the blocking send, tasks through the
    awaited one (default: `http_sends`). `on_record` sees each call the moment it returns."""
    sync_send, async_send = sends or http_sends(gw)
    records: list[CallRecord] = []
    lock = threading.Lock()
    end = time.monotonic() + load.duration

    def note(key: str, mode: str, started: float, result: Any, error: BaseException | None) -> None:
        latency = time.monotonic() - started
        done = result if error is None else error
        attempts = tuple((a.provider, a.outcome.value) for a in getattr(done, "attempts", ()))
        if error is not None:
            status, provider = type(error).__name__, None
        else:
            status, provider = result.status, result.provider
        record = CallRecord(key, mode, status, provider, started, latency, attempts)
        with lock:
            records.append(record)
            if on_record is not None:
                on_record(record)

    def sync_worker(wid: int) -> None:
        n = 0
        while time.monotonic() < end:
            key = f"{tag}-s{wid}-{n}"
            n += 1
            started = time.monotonic()
            try:
                result = sync_send(key)
            except CallFailed as exc:
                note(key, "sync", started, None, exc)
            else:
                note(key, "sync", started, result, None)
            time.sleep(load.pace)

    async def async_worker(wid: int) -> None:
        n = 0
        while time.monotonic() < end:
            key = f"{tag}-a{wid}-{n}"
            n += 1
            started = time.monotonic()
            try:
                result = await async_send(key)
            except CallFailed as exc:
                note(key, "async", started, None, exc)
            else:
                note(key, "async", started, result, None)
            await asyncio.sleep(load.pace)

    await asyncio.gather(
        *(asyncio.to_thread(sync_worker, wid) for wid in range(load.threads)),
        *(async_worker(wid) for wid in range(load.tasks)),
    )
    return records


# -- the same-key charger (a process of its own) ----------------------------------------------

SAME_KEY_GAP = 0.05  # seconds between one key and the next, in each process
LATE_BY, SHORT_DEADLINE = 0.1, 0.3  # B's late double-click on every third key: see the schedule
CHARGE_TRIES, RETRY_PAUSE = 10, 0.3  # a caller told "not now" tries again, as a client would


def same_key_schedule(role: str, index: int) -> tuple[float, str, float | None]:
    """(delay after the start, mode, deadline or None for the capability's) of process `role`'s
    first call for key `index`. A and B charge each key at the same moment, one blocking and
    the other awaited; on every third key B comes `LATE_BY` later with a deadline shorter than
    PayPal's latency: it meets A's claim, and its deadline comes first while A is at PayPal."""
    a_mode = "sync" if index % 2 == 0 else "async"
    delay = index * SAME_KEY_GAP
    if role == "A":
        return delay, a_mode, None
    b_mode = "async" if a_mode == "sync" else "sync"
    if index % 3 == 2:
        return delay + LATE_BY, b_mode, SHORT_DEADLINE
    return delay, b_mode, None


def _charge_record(
    key: str, mode: str, started: float, result: Any, error: CallFailed | None
) -> CallRecord:
    done = result if error is None else error
    attempts = tuple((a.provider, a.outcome.value) for a in getattr(done, "attempts", ()))
    latency = time.monotonic() - started
    if error is not None:
        return CallRecord(key, mode, type(error).__name__, None, started, latency, attempts)
    receipt = result.value
    return CallRecord(
        key,
        mode,
        result.status,
        result.provider,
        started,
        latency,
        attempts,
        receipt=getattr(receipt, "message_id", None),
        deduplicated=bool(getattr(receipt, "deduplicated", False)),
    )


async def charge_same_keys(
    gw: Gateway, role: str, keys: list[str], start: float, emit: Callable[[CallRecord], None]
) -> None:
    """Charge every key on `same_key_schedule` from `start` (time.monotonic); a call that fails
    (OperationInProgress, or any CallFailed) is retried with the capability's deadline until
    one is delivered. Every call, retries included, goes to `emit` as it returns."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="charge")

    async def call(key: str, mode: str, deadline: float | None) -> Any:
        charge = Charge(
            amount=1999, currency="usd", payment_method="pm_card_visa", idempotency_key=key
        )
        if mode == "sync":
            blocking = functools.partial(gw.sync.payments.charge, charge, deadline=deadline)
            return await loop.run_in_executor(pool, blocking)
        return await gw.payments.charge(charge, deadline=deadline)

    async def charge_key(index: int, key: str) -> None:
        delay, mode, deadline = same_key_schedule(role, index)
        await asyncio.sleep(max(0.0, start + delay - time.monotonic()))
        for _ in range(CHARGE_TRIES):
            started = time.monotonic()
            try:
                result = await call(key, mode, deadline)
            except CallFailed as exc:
                emit(_charge_record(key, mode, started, None, exc))
                deadline = None
                await asyncio.sleep(RETRY_PAUSE)
                continue
            emit(_charge_record(key, mode, started, result, None))
            return

    try:
        await asyncio.gather(*(charge_key(n, key) for n, key in enumerate(keys)))
    finally:
        pool.shutdown()


def _print_record(record: CallRecord) -> None:
    """On the event loop's thread only: lines never interleave."""
    sys.stdout.write(record.to_line() + "\n")
    sys.stdout.flush()


def charger_main(argv: list[str] | None = None) -> int:
    """The same-key application (`processes.charger` starts it): `ready` once its gateway and
    ledger are open, then the start moment read from stdin, then its keys charged."""
    parser = argparse.ArgumentParser(prog="chaos-charger", description=charger_main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--role", choices=("A", "B"), required=True)
    parser.add_argument("--prefix", required=True, help="keys are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--keys", type=int, required=True)
    args = parser.parse_args(argv)
    keys = [f"{args.prefix}-{n}" for n in range(args.keys)]
    with Gateway(load_settings(args.config), ops=False) as gw:
        gw.ledger.get(keys[0])  # open the shared ledger now: the race is on claims, not setup
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        asyncio.run(charge_same_keys(gw, args.role, keys, start, _print_record))
    return 0


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def max_per_second(times: list[float]) -> int:
    """The most requests in any 1 s sliding window."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def tally(
    name: str,
    sim: Simulator,
    providers: Effects,
    records: list[CallRecord],
    *,
    in_flight: Collection[str] = (),
) -> ScenarioResult:
    """The common counts: calls from the callers, effects from the simulator's providers.
    `in_flight`: keys sent by a process killed before it could tell what became of them; they
    may take effect (at most once) without a record."""
    effects = providers.by_key()
    accepted = [r for r in records if r.status in ("delivered", "deferred")]
    deferred = [r for r in records if r.status == "deferred"]
    result = ScenarioResult(
        name=name,
        calls=len(records),
        served=sum(r.status == "delivered" for r in records),
        deferred=len(deferred),
        replayed=sum(effects[r.key] >= 1 for r in deferred),
        lost=sum(effects[r.key] == 0 for r in accepted),
        duplicated=sum(count > 1 for count in effects.values()),
        max_attempts_per_s_at_provider=max_per_second(
            [r.received_at for r in sim.requests(prefix="/p/")]  # not /paypal
        ),
        p99_latency=_percentile([r.latency for r in records], 0.99),
        failed=sum(r.status not in ("delivered", "deferred") for r in records),
    )
    unknown = set(effects) - {r.key for r in records} - set(in_flight)
    result.details["served_by"] = dict(Counter(r.provider for r in records if r.provider))
    result.details["modes"] = dict(Counter(r.mode for r in records))
    errors = Counter(r.status for r in records if r.status not in ("delivered", "deferred"))
    result.details["errors"] = dict(errors)
    # the same key sent again to a provider that had acted (absorbed by its idempotency key)
    result.details["resent_same_key"] = sum(providers.resent.values())
    result.check(result.calls > 0, "no traffic ran")
    result.check(set(result.details["modes"]) == {"sync", "async"}, "traffic was not mixed")
    result.check(result.lost == 0, f"lost {result.lost} accepted call(s)")
    result.check(result.duplicated == 0, f"{result.duplicated} key(s) took effect twice")
    result.check(not unknown, f"{len(unknown)} effect(s) for keys nobody sent")
    return result


def _transitions(gw: Gateway, provider: str) -> list[tuple[float, str, str]]:
    """A live list of `provider`'s breaker transitions: (time, old, new)."""
    seen: list[tuple[float, str, str]] = []

    def listen(event: Event) -> None:
        if isinstance(event, BreakerChanged) and event.provider == provider:
            seen.append((time.monotonic(), event.old, event.new))

    gw.events.subscribe(listen)
    return seen


def _collect(event: Event, kind: type[Any], into: list[Any]) -> None:
    if isinstance(event, kind):
        into.append(event)


def _dead_letters(store: Store, limit: int = 3) -> list[dict[str, Any]]:
    """The first dead letters with their reason and attempt history: why, not just how many."""
    letters = []
    for entry in store.entries(DEAD, limit):
        stored = store.get(entry.id)
        attempts = [dict(a) for a in stored[1].attempts] if stored and stored[1] else []
        letters.append({"id": entry.id, "reason": entry.reason, "attempts": attempts})
    return letters


def _load(profile: Profile, short: float, long: float) -> Load:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return Load(duration=short if profile == "short" else long)


def _pick(profile: Profile, short: T, long: T) -> T:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return short if profile == "short" else long


# -- the scenarios ----------------------------------------------------------------------------


async def primary_down(profile: Profile = "short") -> ScenarioResult:
    """(1) The primary is down for a window under load; the fallback too for part of it, so some
    calls park. Every call is served or deferred, the deferred ones are replayed after recovery,
    the primary is back in use within seconds, and it saw only bounded probes while down."""
    load = _load(profile, 4.0, 60.0)
    start, window = 0.5, load.duration * 0.5  # the primary is down over [start, start + window)
    both = (start + window * 0.3, window * 0.3)  # and the fallback over this (after, duration)
    open_for = 0.5
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        breaker = BreakerSettings(min_calls=5, window=2.0, open_for=open_for, open_for_max=open_for)
        gw = _gateway(
            _provider("p", sim, breaker=breaker),
            _provider("f", sim, breaker=breaker),
            spool=Path(tmp) / "spool.db",
            defer=True,
        )
        dead: list[DeadLettered] = []
        gw.events.subscribe(lambda event: _collect(event, DeadLettered, dead))
        with gw:
            began = time.monotonic()
            sim.inject(Fault.status(503), prefix="/p", after=start, duration=window)
            sim.inject(Fault.status(503), prefix="/f", after=both[0], duration=both[1])
            records = await drive(gw, load, "down")
            deferred = {r.key for r in records if r.status == "deferred"}

            def replayed() -> bool:
                return deferred <= effects.keys()

            await asyncio.to_thread(_wait_for, replayed, 30.0 if profile == "short" else 180.0)
            backend = gw.deferral
            assert isinstance(backend, EmbeddedBackend)
            letters = _dead_letters(backend.spool)
        result = tally("primary-down", sim, effects, records)
        down_from, up_at = began + start, began + window + start
        at_p = sim.requests(prefix="/p")
        during = [r for r in at_p if down_from + 1.0 <= r.received_at < up_at]
        # the breaker trips within its first second; after that, each open period admits one
        # probe per caller path (live calls and the replayer): a generous bound of 3 per period
        probe_bound = 3 * (math.ceil((up_at - down_from - 1.0) / open_for) + 1)
        back = [r.received_at for r in at_p if r.received_at >= up_at and r.status == 202]
        back_after = (min(back) - up_at) if back else None
        result.details.update(
            dead_lettered=dict(Counter(event.reason for event in dead)),
            dead_letters=letters,
            outage_s=round(window, 2),
            probes_while_down=len(during),
            probe_bound=probe_bound,
            primary_back_after_s=None if back_after is None else round(back_after, 2),
        )
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        result.check(result.deferred > 0, "no call was deferred (the fault did not bite)")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(len(during) <= probe_bound, f"{len(during)} probes > {probe_bound}")
        result.check(
            back_after is not None and back_after <= 5.0,
            f"primary not back in use within 5 s of recovery ({back_after})",
        )
        return result


async def _rate_limit_storm(name: str, fault: Fault, profile: Profile) -> ScenarioResult:
    """The primary documents a limit of `limit`/s (its `rate_limit`) while callers offer several
    times that; then it answers 429 to everything. The provider never sees more than its limit
    in any second, the storm does not multiply load (retries stay within the retry budget), and
    once the gateway has seen the storm for a second only probes reach the provider."""
    load = _load(profile, 3.5, 60.0)
    limit, settled_bound = 40, 10
    # The limiter spaces admissions exactly, but a caller that wakes late from its wait sends
    # together with the next one: arrivals on the wire bunch by a few slots under load.
    jitter = limit // 4
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider(
                "p",
                sim,
                retry=RetrySettings(attempts=3, backoff_base=0.05),
                rate_limit=parse_rate(f"{limit}/s"),
            ),
            _provider("f", sim),
            spool=Path(tmp) / "spool.db",
        )
        with gw:
            storm_from = time.monotonic() + 0.5
            storm = sim.inject(fault, prefix="/p", after=0.5, duration=load.duration - 1.0)
            records = await drive(gw, load, name)
        result = tally(name, sim, effects, records)
        storm_until = storm.ends_at or time.monotonic()
        during = [
            r.received_at
            for r in sim.requests(prefix="/p")
            if storm_from <= r.received_at < storm_until
        ]
        settled = max_per_second([at for at in during if at >= storm_from + 1.0])
        offered = sum(
            r.started < storm_until and r.started + r.latency >= storm_from for r in records
        )
        retry = gw.provider("p").settings.retry
        windows = math.ceil((storm_until - storm_from) / retry.budget_window) + 1
        amplified = math.ceil(offered * (1 + retry.budget_ratio) + retry.budget_floor * windows)
        failover = sum(r.provider == "f" and storm_from <= r.started < storm_until for r in records)
        result.details.update(
            limit_per_s=limit,
            jitter_allowance=jitter,
            storm_attempts=len(during),
            storm_attempts_per_s=max_per_second(during),
            settled_attempts_per_s=settled,
            settled_bound=settled_bound,
            offered_during_storm=offered,
            attempt_bound=amplified,
            served_by_fallback_during_storm=failover,
        )
        top = result.max_attempts_per_s_at_provider
        result.check(storm.hits > 0, "the storm never hit")
        result.check(
            top <= limit + jitter, f"{top} attempts/s at the provider > {limit}/s + {jitter}"
        )
        result.check(
            len(during) <= amplified,
            f"{len(during)} attempts > {amplified} allowed by the retry budget for {offered} calls",
        )
        result.check(settled <= settled_bound, f"{settled} attempts/s after the first second")
        result.check(failover > 0, "nothing failed over during the storm")
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result


async def rate_limit_storm_retry_after(profile: Profile = "short") -> ScenarioResult:
    """(2a) A 429 storm with Retry-After: 1 s. The provider is paused for every caller."""
    return await _rate_limit_storm("429-retry-after", Fault.rate_limited(retry_after=1), profile)


async def rate_limit_storm_bare(profile: Profile = "short") -> ScenarioResult:
    """(2b) A 429 storm without any hint: backoff and the breaker keep the provider unhammered."""
    return await _rate_limit_storm("429-no-hint", Fault.rate_limited(), profile)


async def silent_provider(profile: Profile = "short") -> ScenarioResult:
    """(3) The primary accepts connections and never answers: every call ends within its
    deadline (plus 1 s of grace)."""
    load = _load(profile, 3.0, 60.0)
    deadline = 1.5
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        timeouts = TimeoutSettings(connect=0.3, read=5.0, write=5.0, attempt=0.4)
        gw = _gateway(
            _provider("p", sim, timeouts=timeouts),
            _provider("f", sim, timeouts=timeouts),
            spool=Path(tmp) / "spool.db",
            timeout=deadline,
        )
        with gw:
            hang = sim.inject(Fault.hang(), prefix="/p")
            records = await drive(gw, load, "hang")
        result = tally("silent-provider", sim, effects, records)
        slowest = max((r.latency for r in records), default=0.0)
        result.details.update(deadline_s=deadline, slowest_call_s=round(slowest, 3))
        result.check(hang.hits > 0, "the hang never hit")
        result.check(slowest <= deadline + 1.0, f"a call took {slowest:.2f}s > {deadline} + 1 s")
        result.check(result.served > 0, "nothing was served by the fallback")
        # a POST that got no answer may have acted: failing honestly is allowed, hanging is not
        honest = {"AmbiguousOutcome", "DeadlineExceeded"}
        others = set(result.details["errors"]) - honest
        result.check(not others, f"calls failed otherwise than ambiguous/deadline: {others}")
        return result


async def connection_reset(profile: Profile = "short") -> ScenarioResult:
    """(4) The primary and Stripe reset connections: first intermittently before any response
    byte, then every response mid-body (after acting). Calls are retried (their key makes a
    repeat safe) or failed over once the breaker opens; a call that may have acted ends
    ambiguous, never on the other provider. Payments run alongside over stripe -> paypal: a key
    Stripe ever received never reaches PayPal, so no charge happens twice."""
    load = _load(profile, 4.0, 60.0)
    charges = replace(load, threads=1, tasks=2, pace=0.05)
    start = 0.5
    flaky = (start, load.duration * 0.35)  # resets before headers, 0.1 s in every 0.4 s
    cut = (start + flaky[1], load.duration * 0.3)  # then every response cut mid-body
    retry = RetrySettings(attempts=3, backoff_base=0.01, backoff_cap=0.05)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        _serve_payments(sim, effects)
        spool = Path(tmp) / "spool.db"
        providers = [
            _provider("p", sim, retry=retry),
            _provider("f", sim),
            _provider("stripe", sim, kind="stripe", retry=retry, api_key=Secret(STRIPE_KEY)),
            _provider(
                "paypal",
                sim,
                kind="paypal",
                api_key=Secret(PAYPAL_KEY),
                options={"client_id": "chaos-client"},
            ),
        ]
        settings = GatewaySettings(
            source="chaos:reset",
            spool_path=str(spool),
            overrides_path=str(spool.with_suffix(".overrides.json")),
            providers={p.name: p for p in providers},
            capabilities={
                "http": CapabilitySettings("http", ("p", "f")),
                "payments": CapabilitySettings("payments", ("stripe", "paypal")),
            },
        )
        with Gateway(settings, ops=False) as gw:
            resets = Fault.flapping(up=0.3, down=0.1, fault=Fault.reset())
            hits = [
                sim.inject(fault, prefix=prefix, after=after, duration=duration)
                for prefix in ("/p/", "/stripe/")
                for fault, (after, duration) in ((resets, flaky), (Fault.reset_mid_body(), cut))
            ]
            calls, paid = await asyncio.gather(
                drive(gw, load, "reset"),
                drive(gw, charges, "charge", sends=charge_sends(gw)),
            )
        result = tally("connection-reset", sim, effects, [*calls, *paid])
        at_stripe = sim.requests(prefix="/stripe/v1/payment_intents")
        at_paypal = sim.requests(prefix="/paypal/v2/checkout/orders")
        stripe_keys = {r.idempotency_key for r in at_stripe}
        paypal_keys = {r.headers.get("paypal-request-id") for r in at_paypal}
        cut_keys = {r.idempotency_key for r in at_stripe if r.fault == "reset_mid_body"}
        cut_outcomes = Counter(
            f"{r.status}:{r.provider}" if r.provider else r.status
            for r in paid
            if r.key in cut_keys
        )
        retried = sum(
            r.provider == r.attempts[-1][0] and (r.provider, "ambiguous") in r.attempts[:-1]
            for r in [*calls, *paid]
            if r.status == "delivered" and r.attempts
        )
        by = result.details["served_by"]
        result.details.update(
            reset_hits=[h.hits for h in hits],
            retried_then_served=retried,
            failed_over_to_f=by.get("f", 0),
            charged_by_paypal=by.get("paypal", 0),
            charges=len(paid),
            charges_cut_mid_response=len(cut_keys),
            cut_charge_outcomes=dict(cut_outcomes),
            keys_at_both_processors=len(stripe_keys & paypal_keys),
            stripe_max_attempts_per_s=max_per_second([r.received_at for r in at_stripe]),
        )
        result.check(all(h.hits for h in hits), f"a fault never hit: {[h.hits for h in hits]}")
        result.check(retried > 0, "no call was retried after a reset and then served")
        result.check(by.get("f", 0) > 0, "no call failed over to f while p reset connections")
        result.check(bool(cut_keys), "no charge was cut mid-response")
        result.check(
            not stripe_keys & paypal_keys,
            f"{len(stripe_keys & paypal_keys)} charge(s) reached Stripe and then PayPal",
        )
        result.check(
            "paypal" not in "".join(cut_outcomes),
            f"a charge cut mid-response was charged by PayPal: {dict(cut_outcomes)}",
        )
        others = set(result.details["errors"]) - {"AmbiguousOutcome"}
        result.check(not others, f"calls failed otherwise than ambiguous: {others}")
        return result


async def flapping_provider(profile: Profile = "short") -> ScenarioResult:
    """(5) The primary flaps up/down: the breaker does not thrash and the retries stay within
    the retry budget."""
    load = _load(profile, 4.5, 60.0)
    up, down = (1.0, 1.5) if profile == "short" else (3.0, 3.0)
    open_for = 0.5
    retry = RetrySettings(
        attempts=4, backoff_base=0.01, backoff_cap=0.05, budget_ratio=0.2, budget_floor=10
    )
    breaker = BreakerSettings(min_calls=5, window=1.0, open_for=open_for, open_for_max=2.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider("p", sim, retry=retry, breaker=breaker),
            _provider("f", sim),
            spool=Path(tmp) / "spool.db",
        )
        with gw:
            transitions = _transitions(gw, "p")
            began = time.monotonic()
            sim.inject(
                Fault.flapping(up=up, down=down, fault=Fault.status(503)),
                prefix="/p",
                duration=load.duration,
            )
            records = await drive(gw, load, "flap")
            elapsed = time.monotonic() - began
        result = tally("flapping", sim, effects, records)
        at_p = len(sim.requests(prefix="/p"))
        windows = math.ceil(elapsed / retry.budget_window) + 1
        attempt_bound = math.ceil(
            result.calls * (1 + retry.budget_ratio) + retry.budget_floor * windows
        )
        opens = sum(new == "open" for _, _, new in transitions)
        # per flap cycle: one trip, then a failed probe (open -> half_open -> open) at most
        # once per open period while down, then one probe that closes it: no thrashing beyond
        cycles = math.ceil(elapsed / (up + down))
        transition_bound = cycles * (2 * math.ceil(down / open_for) + 3)
        result.details.update(
            attempts_at_p=at_p,
            attempt_bound=attempt_bound,
            breaker_transitions=len(transitions),
            breaker_opens=opens,
            transition_bound=transition_bound,
            flap_cycles=cycles,
        )
        result.check(opens > 0, "the breaker never opened")
        result.check(at_p <= attempt_bound, f"{at_p} attempts > retry budget {attempt_bound}")
        result.check(
            len(transitions) <= transition_bound,
            f"breaker thrashed: {len(transitions)} transitions > {transition_bound}",
        )
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result


async def _replay_through_outages(replayer: Replayer, stop: asyncio.Event) -> None:
    """`Replayer.run` as a supervised worker runs it: a Redis error ends one run, the next
    starts after a poll. A request leased when Redis went away comes due when its lease ends."""
    while not stop.is_set():
        try:
            await replayer.run(stop)
        except redis.RedisError:
            await asyncio.sleep(replayer.poll)


def _outage(server: RedisServer, after: float, duration: float, into: dict[str, float]) -> None:
    """Stop `server` `after` seconds from now, start it again `duration` seconds later; the
    moments (time.monotonic) go `into` "down" and "up"."""
    time.sleep(after)
    server.stop()
    into["down"] = time.monotonic()
    time.sleep(duration)
    server.start()
    into["up"] = time.monotonic()


async def redis_outage(profile: Profile = "short") -> ScenarioResult:
    """(6) Redis (append-only, as parked requests need) is stopped and restarted mid-run while
    both providers are down for a while: the gateway keeps serving on local state, deferrals
    made while Redis is away spill to the local spool, the spill is carried into Redis once it
    is back, and everything parked (before, during and after the outage) is replayed."""
    load = _load(profile, 5.0, 60.0)
    span, start = load.duration, 0.5
    f_down = (start + 0.1 * span, 0.25 * span)  # with p down: calls park
    redis_down = (start + 0.2 * span, 0.3 * span)  # parks go to Redis, then to the spill
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(appendonly=True) as server,
    ):
        effects = _serve(sim)
        mapping = processes.config_mapping(sim, Path(tmp), redis_url=server.url, timeout=2.0)
        dead: list[DeadLettered] = []
        moments: dict[str, float] = {}
        with Gateway(settings_from_mapping(mapping), ops=False) as gw:
            backend = gw.deferral
            assert isinstance(backend, RedisBackend)
            gw.events.subscribe(lambda event: _collect(event, DeadLettered, dead))
            stop = asyncio.Event()
            replaying = asyncio.create_task(_replay_through_outages(backend.replayer, stop))
            sim.inject(Fault.status(503), prefix="/p/", after=start, duration=0.6 * span)
            sim.inject(Fault.status(503), prefix="/f/", after=f_down[0], duration=f_down[1])
            outage = threading.Thread(target=_outage, args=(server, *redis_down, moments))
            outage.start()
            records = await drive(gw, load, "redis")
            await asyncio.to_thread(outage.join)
            deferred = {r.key for r in records if r.status == "deferred"}

            def settled() -> bool:
                left = backend.spill.stats()
                return (
                    deferred <= effects.keys()
                    and left["ready"] + left["leased"] == 0
                    and processes.pending(backend.redis) == 0
                )

            drained = await asyncio.to_thread(
                _wait_for, settled, 30.0 if profile == "short" else 120
            )
            stop.set()
            await replaying
            spilled = backend.spilled
            letters = _dead_letters(backend.redis)
        result = tally("redis-outage", sim, effects, records)
        down, up = moments.get("down", math.inf), moments.get("up", math.inf)
        result.details.update(
            redis_down_s=round(up - down, 2) if up < math.inf else None,
            parked_in_redis_before_stop=sum(
                r.status == "deferred" and r.started + r.latency < down for r in records
            ),
            spilled_to_spool=spilled,
            served_while_redis_down=sum(
                r.status == "delivered" and down <= r.started < up for r in records
            ),
            dead_lettered=dict(Counter(event.reason for event in dead)),
            dead_letters=letters,
        )
        result.check(bool(deferred), "no call was deferred (the outage did not bite)")
        result.check(spilled > 0, "no deferral spilled to the spool while Redis was down")
        result.check(
            result.details["parked_in_redis_before_stop"] > 0,
            "nothing was parked in Redis before it stopped (its restart was not tested)",
        )
        result.check(
            result.details["served_while_redis_down"] > 0, "nothing was served while Redis was down"
        )
        result.check(drained, "spill or Redis queue not drained, or deferred calls not replayed")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(not dead, f"dead-lettered: {result.details['dead_lettered']}")
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        return result


async def worker_killed(profile: Profile = "short") -> ScenarioResult:
    """(7) Calls park in Redis under load; a replay worker (`resilient worker` in its own
    process) is killed with SIGKILL mid-drain; another worker finishes. Nothing is lost, and
    nothing takes effect twice: a request in flight at the kill is sent again with its key.
    The short profile kills a `--burst` worker (the replay loop alone); the long one an RQ
    worker, whose job's running mark must expire before another worker takes over."""
    load = _load(profile, 2.0, 20.0)
    killed_kind = "rq" if profile == "long" else "burst"
    wait = 60.0 if profile == "short" else 300.0
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = _serve(sim)
        folder = Path(tmp)
        config = processes.write_config(
            folder / "resilient.yaml", processes.config_mapping(sim, folder, redis_url=server.url)
        )
        outage = [sim.inject(Fault.status(503), prefix=p) for p in ("/p/", "/f/")]
        with Gateway(load_settings(config), ops=False) as gw:
            records = await drive(gw, load, "kill")
        for fault in outage:
            fault.clear()
        sim.inject(Fault.latency(0.05), prefix="/p/")  # a drain slow enough to be cut
        deferred = {r.key for r in records if r.status == "deferred"}

        def delivered() -> int:
            return len(deferred & effects.keys())

        first = processes.worker(
            config, folder / "worker-1.log", *([] if killed_kind == "rq" else ["--burst"])
        )
        cut = await asyncio.to_thread(_wait_for, lambda: delivered() >= len(deferred) // 4, wait)
        processes.kill(first)
        killed_at, at_kill = time.monotonic(), delivered()
        second = processes.worker(config, folder / "worker-2.log")
        store = RedisStore.from_url(server.url)
        try:
            finished = await asyncio.to_thread(
                _wait_for,
                lambda: delivered() == len(deferred) and processes.pending(store) == 0,
                wait,
            )
            dead = int(store.stats()["dead"])
        finally:
            processes.stop(second)
            store.close()
        result = tally("worker-kill", sim, effects, records)
        resent = result.details["resent_same_key"]
        result.details.update(
            killed=f"{killed_kind} worker, exit {first.returncode}",
            parked=len(deferred),
            delivered_before_kill=at_kill,
            dead_lettered=dead,
        )
        logs = "\n".join(processes.tail(folder / f"worker-{n}.log") for n in (1, 2))
        result.check(bool(deferred), "no call was deferred")
        result.check(
            cut and 0 < at_kill < len(deferred), f"not killed mid-drain: {at_kill}\n{logs}"
        )
        result.check(finished, f"the second worker did not finish the drain\n{logs}")
        result.check(result.replayed == result.deferred, "not every deferred call was replayed")
        result.check(dead == 0, f"{dead} request(s) dead-lettered")
        # Only what the killed worker sent in its last moments goes again: requests in flight
        # (at most its concurrency) and outcomes not yet written (group commit writes within
        # milliseconds): bounded by what it sent in its last second.
        last_second = sum(
            killed_at - 1.0 <= r.received_at <= killed_at for r in sim.requests(prefix="/p/")
        )
        concurrency = inspect.signature(Replayer).parameters["concurrency"].default
        bound = max(concurrency, last_second)
        result.details["resend_bound"] = bound
        result.check(
            resent <= bound, f"{resent} requests sent again > {bound} sent in the last 1 s"
        )
        return result


def _run_until_killed(
    app: subprocess.Popen[str], min_deferred: int, limit: float
) -> tuple[list[CallRecord], bool]:
    """Read the application's call records as they come; SIGKILL it the moment a call returns
    `deferred` once `min_deferred` calls have. Returns every record it printed (those that came
    out before the kill landed too) and whether it was killed that way (else after `limit`)."""
    records: list[CallRecord] = []
    deferred, killed = 0, False
    watchdog = threading.Timer(limit, processes.kill, (app,))
    watchdog.start()
    try:
        assert app.stdout is not None
        for line in app.stdout:
            record = CallRecord.from_line(line)
            records.append(record)
            deferred += record.status == "deferred"
            if not killed and record.status == "deferred" and deferred >= min_deferred:
                processes.kill(app)
                killed = True
    finally:
        watchdog.cancel()
        processes.kill(app)  # already dead unless reading failed
    return records, killed


def _crash_and_recover(
    sim: Simulator, effects: Effects, folder: Path, redis_url: str | None, min_deferred: int
) -> tuple[list[CallRecord], dict[str, Any], list[str]]:
    """One application killed right after a call returned `deferred` (both providers down);
    then, providers back, a new gateway (embedded spool) or a `resilient worker --burst`
    (Redis) delivers what it parked. Returns its records, details and violations."""
    folder.mkdir()
    tag = f"crash-{folder.name}"
    mapping = processes.config_mapping(sim, folder, redis_url=redis_url)
    config = processes.write_config(folder / "resilient.yaml", mapping)
    outage = [sim.inject(Fault.status(503), prefix=p) for p in ("/p/", "/f/")]
    records, killed = _run_until_killed(
        processes.app(config, tag, folder / "app.log"), min_deferred, limit=60.0
    )
    reported = {r.key for r in records if r.status == "deferred"}
    store: Store = (
        RedisStore.from_url(redis_url) if redis_url else Spool(mapping["gateway"]["spool_path"])
    )
    problems: list[str] = []
    try:
        missing = reported - processes.parked_operations(store)
        for fault in outage:
            fault.clear()

        def delivered() -> bool:
            return reported <= effects.keys() and processes.pending(store) == 0

        end = time.monotonic() + 60.0
        if redis_url:
            while not delivered() and time.monotonic() < end:
                processes.burst(config, folder / "worker.log")
        else:
            with Gateway(load_settings(config), ops=False):
                _wait_for(delivered, end - time.monotonic())
        done, dead = delivered(), int(store.stats()["dead"])
    finally:
        store.close()
    if not killed:
        problems.append(
            f"{tag}: never deferred {min_deferred} calls\n{processes.tail(folder / 'app.log')}"
        )
    if missing:
        problems.append(f"{tag}: {len(missing)} deferred call(s) not in the store after the kill")
    if not done:
        problems.append(
            f"{tag}: parked requests not delivered\n{processes.tail(folder / 'worker.log')}"
        )
    if dead:
        problems.append(f"{tag}: {dead} request(s) dead-lettered")
    details = {
        "calls": len(records),
        "deferred_before_kill": len(reported),
        "missing_after_kill": len(missing),
        "dead_lettered": dead,
    }
    return records, details, problems


async def app_killed(profile: Profile = "short") -> ScenarioResult:
    """(8) The application process (`python -m chaos.app`, traffic while both providers are
    down) is killed with SIGKILL right after a call returned `deferred`: every call it was told
    was deferred is still parked, and is delivered once providers recover: by a new gateway
    over the same SQLite spool, and by a worker from Redis."""
    min_deferred = 50 if profile == "short" else 1000
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = _serve(sim)
        records: list[CallRecord] = []
        details: dict[str, Any] = {}
        problems: list[str] = []
        for variant, redis_url in (("spool", None), ("redis", server.url)):
            ran, details[variant], found = await asyncio.to_thread(
                _crash_and_recover, sim, effects, Path(tmp) / variant, redis_url, min_deferred
            )
            records += ran
            problems += found
        sent = {r.key for r in records}
        acted = effects.keys()  # an Effects, not a dict: keys() is a fresh set
        in_flight = {key for key in acted if key.startswith("crash-") and key not in sent}
        result = tally("app-kill", sim, effects, records, in_flight=in_flight)
        result.details.update(details, in_flight_at_kill_delivered=len(in_flight))
        for problem in problems:
            result.check(False, problem)
        result.check(result.deferred > 0, "no call was deferred")
        result.check(result.replayed == result.deferred, "not every deferred call was delivered")
        result.check(result.failed == 0, f"{result.failed} call(s) neither served nor deferred")
        return result


async def slow_provider(profile: Profile = "short") -> ScenarioResult:
    """(9) The primary answers, but slower than its slow-call threshold: counted unhealthy, its
    breaker opens and calls fail over."""
    load = _load(profile, 3.0, 60.0)
    breaker = BreakerSettings(min_calls=5, window=2.0, slow_call=0.1, open_for=1.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        effects = _serve(sim)
        gw = _gateway(
            _provider("p", sim, breaker=breaker), _provider("f", sim), spool=Path(tmp) / "s.db"
        )
        with gw:
            transitions = _transitions(gw, "p")
            sim.inject(Fault.latency(0.3), prefix="/p")
            records = await drive(gw, load, "slow")
            status = gw.status()["providers"]["p"]
        result = tally("slow-provider", sim, effects, records)
        opened = [at for at, _, new in transitions if new == "open"]
        after = [r for r in records if opened and r.started > opened[0]]
        by_f = sum(r.provider == "f" for r in after)
        result.details.update(
            breaker_opens=len(opened),
            after_open=len(after),
            served_by_fallback_after_open=by_f,
            status=status.get("breaker", status),
        )
        result.check(bool(opened), "the slow provider was never counted unhealthy")
        result.check(
            bool(after) and by_f >= 0.8 * len(after),
            f"only {by_f}/{len(after)} calls failed over once the breaker opened",
        )
        result.check(result.failed == 0, f"{result.failed} call(s) failed")
        return result


RATE_LIMITED = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}
PAYPAL_LATENCY = 0.5  # longer than B's short deadline: its wait on A's claim runs out first
ROLES = ("A", "B")


def _read_records(app: subprocess.Popen[str], into: list[CallRecord]) -> None:
    assert app.stdout is not None
    for line in app.stdout:
        into.append(CallRecord.from_line(line))


def _charge_from_two_processes(
    sim: Simulator, folder: Path, redis_url: str | None, keys: int, storm: Fault, window: float
) -> tuple[dict[str, list[CallRecord]], int, list[str]]:
    """Two chargers (A, B) over one config charge the same `keys` keys, Stripe answering with
    `storm` (its 429s) for the first `window` seconds. Returns each one's records (in the order
    its calls returned), how many requests the 429s hit, and what went wrong running them."""
    folder.mkdir()
    config = processes.write_config(
        folder / "resilient.yaml", processes.payments_mapping(sim, folder, redis_url=redis_url)
    )
    prefix = f"same-{folder.name}"
    apps = {
        role: processes.charger(config, role, prefix, keys, folder / f"app-{role}.log")
        for role in ROLES
    }
    records: dict[str, list[CallRecord]] = {role: [] for role in ROLES}
    problems: list[str] = []
    hits = 0
    limit = 30.0 + keys * SAME_KEY_GAP + 60.0  # start-up, the schedule, the slowest retries
    watchdogs = [threading.Timer(limit, processes.kill, (app,)) for app in apps.values()]
    for watchdog in watchdogs:
        watchdog.start()
    try:
        for role, app in apps.items():
            assert app.stdout is not None
            if app.stdout.readline().strip() != "ready":
                tail = processes.tail(folder / f"app-{role}.log")
                return records, hits, [f"{prefix}: charger {role} did not start\n{tail}"]
        lead = 0.3
        at_stripe = sim.inject(storm, prefix="/stripe/", after=lead, duration=window)
        start = time.monotonic() + lead
        for app in apps.values():
            assert app.stdin is not None
            app.stdin.write(f"{start!r}\n")
            app.stdin.close()
        readers = [
            threading.Thread(target=_read_records, args=(app, records[role]))
            for role, app in apps.items()
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        hits = at_stripe.hits
        for role, app in apps.items():
            code = app.wait(10)
            if code != 0:
                tail = processes.tail(folder / f"app-{role}.log")
                problems.append(f"{prefix}: charger {role} exited {code}\n{tail}")
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
        for app in apps.values():
            processes.kill(app)
    return records, hits, problems


def _same_key_verdict(
    prefix: str, keys: int, records: dict[str, list[CallRecord]], effects: Counter[str]
) -> tuple[dict[str, Any], list[str]]:
    """Per key: exactly one effect at the processors, exactly one call that carried it out
    (delivered, not deduplicated), and both processes ending delivered with that charge's id.
    Counts how the other process's first call ended: it `waited` on the claim and got the
    result, found it `deduplicated` at once, or raised OperationInProgress (`in_progress`)."""
    calls: dict[tuple[str, str], list[CallRecord]] = {}
    for role, recs in records.items():
        for record in recs:
            calls.setdefault((role, record.key), []).append(record)
    second: Counter[str] = Counter()
    carried_by: Counter[str] = Counter()
    problems: list[str] = []
    for n in range(keys):
        key = f"{prefix}-{n}"
        mine = {role: calls.get((role, key), []) for role in ROLES}
        if effects[key] != 1:
            problems.append(f"{key}: {effects[key]} effects at Stripe and PayPal")
        finals = {role: (c[-1].status, c[-1].receipt) if c else None for role, c in mine.items()}
        receipts = {final[1] for final in finals.values() if final is not None}
        if any(f is None or f[0] != "delivered" for f in finals.values()) or len(receipts) != 1:
            problems.append(f"{key}: not one delivered charge for both processes: {finals}")
        sent = [
            (role, r)
            for role, c in mine.items()
            for r in c
            if r.status == "delivered" and not r.deduplicated
        ]
        if len(sent) != 1:
            problems.append(f"{key}: carried out by {len(sent)} calls")
            continue
        role, sender = sent[0]
        carried_by[f"{role}:{sender.provider}"] += 1
        other = mine["B" if role == "A" else "A"]
        first = other[0] if other else None
        if first is None:
            second["missing"] += 1
        elif first.status == "delivered":
            waited = first.started < sender.started + sender.latency
            second["waited" if waited else "deduplicated"] += 1
        elif first.status == OperationInProgress.__name__:
            second["in_progress"] += 1
        else:
            second[f"failed:{first.status}"] += 1
    details = {
        "keys": keys,
        "carried_out_by": dict(sorted(carried_by.items())),
        "second_call": dict(sorted(second.items())),
        "calls": {role: len(recs) for role, recs in records.items()},
    }
    return details, problems


async def same_key_two_processes(profile: Profile = "short") -> ScenarioResult:
    """(10) Two application processes with one config charge the same idempotency keys at
    nearly the same moment while Stripe answers 429 for a while (the long profile: on and off),
    so charges fail over to a PayPal slow enough for the two calls to overlap: once with the
    embedded SQLite ledger (one spool_path), once with the ledger in a real redis-server. Every
    key is charged exactly once across Stripe and PayPal together; one process carries it out
    and the other gets the same charge: by waiting on its claim, from the ledger, or after
    OperationInProgress (its deadline came first) by a retry."""
    keys = _pick(profile, 60, 600)
    schedule = keys * SAME_KEY_GAP
    limited = Fault.status(429, json=RATE_LIMITED)
    # short: 429s for the first 40% of the run, then Stripe answers; long: 429s come and go
    storm = _pick(profile, limited, Fault.flapping(up=2.0, down=3.0, fault=limited))
    window = _pick(profile, 0.4 * schedule, schedule)
    with (
        Simulator() as sim,
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as server,
    ):
        effects = Effects()
        stripe, paypal = _serve_payments(sim, effects)
        sim.inject(Fault.latency(PAYPAL_LATENCY), method="POST", path="/paypal/v2/checkout/orders")
        records: list[CallRecord] = []
        details: dict[str, Any] = {}
        problems: list[str] = []
        for variant, redis_url in (("sqlite", None), ("redis", server.url)):
            by_role, hits, found = await asyncio.to_thread(
                _charge_from_two_processes,
                sim,
                Path(tmp) / variant,
                redis_url,
                keys,
                storm,
                window,
            )
            verdict, wrong = _same_key_verdict(f"same-{variant}", keys, by_role, effects.by_key())
            details[variant] = {**verdict, "stripe_429s": hits}
            problems += found + wrong
            records += [r for recs in by_role.values() for r in recs]
        intents, orders = dict(stripe.payment_intents), dict(paypal.orders)
        result = tally("same-key", sim, effects, records)
        at_stripe = sim.requests(method="POST", path="/stripe/v1/payment_intents")
        result.max_attempts_per_s_at_provider = max_per_second([r.received_at for r in at_stripe])
        created = len(intents) + len(orders)
        result.details.update(
            details,
            payment_intents=len(intents),
            paypal_orders=len(orders),
            receipts_unknown_to_processors=len(
                {r.receipt for r in records if r.receipt} - set(intents) - set(orders)
            ),
        )
        for problem in problems[:10]:
            result.check(False, problem)
        result.check(len(problems) <= 10, f"... and {len(problems) - 10} more key(s) went wrong")
        result.check(
            created == 2 * keys, f"{created} charges created at the processors for {2 * keys} keys"
        )
        result.check(
            not result.details["receipts_unknown_to_processors"],
            "a caller was given a charge id no processor created",
        )
        for variant in ("sqlite", "redis"):
            second = details[variant]["second_call"]
            result.check(details[variant]["stripe_429s"] > 0, f"{variant}: Stripe never said 429")
            result.check(
                second.get("waited", 0) > 0, f"{variant}: no second call waited on a claim"
            )
            result.check(
                second.get("in_progress", 0) > 0,
                f"{variant}: no second call ran out of time (OperationInProgress)",
            )
        return result


MESSAGES = f"/twilio/2010-04-01/Accounts/{processes.TWILIO_ACCOUNT}/Messages.json"


async def _park_sms(sim: Simulator, folder: Path, bodies: list[str]) -> list[CallRecord]:
    """Send each body once (to four numbers in turn) while Twilio answers 503: every message
    parks. The parking gateway is not paced (parking is not under test here)."""
    outage = sim.inject(Fault.status(503), prefix="/twilio/")
    settings = settings_from_mapping(processes.sms_mapping(sim, folder, rate=None))
    gate = asyncio.Semaphore(50)
    with Gateway(settings, ops=False, background_replay=False) as gw:

        async def park(n: int, body: str) -> CallRecord:
            key = f"paced-{n}"
            sms = Sms(to=f"+1555010{n % 4}", body=body, sender="+15550001", idempotency_key=key)
            async with gate:
                started = time.monotonic()
                try:
                    result = await gw.sms.send(sms)
                except CallFailed as exc:
                    return _charge_record(key, "async", started, None, exc)
                return CallRecord(
                    key,
                    "async",
                    result.status,
                    result.provider,
                    started,
                    time.monotonic() - started,
                )

        records = await asyncio.gather(*(park(n, body) for n, body in enumerate(bodies)))
    outage.clear()
    return list(records)


def _kill_while_held(
    sim: Simulator,
    workers: list[subprocess.Popen[str]],
    delivered: Callable[[], int],
    target: int,
    held: tuple[int, int],
    wait: float,
) -> dict[str, Any]:
    """Once `target` messages are delivered, Twilio holds the next requests (`held`: so many
    done first, so many not done) and the moment all of them are in flight, SIGKILL every
    worker: they die with requests whose outcome they never learnt."""
    reached = _wait_for(lambda: delivered() >= target, wait)
    done, not_done = held
    hung = [
        sim.inject(Fault.hang(after_effect=True), method="POST", path=MESSAGES, times=done),
        sim.inject(Fault.hang(), method="POST", path=MESSAGES, times=not_done),
    ]
    in_flight = _wait_for(lambda: sum(h.hits for h in hung) >= done + not_done, wait)
    for worker in workers:
        processes.kill(worker)
    for fault in hung:
        fault.clear()
    return {
        "workers": len(workers),
        "exit": [worker.returncode for worker in workers],
        "reached": reached,
        "held_in_flight": in_flight,
        "delivered_at_kill": delivered(),
    }


async def worker_killed_paced(profile: Profile = "short") -> ScenarioResult:
    """(11) SMS parked for Twilio (which takes no idempotency key) drain through `resilient
    worker` at Twilio's rate limit; mid-drain Twilio holds some requests (some done, some not)
    and, while they are in flight, the worker is SIGKILLed; two workers sharing the spool drain
    the rest (the long profile kills those too, later in the drain, and starts two more). Every
    parked message is sent exactly once, counted at Twilio by body: what the dead worker may
    have sent is looked up in Twilio's Messages list, never simply sent again."""
    count, rate = _pick(profile, (60, 10), (600, 20))
    cuts = _pick(profile, (0.3,), (0.25, 0.6))
    held = _pick(profile, (3, 2), (6, 4))  # per kill: done then held; held, not done
    wait = _pick(profile, 60.0, 240.0)
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        twilio = mount(sim, "twilio", prefix="/twilio")
        folder = Path(tmp)
        mapping = processes.sms_mapping(sim, folder, rate=f"{rate}/s")
        config = processes.write_config(folder / "resilient.yaml", mapping)
        bodies = [f"paced {n} of {count}" for n in range(count)]
        records = await _park_sms(sim, folder, bodies)
        parked = {b for b, r in zip(bodies, records, strict=True) if r.status == "deferred"}

        def sent() -> Counter[str]:
            return Counter(m["body"] for m in dict(twilio.messages).values())

        def delivered() -> int:
            return len(parked & set(sent()))

        drain_from = time.monotonic()
        spool = Spool(mapping["gateway"]["spool_path"])
        logs = [folder / "worker-1.log"]
        running = [processes.worker(config, logs[0])]
        kills: list[dict[str, Any]] = []
        try:
            for cut in cuts:
                kill = await asyncio.to_thread(
                    _kill_while_held, sim, running, delivered, int(len(parked) * cut), held, wait
                )
                kills.append(kill)
                logs += [folder / f"worker-{len(logs) + n}.log" for n in (1, 2)]
                running = [processes.worker(config, log) for log in logs[-2:]]
            finished = await asyncio.to_thread(
                _wait_for,
                lambda: delivered() == len(parked) and processes.pending(spool) == 0,
                wait,
            )
            await asyncio.sleep(1.0)  # a duplicate would come with the same drain
            dead = int(spool.stats()["dead"])
            letters = _dead_letters(spool)
        finally:
            for worker in running:
                processes.stop(worker)
            spool.close()
        counts = sent()
        sends = [r.received_at for r in sim.requests(method="POST", path=MESSAGES)]
        sends = [at for at in sends if at >= drain_from]
        lookups = len(sim.requests(method="GET", path=MESSAGES))
        result = ScenarioResult(
            name="worker-kill-paced",
            calls=len(records),
            served=sum(r.status == "delivered" for r in records),
            deferred=len(parked),
            replayed=sum(counts[b] >= 1 for b in parked),
            lost=sum(counts[b] == 0 for b in parked),
            duplicated=sum(n > 1 for n in counts.values()),
            max_attempts_per_s_at_provider=max_per_second(sends),
            p99_latency=_percentile([r.latency for r in records], 0.99),
            failed=sum(r.status not in ("delivered", "deferred") for r in records),
        )
        unknown = set(counts) - parked
        # each worker paces itself: the most at Twilio is two workers' limits, plus arrivals
        # bunched by a late wake-up (as in the 429 storms)
        pace_bound = 2 * rate + rate // 2
        result.details.update(
            rate_limit_per_s=rate,
            pace_bound=pace_bound,
            kills=kills,
            held_per_kill={"done": held[0], "not_done": held[1]},
            sends=len(sends),
            lookups=lookups,
            dead_lettered=dead,
            dead_letters=letters,
            drain_s=round(time.monotonic() - drain_from, 1),
        )
        tails = "\n".join(processes.tail(log, 5) for log in logs)
        result.check(len(parked) == count, f"only {len(parked)} of {count} messages parked")
        for n, kill in enumerate(kills, 1):
            result.check(
                kill["reached"] and kill["held_in_flight"],
                f"kill {n}: the drain or the held requests never came\n{tails}",
            )
            result.check(
                0 < kill["delivered_at_kill"] < len(parked),
                f"kill {n}: not mid-drain ({kill['delivered_at_kill']} delivered)",
            )
            result.check(
                all(code == -9 for code in kill["exit"]), f"kill {n}: exits {kill['exit']}"
            )
        result.check(finished, f"the drain did not finish\n{tails}")
        result.check(result.lost == 0, f"{result.lost} parked message(s) never sent")
        result.check(result.duplicated == 0, f"{result.duplicated} message(s) sent twice")
        result.check(not unknown, f"{len(unknown)} message(s) nobody parked")
        result.check(dead == 0, f"{dead} request(s) dead-lettered")
        result.check(
            lookups >= sum(held) * len(cuts),
            f"{lookups} lookups: fewer than the requests held at the kills",
        )
        result.check(
            result.max_attempts_per_s_at_provider <= pace_bound,
            f"{result.max_attempts_per_s_at_provider} sends/s at Twilio > {pace_bound}",
        )
        return result


SCENARIOS: dict[str, Callable[[Profile], Coroutine[Any, Any, ScenarioResult]]] = {
    "primary-down": primary_down,
    "429-retry-after": rate_limit_storm_retry_after,
    "429-no-hint": rate_limit_storm_bare,
    "silent-provider": silent_provider,
    "connection-reset": connection_reset,
    "flapping": flapping_provider,
    "redis-outage": redis_outage,
    "worker-kill": worker_killed,
    "app-kill": app_killed,
    "slow-provider": slow_provider,
    "same-key": same_key_two_processes,
    "worker-kill-paced": worker_killed_paced,
}


def run(name: str, profile: Profile = "short") -> ScenarioResult:
    """Run one scenario on its own event loop."""
    return asyncio.run(SCENARIOS[name](profile))


COLUMNS = (
    ("scenario", "name"),
    ("calls", "calls"),
    ("served", "served"),
    ("deferred", "deferred"),
    ("replayed", "replayed"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("max att/s", "max_attempts_per_s_at_provider"),
    ("p99 ms", "p99_latency"),
    ("ok", "ok"),
)


def table(results: list[ScenarioResult]) -> str:
    """The summary table, one row per scenario."""
    rows = [[title for title, _ in COLUMNS]]
    for result in results:
        row = []
        for _, attr in COLUMNS:
            value = getattr(result, attr)
            if attr == "p99_latency":
                value = f"{value * 1000:.0f}"
            elif attr == "ok":
                value = "ok" if value else "FAIL"
            row.append(str(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
