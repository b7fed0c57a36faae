"""An outage of the primary under steady traffic, end to end on the simulator, sync and async,
chat and stream: workers ask openai -> anthropic back to back while openai answers 503 for a
second, then recovers. Counted at the simulator: every call is answered (by anthropic during
the outage); while openai's breaker is open, only its half-open probes (and the attempts
already in flight when it opened) reach openai; and traffic is back on openai within seconds
of its recovery."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass

import pytest

from providers.llm import ChatChunk, ChatResponse
from resilient.gateway import Gateway
from resilient.result import Result
from resilient.telemetry import BreakerChanged, Event
from resilient.testing import Fault, Simulator
from resilient.testing.routes import anthropic as anthropic_routes
from resilient.testing.routes import openai as openai_routes
from tests.test_llm_stream import ASK, gateway

WORKERS = 6  # concurrent callers, tasks or threads
WARMUP = 0.4  # seconds of healthy traffic before the outage
OUTAGE = 1.0  # seconds openai answers 503
OPEN_FOR, OPEN_FOR_MAX = 0.25, 0.5
AFTER_CLOSE = 0.3  # seconds of traffic kept up once openai's breaker closed again
GIVE_UP = 4.0  # seconds after the recovery the workers stop anyway (the test then fails)
BREAKER = {
    "window": "200ms",  # trips soon after the outage begins, whatever came before
    "min_calls": 5,
    "failure_ratio": 0.5,
    "open_for": f"{OPEN_FOR}s",
    "open_for_max": f"{OPEN_FOR_MAX}s",
    "half_open_probes": 1,
}
# room for a loaded machine: a slow first chunk must not pass for a failure of the provider
PATIENT = {"first_token_timeout": "2s", "idle_timeout": "2s"}


@dataclass(frozen=True, slots=True)
class Call:
    started: float
    ended: float
    provider: str


class Transitions:
    """openai's breaker transitions, with the monotonic time each happened (the simulator's
    clock too); emitted synchronously, so each is stamped as it happens."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, BreakerChanged) and event.provider == "openai":
            self.seen.append((time.monotonic(), event.new))

    def first(self, state: str, after: float) -> float | None:
        return next((t for t, new in self.seen if new == state and t > after), None)


def sync_ask(gw: Gateway, kind: str) -> str:
    """One complete answer through gw.sync.llm; the provider that gave it."""
    if kind == "chat":
        result: Result[ChatResponse] = gw.sync.llm.chat(ASK, max_tokens=20)
        assert result.value is not None and result.value.text == "echo: Say hello"
        return result.value.provider
    chunks: list[ChatChunk] = list(gw.sync.llm.stream(ASK, max_tokens=20))
    assert "".join(c.text for c in chunks) == "echo: Say hello"
    assert not any(c.restarted for c in chunks)  # a 503 comes before any chunk
    return chunks[-1].provider


async def async_ask(gw: Gateway, kind: str) -> str:
    if kind == "chat":
        result: Result[ChatResponse] = await gw.llm.chat(ASK, max_tokens=20)
        assert result.value is not None and result.value.text == "echo: Say hello"
        return result.value.provider
    chunks: list[ChatChunk] = [chunk async for chunk in gw.llm.stream(ASK, max_tokens=20)]
    assert "".join(c.text for c in chunks) == "echo: Say hello"
    assert not any(c.restarted for c in chunks)
    return chunks[-1].provider


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_an_outage_of_the_primary_under_steady_traffic(
    simulator: Simulator, mode: str, kind: str
) -> None:
    openai_routes.mount(simulator, "/openai")
    anthropic_routes.mount(simulator, "/anthropic")
    gw = gateway(simulator, openai={"breaker": BREAKER, **PATIENT}, anthropic=PATIENT)
    transitions = Transitions()
    gw.events.subscribe(transitions)
    outage = simulator.inject(Fault.status(503), prefix="/openai", after=WARMUP, duration=OUTAGE)
    assert outage.ends_at is not None
    recovered = outage.ends_at
    calls: list[Call] = []
    lock = threading.Lock()

    def done() -> bool:
        """Stop once openai's breaker has closed after the recovery and served a while."""
        now = time.monotonic()
        closed = transitions.first("closed", after=outage.starts_at)
        return (closed is not None and now > closed + AFTER_CLOSE) or now > recovered + GIVE_UP

    def sync_worker() -> None:
        while not done():
            started = time.monotonic()
            provider = sync_ask(gw, kind)
            with lock:
                calls.append(Call(started, time.monotonic(), provider))

    async def async_worker() -> None:
        while not done():
            started = time.monotonic()
            provider = await async_ask(gw, kind)
            calls.append(Call(started, time.monotonic(), provider))

    try:
        if mode == "sync":
            await asyncio.gather(*(asyncio.to_thread(sync_worker) for _ in range(WORKERS)))
        else:
            await asyncio.gather(*(async_worker() for _ in range(WORKERS)))
    finally:
        await gw.aclose()

    # every call answered (an error in a worker would have raised out of gather); those made
    # wholly within the outage, by the fallback. Unguarded, each of them would have sent openai
    # two requests: enough of them make the bound below on what reached it meaningful.
    during = [c for c in calls if outage.starts_at < c.started and c.ended < recovered]
    assert len(during) >= 20, "too little traffic during the outage to judge the breaker"
    assert {c.provider for c in during} == {"anthropic"}

    # from the trip to the close, openai sees only the probe of each half-open period, plus
    # at most one attempt per worker admitted just before the trip
    opened = transitions.first("open", after=outage.starts_at)
    closed = transitions.first("closed", after=outage.starts_at)
    assert opened is not None and opened < recovered
    assert closed is not None
    reached = [r for r in simulator.requests(prefix="/openai") if opened < r.received_at < closed]
    probes = [t for t, new in transitions.seen if new == "half-open" and opened < t < closed]
    assert 1 <= len(probes) <= math.ceil((closed - opened) / OPEN_FOR) + 1
    assert len(reached) <= len(probes) + WORKERS

    # back on openai within seconds of its recovery: a probe closes the breaker, and every
    # call made from then on is openai's
    assert closed - recovered <= 2.0
    after = [c for c in calls if c.started > closed]
    assert after, "no traffic after the breaker closed"
    assert {c.provider for c in after} == {"openai"}
