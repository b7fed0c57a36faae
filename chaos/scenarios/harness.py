"""The harness every scenario shares: the traffic shape (`Load`, `drive`), the providers' side
counted by idempotency key (`Effects`, `_serve`, `_serve_payments`), gateways over a private
simulator (`_provider`, `_gateway`), the common counts (`tally`), and the profiles.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from chaos.scenarios.result import CallRecord, ScenarioResult, _percentile, max_per_second
from providers import Charge
from queues.store import DEAD, Store
from resilient.errors import CallFailed
from resilient.gateway import Gateway
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.telemetry import BreakerChanged, Event
from resilient.testing import SimRequest, SimResponse, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.paypal import PayPalState
from resilient.testing.routes.stripe import StripeState

Profile = Literal["short", "long"]
T = TypeVar("T")
PROFILES: tuple[str, ...] = ("short", "long")
PATH = "/v1/m"


@dataclass(frozen=True)
class Load:
    """Traffic shape: `threads` blocking callers plus `tasks` asyncio callers, each pausing
    `pace` seconds between calls, for `duration` seconds."""

    duration: float
    threads: int = 3
    tasks: int = 4
    pace: float = 0.02


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


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


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
