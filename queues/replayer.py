"""Replays parked requests through the gateway once a provider of their chain can take them.

Per capability: while every provider of the chain is open or disabled, nothing is claimed.
When one is half-open, a single request is sent as its probe. When one is closed, requests
drain concurrently at a ramp that starts low and climbs to the chain's rate limit. Each replay
goes through the same chain, with the same operation id and idempotency key, and never parks
again: it is delivered, rescheduled with its attempt history, or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from queues.deferred import DeferredRequest
from queues.group_commit import GroupCommit
from queues.ramp import Ramp
from queues.store import AMBIGUOUS_LETTER, Store
from resilient.deferral import decode_operation
from resilient.errors import AmbiguousOutcome, CallFailed, FatalError, ResilientError
from resilient.lookup import asked
from resilient.policy.breaker import CLOSED, HALF_OPEN
from resilient.telemetry import DeadLettered

if TYPE_CHECKING:
    from resilient.gateway import Gateway
    from resilient.runtime import ProviderRuntime
    from resilient.settings import GatewaySettings

WAIT, PROBE, DRAIN = "wait", "probe", "drain"
LEASE_MARGIN = 5.0  # a claim outlives the longest replay (the call deadline) by this much


def batch_within_lease(ramp: Ramp, now: float, most: int) -> int:
    """How many requests one claim may take: what the ramp lets start within LEASE_MARGIN, so
    the last of them still ends (by the call deadline) before the claim's lease does."""
    return max(1, min(most, int(ramp.rate(now) * LEASE_MARGIN)))


def worker_settings(settings: GatewaySettings) -> GatewaySettings:
    """A replay worker's settings: aiohttp as its async client when installed and the config
    leaves the choice open, since a worker moves as many requests as its HTTP client can."""
    if settings.async_client is None and importlib.util.find_spec("aiohttp") is not None:
        return dataclasses.replace(settings, async_client="aiohttp")
    return settings


