"""Pipeline, chain and executors, end to end through a Gateway over httpx.MockTransport.

Every behaviour runs twice, through the blocking facade (in a worker thread) and the async one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from resilient.chain import chain_plan
from resilient.errors import AmbiguousOutcome, ChainExhausted, DeadlineExceeded, FatalError
from resilient.executors import run_sync
from resilient.gateway import Gateway
from resilient.pipeline import Command, Discard, Plan, Send, Sleep, provider_plan
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt, Result
from resilient.runtime import ProviderRuntime
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.telemetry import (
    AttemptFinished,
    BreakerChanged,
    CallFinished,
    Event,
    EventBus,
    FailedOver,
    Rejected,
    RetryScheduled,
)

FAST = RetrySettings(attempts=3, backoff_base=0.001, backoff_cap=0.002)

Reply = int | tuple[int, dict[str, str]] | BaseException | Callable[[httpx.Request], Any]


class Hosts:
    """A MockTransport handler: each host answers from its own list of replies; the last repeats.

    A reply is a status, (status, headers), an exception to raise, or a function of the request.
    """

    def __init__(self, **replies: Reply | list[Reply]) -> None:
        self.replies = {h: list(r) if isinstance(r, list) else [r] for h, r in replies.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> Any:
        self.requests.append(request)
        queue = self.replies[request.url.host]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(request)
        status, headers = reply if isinstance(reply, tuple) else (reply, {})
        return httpx.Response(status, headers=headers, json={"from": request.url.host})

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.requests]


def provider(name: str, **settings: Any) -> ProviderSettings:
    settings.setdefault("retry", FAST)
    return ProviderSettings(name, "http", base_url=f"http://{name}", **settings)


class Harness:
    """Builds a gateway over a MockTransport and calls it the sync or the async way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.events: list[Event] = []
        self.gateways: list[Gateway] = []

    def gateway(self, handler: Hosts, *providers: ProviderSettings) -> Gateway:
        settings = GatewaySettings(
            providers={p.name: p for p in providers},
            capabilities={"http": CapabilitySettings("http", tuple(p.name for p in providers))},
        )
        transport = httpx.MockTransport(handler)
        gw = Gateway(settings, transport=transport, async_transport=transport)
        gw.events.subscribe(self.events.append)
        self.gateways.append(gw)
        return gw

    async def request(
        self, gw: Gateway, method: str = "GET", url: str = "/x", **kwargs: Any
    ) -> Result[httpx.Response]:
        if self.mode == "async":
            result: Result[httpx.Response] = await gw.http.request(method, url, **kwargs)
            return result
        return await asyncio.to_thread(gw.sync.http.request, method, url, **kwargs)

    def of(self, *kinds: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kinds)]


