"""One provider's live state, shared by every call to it: policies, HTTP clients, events."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pybreaker

from resilient import registry
from resilient.http_clients import LeanAsyncClient, LeanClient
from resilient.per_loop import PerLoop
from resilient.policy.breaker import Breaker
from resilient.policy.bulkhead import Bulkhead
from resilient.policy.classify import Classifier
from resilient.policy.ratelimit import RateLimiter
from resilient.policy.retry import RetryBudget
from resilient.settings import ProviderSettings
from resilient.shared_limiter import SharedRateLimiter
from resilient.stats import AttemptStats
from resilient.telemetry import BreakerChanged, EventBus
from resilient.transport_deadline import deadline_transport
from resilient.units import Rate

MAX_CREDENTIAL_LIMITERS = 4096


class _BreakerEvents(pybreaker.CircuitBreakerListener):
    """Turns pybreaker's state changes into our events."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = old_state.name if old_state is not None else "closed"
        self._bus.emit(BreakerChanged(cb.name or "", old, new_state.name, float(cb.reset_timeout)))


class ProviderRuntime:
    """Built once per provider by the gateway; the pipeline reads it on every attempt."""

    def __init__(
        self,
        settings: ProviderSettings,
        bus: EventBus,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        breaker_storage: pybreaker.CircuitBreakerStorage | None = None,
        shared_redis: Any = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        async_client: str | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.enabled = settings.enabled
        self.bus = bus
        self.clock = clock
        kind = registry.kinds().get(settings.kind)
        self.classifier = Classifier((*(kind.classify if kind else ()), *settings.classify))
        # The kind's adapter (request building for capability facades), when it has one.
        self.adapter: Any = kind.factory(settings) if kind and kind.factory else None
        if kind is not None and kind.transports is not None:
            own, own_async = kind.transports(settings)
            transport, async_transport = transport or own, async_transport or own_async
        self.breaker = Breaker(
            settings.name,
            settings.breaker,
            storage=breaker_storage,
            listeners=[_BreakerEvents(bus)],
            clock=wall_clock,
        )
        self._shared_redis = shared_redis
        self.limiter: RateLimiter | SharedRateLimiter = self.make_limiter(settings.rate_limit)
        self.bulkhead = Bulkhead(settings.max_concurrent)
        self.stats = AttemptStats(settings.breaker.window)
        t = settings.timeouts
        self._full_attempt_timeout = httpx.Timeout(
            connect=min(t.connect, t.attempt),
            read=min(t.read, t.attempt),
            write=min(t.write, t.attempt),
            pool=t.attempt,
        )
        r = settings.retry
        # settings never change on a runtime (a reload builds a new one): worked out once
        self._natural_deadline = (
            t.total
            if t.total is not None
            else t.attempt * r.attempts + r.backoff_cap * (r.attempts - 1)
        )
        self._full_attempt_phases = self._full_attempt_timeout.as_dict()
        self.budget = RetryBudget(settings.retry)
        self._credential_limiters: dict[bytes, RateLimiter] = {}
        self._lock = threading.Lock()
        self._transport = transport
        self._async_transport = async_transport
        self._aiohttp = async_client == "aiohttp" and async_transport is None
        self._client: httpx.Client | None = None
        # An AsyncClient's connections belong to the loop that opened them: one client per loop.
        self._aclients: PerLoop[LeanAsyncClient] = PerLoop(self._new_aclient)

    def make_limiter(self, rate: Rate | None) -> RateLimiter | SharedRateLimiter:
        """Shared through Redis across processes when the gateway has one, else local."""
        if rate is not None and self._shared_redis is not None:
            return SharedRateLimiter(self._shared_redis, self.name, rate, clock=self.clock)
        return RateLimiter(rate)

    def limiter_for(self, credential: str | None) -> RateLimiter | SharedRateLimiter:
        """The provider's limiter, or one per credential when configured so.

        Credentials are keyed by a digest (no raw token kept as a key), and the oldest
        limiters are dropped past MAX_CREDENTIAL_LIMITERS, so rotating tokens cannot grow it.
        """
        if credential is None or not self.settings.rate_limit_per_credential:
            return self.limiter
        key = hashlib.blake2b(credential.encode(), digest_size=16).digest()
        limiter = self._credential_limiters.get(key)
        if limiter is None:
            with self._lock:
                limiter = self._credential_limiters.get(key)
                if limiter is None:
                    if len(self._credential_limiters) >= MAX_CREDENTIAL_LIMITERS:
                        del self._credential_limiters[next(iter(self._credential_limiters))]
                    limiter = self._credential_limiters[key] = RateLimiter(self.settings.rate_limit)
        return limiter

    def status(self) -> dict[str, object]:
        """This provider now: what `resilient status` and the health endpoint show."""
        now = self.clock()
        calls, failure_ratio = self.breaker.failure_rate(now)
        return {
            "enabled": self.enabled,
            "breaker": self.breaker.state,
            "open_for": self.breaker.open_for,
            "calls_in_window": calls,
            "failure_rate": round(failure_ratio, 4),
            **self.stats.snapshot(now),
            "limiter_wait": round(self.limiter.headroom(now), 4),
            "paused_for": round(self.limiter.paused_for(now), 4),
            "in_flight": self.bulkhead.in_flight,
        }

    def natural_deadline(self) -> float:
        """How long a call on this provider can take when nothing else bounds it."""
        return self._natural_deadline

    def attempt_phases(self, budget: float) -> dict[str, float | None]:
        """attempt_timeout as the dict of an httpx request's timeout extension."""
        if budget == self.settings.timeouts.attempt:
            return self._full_attempt_phases
        return self.attempt_timeout(budget).as_dict()

    def attempt_timeout(self, budget: float) -> httpx.Timeout:
        """httpx phase timeouts for one attempt that must end within `budget` seconds (the
        usual full-attempt budget is built once, not per attempt)."""
        t = self.settings.timeouts
        if budget == t.attempt:
            return self._full_attempt_timeout
        return httpx.Timeout(
            connect=min(t.connect, budget),
            read=min(t.read, budget),
            write=min(t.write, budget),
            pool=budget,
        )

    @property
    def client(self) -> httpx.Client:
        """A pooled sync client for this provider's base URL (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = LeanClient(
                        base_url=self.settings.base_url or "",
                        transport=self._transport or deadline_transport(),
                        max_response_bytes=self.settings.max_response_bytes,
                    )
        return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        """A pooled async client for the running event loop (created on first use there)."""
        return self._aclients.get(asyncio.get_running_loop())

    def _new_aclient(self, loop: asyncio.AbstractEventLoop) -> LeanAsyncClient:
        return LeanAsyncClient(
            base_url=self.settings.base_url or "",
            transport=self.aiohttp_transport() or self._async_transport,
            max_response_bytes=self.settings.max_response_bytes,
        )

    def aiohttp_transport(self) -> httpx.AsyncBaseTransport | None:
        """A new aiohttp transport when the gateway sends async calls with aiohttp (one per
        event loop: its session belongs to the loop), else None."""
        if not self._aiohttp:
            return None
        from resilient.transport_aiohttp import AiohttpTransport

        return AiohttpTransport()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the sync client and this loop's async client; other loops' go with their loop."""
        self.close()
        await self.aclose_loop_client()

    async def aclose_loop_client(self) -> None:
        """Close the async client of the running loop only (a loop that is about to end)."""
        client = self._aclients.pop(asyncio.get_running_loop())
        if client is not None:
            await client.aclose()