@dataclass
class ReplayStats:
    delivered: int = 0
    rescheduled: int = 0
    dead: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Replayer:
    def __init__(
        self,
        gateway: Gateway,
        spool: Store,
        *,
        batch: int = 500,
        concurrency: int = 32,
        max_tries: int = 20,
        retry_delay: tuple[float, float] = (1.0, 60.0),
        ramp_start: float = 20.0,
        ramp_ceiling: float = 5000.0,
        poll: float = 0.25,
    ) -> None:
        self.gateway = gateway
        self.spool = spool
        self.batch = batch
        self.max_tries = max_tries
        self.retry_delay = retry_delay
        self.poll = poll
        self.stats = ReplayStats()
        self._concurrency = concurrency
        self._ramps = {
            name: Ramp(min(ramp_start, ceiling), ceiling)
            for name, ceiling in (
                (cap, self._ceiling(cap, ramp_ceiling))
                for cap, settings in gateway.settings.capabilities.items()
                if settings.defer
            )
        }

    def _ceiling(self, capability: str, default: float) -> float:
        """The chain's first rate limit: replay never outruns what the provider allows."""
        for rt in self.gateway.chain(capability):
            if rt.settings.rate_limit is not None:
                return min(default, rt.settings.rate_limit.per_second)
        return default

    def mode(self, capability: str) -> str:
        """DRAIN when a provider of the chain is closed, PROBE when one is half-open, else WAIT."""
        states = {rt.breaker.state for rt in self.gateway.chain(capability) if rt.enabled}
        if CLOSED in states:
            return DRAIN
        return PROBE if HALF_OPEN in states else WAIT

    async def drain_once(self) -> int:
        """One pass over every deferring capability; returns how many requests were settled."""
        settled = await self.expire()
        for capability in self._ramps:
            settled += await self.drain(capability)
        return settled

    async def expire(self) -> int:
        """Dead-letter whatever waited past its deadline, whatever its chain's state."""
        expired = await asyncio.to_thread(self.spool.expire)
        if expired:
            self.stats.dead += expired
            reason = "deadline passed before delivery"
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + expired
        return expired

    async def drain(self, capability: str) -> int:
        """One claim of `capability`'s due requests, replayed as its chain allows."""
        ramp = self._ramps[capability]
        mode = self.mode(capability)
        if mode == WAIT:
            ramp.restart()
            return 0
        limit = 1 if mode == PROBE else batch_within_lease(ramp, time.monotonic(), self.batch)
        lease = self.gateway.call_deadline(capability) + LEASE_MARGIN
        claimed_at = time.monotonic()
        claimed = await asyncio.to_thread(self.spool.claim, capability, limit, lease)
        for _, why in claimed.corrupt:
            self._count("dead", f"corrupt payload: {why}")
        settled = len(claimed.corrupt)
        if claimed.requests:
            settled += await self._replay_all(claimed.requests, ramp, claimed_at + LEASE_MARGIN)
        return settled

    @property
    def capabilities(self) -> list[str]:
        """The capabilities whose parked requests this replayer drains."""
        return list(self._ramps)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until `stop` is set; idle passes sleep `poll` seconds."""
        while not stop.is_set():
            try:
                busy = await self.drain_once()
            except ResilientError:
                busy = 0  # e.g. the chain changed under us: try again next pass
            if not busy:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)

    async def _replay_all(
        self, requests: list[DeferredRequest], ramp: Ramp, last_start: float
    ) -> int:
        """Replay a claimed batch at the ramp's pace. A request whose turn comes after
        `last_start` (its lease would end before its call could) is handed back unsent."""
        gate = asyncio.Semaphore(self._concurrency)
        commit = GroupCommit(self.spool)

        async def replay(request: DeferredRequest) -> None:
            async with gate:
                if time.monotonic() > last_start:
                    await commit.record({"later": [(request, time.time())]})
                    return
                settlement = await self._replay_one(request, ramp)
            # Recorded the moment it is known: a worker killed now re-sends nothing it already
            # delivered (the window left is this one group's store write). The write does not
            # hold a sending slot.
            await commit.record(settlement)
            if settlement.get("delivered"):
                self.stats.delivered += 1
            elif settlement.get("later"):
                self.stats.rescheduled += 1
            for buried, why in settlement.get("dead", ()):
                self._count("dead", why)
                self._dead_letter(buried.capability, buried.id, why)

        tasks = []
        try:
            for request in requests:
                wait = ramp.reserve(time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(replay(request)))
            await asyncio.gather(*tasks)
        finally:
            await asyncio.to_thread(commit.close)
        return len(requests)

    async def _replay_one(self, request: DeferredRequest, ramp: Ramp) -> dict[str, Any]:
        """Replay once; returns the `Store.settle` arguments that record the outcome."""
        now = time.time()
        if now > request.deadline:
            return {"dead": [(request, "deadline passed before delivery")]}
        try:
            op = decode_operation(request.operation, request.payload)
            remaining = request.deadline - now
            await self.gateway.acall(
                request.capability,
                op,
                defer=False,
                replay_of=request.id,
                deadline=min(remaining, self.gateway.call_deadline(request.capability)),
            )
        except FatalError as exc:
            history = request.with_attempts(exc.attempts, replayed=True)
            return {"dead": [(history, "rejected by provider")]}
        except AmbiguousOutcome as exc:
            ramp.restart()  # often the drain itself outran the provider (or us): slow down
            updated = request.with_attempts(exc.attempts, replayed=True)
            if self._safe_to_repeat(op, exc):
                return self._later(updated, now)  # its key makes a repeat a no-op if it was done
            if not asked(exc.attempts) and self._can_ask(op, exc):
                return self._later(updated, now)  # the next replay asks the provider first
            reason = f"{AMBIGUOUS_LETTER}: may have been delivered; reconcile before redriving"
            return {"dead": [(updated, reason)]}
        except CallFailed as exc:
            ramp.restart()
            return self._later(request.with_attempts(exc.attempts, replayed=True), now)
        except ResilientError as exc:
            return {"dead": [(request, f"cannot replay: {exc}")]}
        return {"delivered": [request.id]}

    def _later(self, updated: DeferredRequest, now: float) -> dict[str, Any]:
        """Due again after a backoff, or a dead letter once it has had `max_tries` replays."""
        if updated.tries >= self.max_tries:
            return {"dead": [(updated, f"not delivered after {updated.tries} replays")]}
        low, high = self.retry_delay
        return {"later": [(updated, now + min(high, low * 2.0 ** (updated.tries - 1)))]}

    def _safe_to_repeat(self, op: Any, exc: AmbiguousOutcome) -> bool:
        """Whether the provider that may have acted honours the operation's idempotency key,
        so a repeat cannot do it twice."""
        provider = self._maybe_done_on(exc)
        return provider is not None and bool(op.idempotent_on(provider))

    def _can_ask(self, op: Any, exc: AmbiguousOutcome) -> bool:
        """Whether the provider that may have acted can be asked what it did (a ledgered
        operation whose adapter has a lookup): then a replay asks before anything is sent."""
        provider = self._maybe_done_on(exc)
        return provider is not None and op.ledger and bool(op.can_look_up(provider))

    def _maybe_done_on(self, exc: AmbiguousOutcome) -> ProviderRuntime | None:
        last = exc.attempts[-1].provider if exc.attempts else None
        return self.gateway.providers.get(last or "")

    def _dead_letter(self, capability: str, deferral_id: str, reason: str) -> None:
        events = self.gateway.events
        if events.active:
            events.emit(DeadLettered(capability, deferral_id, reason))

    def _count(self, outcome: str, reason: str) -> None:
        if outcome == "dead":
            self.stats.dead += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