@pytest.fixture(params=["sync", "async"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = Harness(request.param)
    yield harness
    for gw in harness.gateways:
        await gw.aclose()


def summary(attempts: tuple[Attempt, ...]) -> list[tuple[str, Outcome, int | None, str]]:
    return [(a.provider, a.outcome, a.status_code, a.reason) for a in attempts]


async def test_retries_then_delivers(h: Harness) -> None:
    """503 then 200: one retry on the same provider, delivered, both attempts recorded."""
    hosts = Hosts(a=[503, 200], b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    result = await h.request(gw)
    assert result.status == "delivered"
    assert result.provider == "a"
    assert result.value is not None
    assert result.value.json() == {"from": "a"}
    assert summary(result.attempts) == [
        ("a", Outcome.RETRYABLE, 503, "503"),
        ("a", Outcome.OK, 200, "200"),
    ]
    assert all(a.latency >= 0 for a in result.attempts)
    assert hosts.hosts() == ["a", "a"]


async def test_attempts_are_capped(h: Harness) -> None:
    """A provider that keeps failing is tried `attempts` times, then the chain is exhausted."""
    hosts = Hosts(a=503)
    gw = h.gateway(hosts, provider("a", retry=FAST))
    with pytest.raises(ChainExhausted) as failure:
        await h.request(gw)
    assert hosts.hosts() == ["a"] * 3
    assert [a.status_code for a in failure.value.attempts] == [503] * 3
    assert failure.value.response is not None
    assert failure.value.response.status_code == 503


async def test_fatal_raises_at_once(h: Harness) -> None:
    """A 400 is our fault: FatalError, no retry, and the next provider is never called."""
    hosts = Hosts(a=400, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    with pytest.raises(FatalError) as failure:
        await h.request(gw, "POST", json={"bad": True})
    assert hosts.hosts() == ["a"]
    assert summary(failure.value.attempts) == [("a", Outcome.FATAL, 400, "400")]


async def test_ambiguous_post_without_key_is_not_repeated(h: Harness) -> None:
    """A 500 on a POST without an idempotency key may have acted: no retry, no failover."""
    hosts = Hosts(a=500, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    with pytest.raises(AmbiguousOutcome) as failure:
        await h.request(gw, "POST", json={"amount": 1})
    assert hosts.hosts() == ["a"]
    assert summary(failure.value.attempts) == [("a", Outcome.AMBIGUOUS, 500, "500")]


async def test_ambiguous_post_with_key_is_retried_on_the_same_provider(h: Harness) -> None:
    """With an Idempotency-Key the same provider is asked again, with the same key."""
    hosts = Hosts(a=[500, 200], b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    result = await h.request(gw, "POST", headers={"Idempotency-Key": "order-42"}, json={})
    assert result.provider == "a"
    assert hosts.hosts() == ["a", "a"]
    assert [r.headers["idempotency-key"] for r in hosts.requests] == ["order-42"] * 2


async def test_ambiguous_post_with_key_never_fails_over(h: Harness) -> None:
    """Even retried to exhaustion, a keyed POST stays on its provider: AmbiguousOutcome."""
    hosts = Hosts(a=500, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    with pytest.raises(AmbiguousOutcome):
        await h.request(gw, "POST", headers={"Idempotency-Key": "k"}, json={})
    assert hosts.hosts() == ["a"] * 3


@pytest.mark.parametrize(
    ("replies", "breaker"),
    [
        ([500, 503], BreakerSettings()),
        ([500, 401], BreakerSettings()),
        ([500], BreakerSettings(min_calls=1)),
    ],
    ids=["then-retryable", "then-failover", "then-breaker-open"],
)
async def test_maybe_done_never_moves_to_another_provider(
    h: Harness, replies: list[Reply], breaker: BreakerSettings
) -> None:
    """Once an attempt may have acted, no later failure on that provider sends it elsewhere."""
    hosts = Hosts(a=replies, b=200)
    gw = h.gateway(hosts, provider("a", breaker=breaker), provider("b"))
    with pytest.raises(AmbiguousOutcome) as failure:
        await h.request(gw, "POST", headers={"Idempotency-Key": "k"}, json={})
    assert "b" not in hosts.hosts()
    assert failure.value.attempts[0].outcome is Outcome.AMBIGUOUS


async def test_retry_ambiguous_setting_retries_a_plain_post(h: Harness) -> None:
    """retry_ambiguous=True lets a provider retry a POST that may have been executed."""
    hosts = Hosts(a=[500, 200])
    retry = RetrySettings(attempts=2, backoff_base=0.001, backoff_cap=0.001, retry_ambiguous=True)
    gw = h.gateway(hosts, provider("a", retry=retry))
    result = await h.request(gw, "POST", json={})
    assert result.provider == "a"
    assert hosts.hosts() == ["a", "a"]


async def test_ambiguous_get_retries_then_fails_over(h: Harness) -> None:
    """A 500 on a GET is safe to repeat: retried on the provider, then the next one serves."""
    hosts = Hosts(a=500, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["a", "a", "a", "b"]


async def test_429_pauses_the_provider_for_other_callers(h: Harness) -> None:
    """A 429's Retry-After holds every caller of the provider, not only the one that got it."""
    hosts = Hosts(a=[(429, {"retry-after-ms": "5000"}), 200], b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    first = await h.request(gw, deadline=1.0)  # cannot wait 5 s: moves on
    assert first.provider == "b"
    assert gw.provider("a").limiter.paused_for(time.monotonic()) > 3.0
    second = await h.request(gw, deadline=1.0)  # another caller: a is not even tried
    assert second.provider == "b"
    assert summary(second.attempts)[0] == ("a", Outcome.FAILOVER, None, "rate limited")
    assert Rejected("a", "rate_limit") in h.events
    assert hosts.hosts() == ["a", "b", "b"]


async def test_other_callers_wait_out_a_short_pause(h: Harness) -> None:
    """A caller with time to spare waits for the pause to end, then uses the provider."""
    sent: list[float] = []

    def a(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        if len(sent) == 1:
            return httpx.Response(429, headers={"retry-after-ms": "200"})
        return httpx.Response(200)

    hosts = Hosts(a=a, b=200)
    one_try = RetrySettings(attempts=1)
    gw = h.gateway(hosts, provider("a", retry=one_try), provider("b"))
    assert (await h.request(gw)).provider == "b"
    assert (await h.request(gw)).provider == "a"
    assert sent[1] - sent[0] >= 0.18  # the pause held the second caller back


async def test_retry_waits_for_retry_after(h: Harness) -> None:
    """The caller that got the 429 retries no sooner than the server asked."""
    hosts = Hosts(a=[(429, {"retry-after-ms": "50"}), 200])
    gw = h.gateway(hosts, provider("a"))
    result = await h.request(gw)
    assert [a.status_code for a in result.attempts] == [429, 200]
    (retry,) = h.of(RetryScheduled)
    assert retry.delay >= 0.05


async def test_long_retry_after_fails_over_at_once(h: Harness) -> None:
    """A Retry-After beyond max_server_delay means down for now: next provider, no retry."""
    hosts = Hosts(a=(503, {"Retry-After": "120"}), b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["a", "b"]
    assert gw.provider("a").limiter.paused_for(time.monotonic()) > 100
    assert not h.of(RetryScheduled)


async def test_read_timeout_on_get_fails_over_after_one_attempt(h: Harness) -> None:
    """A silent provider is not asked again: a GET moves on after the first timeout."""
    hosts = Hosts(a=httpx.ReadTimeout("silent"), b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["a", "b"]
    assert summary(result.attempts)[0] == ("a", Outcome.AMBIGUOUS, None, "ReadTimeout")


async def test_attempt_timeout_cuts_a_hang() -> None:
    """An async provider that never answers is cut at the attempt timeout, then failed over."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    hosts = Hosts(a=hang, b=200)
    harness = Harness("async")
    gw = harness.gateway(hosts, provider("a", timeouts=TimeoutSettings(attempt=0.2)), provider("b"))
    started = time.monotonic()
    result = await harness.request(gw)
    assert time.monotonic() - started < 2.0
    assert result.provider == "b"
    assert summary(result.attempts)[0] == ("a", Outcome.AMBIGUOUS, None, "TimeoutError")
    assert hosts.hosts() == ["a", "b"]
    await gw.aclose()


async def test_deadline_already_passed(h: Harness) -> None:
    """No time left: DeadlineExceeded, and no provider is called."""
    hosts = Hosts(a=200)
    gw = h.gateway(hosts, provider("a"))
    with pytest.raises(DeadlineExceeded):
        await h.request(gw, deadline=0)
    assert hosts.requests == []


async def test_deadline_spent_on_the_first_provider(h: Harness) -> None:
    """A slow first provider that uses up the deadline leaves none for the next one."""

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.15)
        return httpx.Response(503)

    hosts = Hosts(a=slow, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    with pytest.raises(DeadlineExceeded) as failure:
        await h.request(gw, deadline=0.1)
    assert hosts.hosts() == ["a"]
    assert [a.provider for a in failure.value.attempts] == ["a"]


async def test_disabled_provider_is_skipped(h: Harness) -> None:
    """A provider ops disabled is never called; the attempt record says why."""
    hosts = Hosts(a=200, b=200)
    gw = h.gateway(hosts, provider("a", enabled=False), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["b"]
    assert summary(result.attempts)[0] == ("a", Outcome.FAILOVER, None, "disabled")
    assert Rejected("a", "disabled") in h.events


async def test_full_bulkhead_fails_over(h: Harness) -> None:
    """A provider at its concurrency cap is skipped ("bulkhead full"), not waited for."""
    hosts = Hosts(a=200, b=200)
    gw = h.gateway(hosts, provider("a", max_concurrent=1), provider("b"))
    bulkhead = gw.provider("a").bulkhead
    assert bulkhead.try_acquire()  # another call holds the only slot
    result = await h.request(gw)
    assert result.provider == "b"
    assert summary(result.attempts)[0] == ("a", Outcome.FAILOVER, None, "bulkhead full")
    bulkhead.release()
    assert (await h.request(gw)).provider == "a"
    assert hosts.hosts() == ["b", "a"]
    assert bulkhead.in_flight == 0


async def test_concurrent_calls_respect_the_bulkhead(h: Harness) -> None:
    """While one call is in flight on a provider with max_concurrent=1, a second goes elsewhere."""
    entered, leave = threading.Event(), threading.Event()

    def a(request: httpx.Request) -> httpx.Response:
        entered.set()
        leave.wait(5)
        return httpx.Response(200)

    hosts = Hosts(a=a, b=200)
    gw = h.gateway(hosts, provider("a", max_concurrent=1), provider("b"))
    slow = asyncio.ensure_future(asyncio.to_thread(gw.sync.http.request, "GET", "/x"))
    assert await asyncio.to_thread(entered.wait, 5)
    second = await h.request(gw)
    leave.set()
    assert second.provider == "b"
    assert (await slow).provider == "a"


async def test_open_breaker_fails_over_without_calling(h: Harness) -> None:
    """An open breaker skips its provider: no request reaches it."""
    hosts = Hosts(a=200, b=200)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    gw.provider("a").breaker.force("open")
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["b"]
    assert summary(result.attempts)[0] == ("a", Outcome.FAILOVER, None, "breaker open")


@pytest.mark.parametrize(("slow_call", "opens"), [(0.01, True), (None, False)])
async def test_slow_calls_count_as_failures(
    h: Harness, slow_call: float | None, opens: bool
) -> None:
    """Successful but slow calls open the breaker when slow_call is set, and only then."""

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.03)
        return httpx.Response(200)

    hosts = Hosts(a=slow, b=200)
    breaker = BreakerSettings(min_calls=2, failure_ratio=0.5, slow_call=slow_call)
    gw = h.gateway(hosts, provider("a", breaker=breaker), provider("b"))
    first, second = await h.request(gw), await h.request(gw)
    assert (first.provider, second.provider) == ("a", "a")  # slow still delivers
    third = await h.request(gw)
    assert gw.provider("a").breaker.state == ("open" if opens else "closed")
    assert third.provider == ("b" if opens else "a")
    assert bool(h.of(BreakerChanged)) is opens


async def test_exhausted_retry_budget_stops_retries(h: Harness) -> None:
    """With no retry budget, a retryable failure is not retried: the budget rejects it."""
    hosts = Hosts(a=503, b=200)
    retry = RetrySettings(
        attempts=3, backoff_base=0.001, backoff_cap=0.001, budget_ratio=0.0, budget_floor=0
    )
    gw = h.gateway(hosts, provider("a", retry=retry), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    assert hosts.hosts() == ["a", "b"]
    assert Rejected("a", "retry_budget") in h.events
    assert not h.of(RetryScheduled)


async def test_chain_exhausted_carries_every_attempt(h: Harness) -> None:
    """When no provider serves, the error lists every attempt on every provider, in order."""
    hosts = Hosts(a=503, b=502)
    gw = h.gateway(hosts, provider("a"), provider("b"))
    with pytest.raises(ChainExhausted) as failure:
        await h.request(gw)
    assert [(a.provider, a.status_code) for a in failure.value.attempts] == [
        ("a", 503),
        ("a", 503),
        ("a", 503),
        ("b", 502),
        ("b", 502),
        ("b", 502),
    ]
    assert "a: retryable (503" in str(failure.value)


async def test_events_in_order(h: Harness) -> None:
    """Each decision emits its event, in the order it was taken; once a failure opens the
    breaker, no retry is scheduled (it would only wait to be rejected)."""
    hosts = Hosts(a=[503, 502], b=200)
    breaker = BreakerSettings(min_calls=2, failure_ratio=0.5)
    gw = h.gateway(hosts, provider("a", breaker=breaker), provider("b"))
    result = await h.request(gw)
    assert result.provider == "b"
    kinds = [type(e).__name__ for e in h.events]
    assert kinds == [
        "AttemptFinished",
        "RetryScheduled",
        "BreakerChanged",
        "AttemptFinished",
        "FailedOver",
        "AttemptFinished",
        "CallFinished",
    ]
    finished = h.of(AttemptFinished)
    assert [(e.provider, e.number) for e in finished] == [("a", 1), ("a", 2), ("b", 1)]
    assert [e.number for e in h.of(RetryScheduled)] == [2]
    assert h.of(BreakerChanged) == [BreakerChanged("a", "closed", "open", 15.0)]
    assert h.of(Rejected) == []
    assert h.of(FailedOver) == [FailedOver("http", "a", "502")]
    (done,) = h.of(CallFinished)
    assert (done.status, done.provider, done.attempts) == ("delivered", "b", result.attempts)


async def test_failed_call_reports_failed(h: Harness) -> None:
    """CallFinished says "failed" when the call raises."""
    gw = h.gateway(Hosts(a=400), provider("a"))
    with pytest.raises(FatalError):
        await h.request(gw)
    (done,) = h.of(CallFinished)
    assert (done.status, done.provider) == ("failed", "a")


async def test_a_raising_listener_does_not_break_the_call(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged and skipped; the call and other listeners carry on."""
    gw = h.gateway(Hosts(a=[503, 200]), provider("a"))

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    gw.events.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        result = await h.request(gw)
    assert result.status == "delivered"
    assert h.of(CallFinished)
    assert "event listener" in caplog.text


async def test_a_bug_propagates_and_releases_the_provider(h: Harness) -> None:
    """A non-transport error is not retried or hidden, and leaves no slot or probe taken."""
    hosts = Hosts(a=ValueError("our bug"), b=200)
    gw = h.gateway(hosts, provider("a", max_concurrent=1), provider("b"))
    with pytest.raises(ValueError, match="our bug"):
        await h.request(gw)
    assert hosts.hosts() == ["a"]
    assert gw.provider("a").bulkhead.in_flight == 0


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt without upsetting the test runner."""


async def test_an_interrupt_gives_back_the_bulkhead_and_probe(h: Harness) -> None:
    """An attempt interrupted mid-flight releases its bulkhead slot and half-open probe."""
    hosts = Hosts(a=Interrupt())
    gw = h.gateway(hosts, provider("a", max_concurrent=1, breaker=BreakerSettings(open_for=0.0)))
    rt = gw.provider("a")
    rt.breaker.force("open")  # open_for 0: the next caller gets the only probe
    with pytest.raises(Interrupt):
        await h.request(gw)
    assert rt.bulkhead.in_flight == 0
    assert rt.breaker.state == "half-open"
    assert rt.breaker.admit() is not None  # the probe came back


async def test_cancelled_async_call_releases_the_provider() -> None:
    """Cancelling an async call mid-attempt releases its bulkhead slot."""
    entered = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        await asyncio.sleep(30)
        return httpx.Response(200)

    harness = Harness("async")
    gw = harness.gateway(Hosts(a=hang), provider("a", max_concurrent=1))
    task = asyncio.create_task(harness.request(gw))
    await entered.wait()
    assert gw.provider("a").bulkhead.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gw.provider("a").bulkhead.in_flight == 0
    await gw.aclose()


# -- the plans driven by hand, with a fake clock -------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Get:
    """An idempotent operation; driven by hand, so it never sends anything itself."""

    idempotent = True
    failover_when_ambiguous = True
    credential = None

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        raise AssertionError("driven by hand")

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        raise AssertionError("driven by hand")


def runtime(name: str, clock: FakeClock, **settings: Any) -> ProviderRuntime:
    return ProviderRuntime(provider(name, **settings), EventBus(), clock=clock, wall_clock=clock)


def advance(plan: Plan, value: object) -> Command:
    """Send `value` into a hand-driven plan; acknowledge Discards; return the next command."""
    command = plan.send(value)
    while isinstance(command, Discard):
        command = plan.send(None)
    return command


def test_provider_total_moves_on_without_ending_the_call() -> None:
    """A provider's own `total` running out sends the chain on; only the call deadline ends it."""
    clock = FakeClock()
    retry = RetrySettings(attempts=3, backoff_base=0.5, backoff_cap=0.5)
    a = runtime("a", clock, timeouts=TimeoutSettings(total=1.0), retry=retry)
    b = runtime("b", clock)
    plan = chain_plan("http", (a, b), _Get(), clock.now + 60.0, EventBus())
    command = next(plan)
    assert isinstance(command, Send)
    assert command.provider is a
    assert command.timeout == pytest.approx(1.0)  # bounded by a's total
    assert isinstance(advance(plan, httpx.Response(503)), Sleep)
    clock.now += 1.1  # the backoff overran a's total
    command = advance(plan, None)
    assert isinstance(command, Send)
    assert command.provider is b
    with pytest.raises(StopIteration) as done:
        plan.send(httpx.Response(200))
    assert done.value.value.outcome is Outcome.OK
    assert done.value.value.provider == "b"


def test_call_deadline_during_backoff_is_out_of_time() -> None:
    """When the call's own deadline passes, the plan stops with out_of_time."""
    clock = FakeClock()
    a = runtime("a", clock, retry=RetrySettings(attempts=3, backoff_base=0.5, backoff_cap=0.5))
    attempts: list[Attempt] = []
    plan = provider_plan(a, _Get(), clock.now + 2.0, attempts)
    assert isinstance(next(plan), Send)
    assert isinstance(advance(plan, httpx.Response(503)), Sleep)
    clock.now += 2.5
    with pytest.raises(StopIteration) as done:
        plan.send(None)
    assert done.value.value.out_of_time
    assert len(attempts) == 1


def test_executor_rejects_unknown_commands() -> None:
    """run_sync refuses a command it does not know instead of skipping it."""

    def plan() -> Any:
        yield "teleport"

    with pytest.raises(TypeError, match="unknown command"):
        run_sync(plan(), _Get())


def test_per_credential_limiters_are_separate_and_bounded() -> None:
    from resilient import runtime as runtime_module
    from resilient.runtime import ProviderRuntime
    from resilient.settings import ProviderSettings
    from resilient.telemetry import EventBus
    from resilient.units import Rate

    settings = ProviderSettings(
        "p", "http", rate_limit=Rate(1, 1.0), rate_limit_per_credential=True
    )
    rt = ProviderRuntime(settings, EventBus())
    alice, bob = rt.limiter_for("Bearer alice"), rt.limiter_for("Bearer bob")
    assert alice is not bob and rt.limiter_for("Bearer alice") is alice
    assert alice.reserve(0.0, 10.0) == 0.0 and bob.reserve(0.0, 10.0) == 0.0  # one each
    assert alice.reserve(0.0, 10.0) == pytest.approx(1.0)  # alice's second waits her turn
    assert rt.limiter_for(None) is rt.limiter
    for n in range(runtime_module.MAX_CREDENTIAL_LIMITERS + 10):
        rt.limiter_for(f"Bearer rotated-{n}")
    assert len(rt._credential_limiters) == runtime_module.MAX_CREDENTIAL_LIMITERS


def test_timeout_per_call_is_refused_with_a_pointer_to_deadline() -> None:
    from resilient import InvalidRequest
    from resilient.http_capability import HttpOperation

    with pytest.raises(InvalidRequest, match="deadline="):
        HttpOperation("GET", "/x", {"timeout": 3})


def test_call_deadline_follows_reloads_and_chain_overrides() -> None:
    """The deadline is kept per capability, but never outlives the chain or config it came from."""
    from resilient.overrides import OverrideState
    from resilient.settings import CapabilitySettings, GatewaySettings

    def settings(timeout: float | None) -> GatewaySettings:
        slow = TimeoutSettings(attempt=1.0)
        return GatewaySettings(
            providers={
                "a": provider("a", timeouts=slow),
                "b": provider("b", timeouts=TimeoutSettings(attempt=5.0)),
            },
            capabilities={"http": CapabilitySettings("http", ("a", "b"), timeout=timeout)},
        )

    gw = Gateway(settings(None), ops=False)
    try:
        both = gw.call_deadline("http")
        assert both == gw.provider("a").natural_deadline() + gw.provider("b").natural_deadline()
        gw.apply_overrides(OverrideState(chains={"http": ["b"]}))
        assert gw.call_deadline("http") == gw.provider("b").natural_deadline()
        gw.apply_overrides(OverrideState())
        assert gw.call_deadline("http") == both
        gw.reload(settings(7.0))
        assert gw.call_deadline("http") == 7.0
    finally:
        gw.close()
