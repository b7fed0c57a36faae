"""Chaos scenarios: sustained mixed sync/async traffic through a Gateway while the simulator
misbehaves, with outcomes counted at the simulator (effects by idempotency key), not only from
what callers saw.

Every scenario uses the "http" capability with a primary provider `p` (where the fault is
injected) and a fallback `f`, each under its own path prefix on a private simulator. Every call
carries a unique `Idempotency-Key`, so the simulator's records say exactly which calls took
effect, and how many times.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from resilient.telemetry import BreakerChanged, DeadLettered, Event
from resilient.testing import Fault, SimRequest, SimResponse, Simulator
from resilient.units import parse_rate

Profile = Literal["short", "long"]
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
    started: float  # time.monotonic(), the simulator's clock too
    latency: float


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
        with self._lock:
            if self.effects[(provider, key)]:
                self.resent[(provider, key)] += 1
            else:
                self.effects[(provider, key)] += 1
        return SimResponse.json({"by": provider, "key": key}, status=202)

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


def _provider(name: str, sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {
        "timeouts": TimeoutSettings(connect=0.5, read=1.0, write=1.0, attempt=1.0),
        "retry": RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.05),
        "breaker": BreakerSettings(
            min_calls=5, window=2.0, open_for=0.5, open_for_max=2.0, failure_ratio=0.5
        ),
    }
    values.update(overrides)
    return ProviderSettings(name=name, kind="http", base_url=sim.url(f"/{name}"), **values)


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


async def drive(gw: Gateway, load: Load, tag: str) -> list[CallRecord]:
    """Run the load: threads through gw.sync.http, tasks through gw.http, until it ends."""
    records: list[CallRecord] = []
    lock = threading.Lock()
    end = time.monotonic() + load.duration

    def note(key: str, mode: str, started: float, result: Any, error: BaseException | None) -> None:
        latency = time.monotonic() - started
        if error is not None:
            record = CallRecord(key, mode, type(error).__name__, None, started, latency)
        else:
            record = CallRecord(key, mode, result.status, result.provider, started, latency)
        with lock:
            records.append(record)

    def sync_worker(wid: int) -> None:
        n = 0
        while time.monotonic() < end:
            key = f"{tag}-s{wid}-{n}"
            n += 1
            started = time.monotonic()
            try:
                result = gw.sync.http.request(
                    "POST", PATH, json={"k": key}, headers={"Idempotency-Key": key}
                )
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
                result = await gw.http.request(
                    "POST", PATH, json={"k": key}, headers={"Idempotency-Key": key}
                )
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
    name: str, sim: Simulator, providers: Effects, records: list[CallRecord]
) -> ScenarioResult:
    """The common counts: calls from the callers, effects from the simulator's providers."""
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
            [r.received_at for r in sim.requests(prefix="/p")]
        ),
        p99_latency=_percentile([r.latency for r in records], 0.99),
        failed=sum(r.status not in ("delivered", "deferred") for r in records),
    )
    unknown = set(effects) - {r.key for r in records}
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


def _load(profile: Profile, short: float, long: float) -> Load:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return Load(duration=short if profile == "short" else long)


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


SCENARIOS: dict[str, Callable[[Profile], Coroutine[Any, Any, ScenarioResult]]] = {
    "primary-down": primary_down,
    "429-retry-after": rate_limit_storm_retry_after,
    "429-no-hint": rate_limit_storm_bare,
    "silent-provider": silent_provider,
    "flapping": flapping_provider,
    "slow-provider": slow_provider,
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
