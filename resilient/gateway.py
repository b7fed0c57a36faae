"""The Gateway: providers built once from config (a Roster, which ops' overrides and reloads
change), capabilities on top, and the call path (ledger, chain, parking, result)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Generator, Sequence
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any, cast

import httpx

from resilient import http_capability as _http_capability  # registers the "http" facade
from resilient import registry
from resilient.chain import ChainOutcome, Holding, chain_plan
from resilient.deferral import DeferrableOperation, DeferralBackend
from resilient.errors import (
    AmbiguousOutcome,
    CallFailed,
    ChainExhausted,
    ConfigError,
    DeadlineExceeded,
    FatalError,
    InvalidRequest,
    OperationInProgress,
    ResilientError,
)
from resilient.exactly_once import Known, LedgeredOperation, Walked, once_plan, reconcile_plan
from resilient.executors import run_async, run_sync
from resilient.ledger import AMBIGUOUS, CLAIMED, DEFERRED, DELIVERED, Ledger, LedgerEntry, Settle
from resilient.ledger.redis import RedisLedger
from resilient.ledger.sqlite import SqliteLedger, ledger_path
from resilient.ops import OpsLoop
from resilient.overrides import OverrideState
from resilient.pipeline import Operation
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt, Result, Status
from resilient.roster import Roster
from resilient.runtime import ProviderRuntime
from resilient.settings import GatewaySettings, ProviderSettings
from resilient.shared_breaker import SharedBreakerStorage
from resilient.telemetry import CallFinished, EventBus, log_event
from resilient.transport import AsyncResilientTransport, ResilientTransport

del _http_capability


class Gateway:
    """Entry point of the library: `Gateway.from_config("resilient.toml")`.

    `gw.<capability>` is the async facade of a configured capability (`gw.email.send(...)`),
    `gw.sync.<capability>` the blocking one. One gateway may serve threads and an event loop at
    once: policy state is shared and thread-safe.
    """

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        background_replay: bool = True,
        ops: bool = True,
        ledger: Ledger | None = None,
    ) -> None:
        """`background_replay=False`: park deferrals but leave replaying to `resilient worker`.
        `ops=False`: no ops loop (no live overrides, no published status). `ledger`: where
        operations are claimed (default: SQLite beside the spool, or Redis when configured)."""
        settings = settings or GatewaySettings()
        self.background_replay = background_replay
        self.events = EventBus()
        self.events.subscribe(log_event)
        self._transports = (transport, async_transport)
        self._shared = self._shared_redis(settings.redis_url)
        self._async_client = settings.async_client
        self._roster = Roster(settings, self._runtime)
        self._facades: dict[str, Any] = {}
        self._sync_facades: dict[str, Any] = {}
        self.sync = SyncGateway(self)
        self._lock = threading.Lock()
        self._ledger = ledger
        self._deferral: DeferralBackend | None = None
        if any(cap.defer for cap in settings.capabilities.values()):
            self._deferral = self._deferral_backend()  # the embedded one replays while open
        self._ops = OpsLoop(self) if ops else None

    @property
    def settings(self) -> GatewaySettings:
        """The config in force (a reload replaces it)."""
        return self._roster.settings

    @property
    def overrides(self) -> OverrideState:
        """Ops' live overrides in force."""
        return self._roster.overrides

    def _runtime(self, settings: ProviderSettings) -> ProviderRuntime:
        shared = self._shared
        return ProviderRuntime(
            settings,
            self.events,
            transport=self._transports[0],
            async_transport=self._transports[1],
            async_client=self._async_client,
            breaker_storage=SharedBreakerStorage(shared, settings.name) if shared else None,
            shared_redis=shared,
        )

    @staticmethod
    def _shared_redis(url: str | None) -> Any:
        """The Redis client breakers share state through, when the config names one."""
        if not url:
            return None
        import redis

        return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def _deferral_backend(self) -> DeferralBackend:
        """The installed backend (the `queues` package, found through the
        `resilient.deferral` entry point, so the core never imports it), built for us."""
        found = entry_points(group="resilient.deferral")
        if not found:
            raise ResilientError(
                "a capability has defer = true but no deferral backend is installed "
                "(the `queues` package of resilient-gateway registers one)"
            )
        factory = next(iter(found)).load()
        backend: DeferralBackend = factory(self)
        return backend

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Gateway:
        """Build from a TOML/YAML file, or `$RESILIENT_CONFIG`, or the embedded defaults."""
        from resilient.config import load_settings

        return cls(load_settings(path))

    # -- providers and capabilities ----------------------------------------------------------

    def provider(self, name: str) -> ProviderRuntime:
        providers = self._roster.providers
        try:
            return providers[name]
        except KeyError:
            raise ResilientError(
                f"no provider {name!r} in {self.settings.source}; "
                f"configured: {', '.join(providers) or 'none'}"
            ) from None

    @property
    def providers(self) -> dict[str, ProviderRuntime]:
        return dict(self._roster.providers)

    def capability(self, name: str) -> Any:
        """The async facade of capability `name` (what `gw.<name>` returns)."""
        return self._facade(name, self._facades, sync=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.capability(name)

    def _facade(self, name: str, cache: dict[str, Any], *, sync: bool) -> Any:
        facade = cache.get(name)
        if facade is None:
            chains = self._roster.chains
            if name not in chains:
                raise AttributeError(
                    f"no capability {name!r} in {self.settings.source}; "
                    f"configured: {', '.join(chains) or 'none'}"
                )
            kinds = registry.facade(self._roster.capability_kind(name))
            make = kinds.sync_facade if sync else kinds.async_facade
            facade = cache[name] = make(self, name)
        return facade

    # -- calls ------------------------------------------------------------------------------

    def chain(self, capability: str) -> tuple[ProviderRuntime, ...]:
        """The providers of `capability`, in fallback order."""
        chains = self._roster.chains
        try:
            return chains[capability]
        except KeyError:
            raise ResilientError(
                f"no capability {capability!r} in {self.settings.source}; "
                f"configured: {', '.join(chains) or 'none'}"
            ) from None

    @property
    def deferral(self) -> DeferralBackend:
        """The deferral backend (created on first use when no capability defers by default)."""
        with self._lock:
            if self._deferral is None:
                self._deferral = self._deferral_backend()
            return self._deferral

    def call_deadline(self, capability: str) -> float:
        """Seconds a call of `capability` may take: its `timeout`, else what its chain allows."""
        timeout = self.settings.capabilities[capability].timeout
        if timeout is not None:
            return timeout
        return sum(rt.natural_deadline() for rt in self.chain(capability))

    def call(
        self,
        capability: str,
        op: Operation,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
        replay_of: str | None = None,
        providers: Sequence[str] | None = None,
    ) -> Result[httpx.Response]:
        """Run `op` along the capability's chain, blocking.

        Returns a delivered result, or a deferred one when the chain is exhausted and the call
        may wait (`defer`: None follows the capability's config). Raises CallFailed subclasses.
        `replay_of` marks the replay of a parked request (in events), and never parks again.
        `providers` limits the chain to those of its providers (in chain order).
        """
        chain = self._chain_for(capability, op, providers)
        parkable = None if replay_of else self._parkable(capability, op, defer)
        started = chain[0].clock()
        until = started + (self.call_deadline(capability) if deadline is None else deadline)
        if not op.ledger:
            end = run_sync(chain_plan(capability, chain, op, until, self.events), op)
            latency = chain[0].clock() - started
            if parkable is not None and end.outcome is Outcome.FAILOVER:
                if end.response is not None:
                    end.response.close()
                return self._park(capability, parkable, end, latency, None)
            return self._finish(capability, end, latency, replay_of)
        plan = self._once(capability, chain, op, until, parkable, replay_of)
        walked = run_sync(plan, op, self.ledger)
        if isinstance(walked, Known):
            return self._known(capability, op, walked)
        end, latency = walked.end, chain[0].clock() - started
        if walked.parking and parkable is not None:
            if end.response is not None:
                end.response.close()
            return self._park(capability, parkable, end, latency, walked.held)
        return self._finish(capability, end, latency, replay_of)

    async def acall(
        self,
        capability: str,
        op: Operation,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
        replay_of: str | None = None,
        providers: Sequence[str] | None = None,
    ) -> Result[httpx.Response]:
        """`call` on the running event loop; parking runs in a thread, off the loop."""
        chain = self._chain_for(capability, op, providers)
        parkable = None if replay_of else self._parkable(capability, op, defer)
        started = chain[0].clock()
        until = started + (self.call_deadline(capability) if deadline is None else deadline)
        if not op.ledger:
            end = await run_async(chain_plan(capability, chain, op, until, self.events), op)
            latency = chain[0].clock() - started
            if parkable is not None and end.outcome is Outcome.FAILOVER:
                if end.response is not None:
                    await end.response.aclose()
                return await asyncio.to_thread(self._park, capability, parkable, end, latency, None)
            return self._finish(capability, end, latency, replay_of)
        plan = self._once(capability, chain, op, until, parkable, replay_of)
        walked = await run_async(plan, op, self.ledger)
        if isinstance(walked, Known):
            return self._known(capability, op, walked)
        end, latency = walked.end, chain[0].clock() - started
        if walked.parking and parkable is not None:
            if end.response is not None:
                await end.response.aclose()
            return await asyncio.to_thread(
                self._park, capability, parkable, end, latency, walked.held
            )
        return self._finish(capability, end, latency, replay_of)

    def _chain_for(
        self, capability: str, op: Operation, only: Sequence[str] | None
    ) -> tuple[ProviderRuntime, ...]:
        """The chain this call may use: the capability's, limited to `only` (or to the
        operation's own bound, such as a post's account, which holds at replay too)."""
        chain = self.chain(capability)
        if only is None:
            only = getattr(op, "providers", None)
        if only is not None:
            chain = tuple(rt for rt in chain if rt.name in only)
            if not chain:
                raise ResilientError(
                    f"{capability}: none of {', '.join(only)} is in its chain "
                    f"({', '.join(rt.name for rt in self.chain(capability))})"
                )
        return chain

    def _once(
        self,
        capability: str,
        chain: tuple[ProviderRuntime, ...],
        op: Operation,
        until: float,
        parkable: DeferrableOperation | None,
        replay_of: str | None,
    ) -> Generator[Any, Any, Known | Walked]:
        return once_plan(
            capability,
            chain,
            self._roster.providers,
            cast(LedgeredOperation, op),
            until,
            self.events,
            parkable=parkable is not None,
            replay_of=replay_of,
        )

    def _known(self, capability: str, op: Operation, known: Known) -> Result[httpx.Response]:
        """The result of a call that found its operation in the ledger (or found it out by a
        lookup) and sent it nowhere."""
        entry, attempts = known.entry, known.attempts
        operation_id = cast(LedgeredOperation, op).operation_id
        if entry.state == DELIVERED:
            if self.events.routine:
                self.events.emit(
                    CallFinished(capability, "delivered", entry.provider, attempts, 0.0)
                )
            return Result("delivered", entry.provider, attempts)
        if entry.state == DEFERRED:
            return Result("deferred", None, attempts, deferral_id=entry.deferral_id)
        if entry.state == CLAIMED:
            raise OperationInProgress(
                f"{capability}: operation {operation_id!r} is being carried out by another "
                f"call (on {entry.provider}); its outcome was not known by this call's deadline",
                attempts,
            )
        where = (
            f"by {entry.provider}, which can neither deduplicate it nor tell"
            if entry.provider
            else "or parked, by a process that died meanwhile"
        )
        raise AmbiguousOutcome(
            f"{capability}: operation {operation_id!r} may already have been done {where}: "
            "reconcile there first",
            attempts,
        )

    def reconcile(self, op: Operation) -> tuple[LedgerEntry | None, tuple[Attempt, ...]]:
        """Ask the provider an ambiguous operation may have been done on what it did, and
        record the answer (delivered, failed: free to send again, or still ambiguous). Returns
        the ledger entry after it, and the lookup made; an operation that is not ambiguous, or
        whose provider can't be asked, is returned as it stands."""
        ledgered = cast(LedgeredOperation, op)
        entry = self.ledger.get(ledgered.operation_id)
        if entry is None or entry.state != AMBIGUOUS:
            return entry, ()
        rt = self._roster.providers.get(entry.provider or "")
        if rt is None or not ledgered.can_look_up(rt):
            return entry, ()
        plan = reconcile_plan(ledgered, rt, entry, rt.clock() + rt.natural_deadline())
        settled: tuple[LedgerEntry, tuple[Attempt, ...]] = run_sync(plan, op, self.ledger)
        return settled

    @property
    def ledger(self) -> Ledger:
        """The operation ledger (opened on first use: SQLite beside the spool, or Redis)."""
        with self._lock:
            if self._ledger is None:
                local = SqliteLedger(ledger_path(self.settings.spool_path))
                self._ledger = RedisLedger(self._shared, local) if self._shared else local
            return self._ledger

    def _parkable(
        self, capability: str, op: Operation, defer: bool | None
    ) -> DeferrableOperation | None:
        """`op` if this call parks when its chain is exhausted; its payload checked up front,
        so a request that could never be replayed is rejected before anything is sent."""
        if defer is False or (defer is None and not self.settings.capabilities[capability].defer):
            return None
        if not isinstance(op, DeferrableOperation):
            if defer:
                raise InvalidRequest(f"{type(op).__name__} operations cannot be deferred")
            return None
        op.payload()
        return op

    def _park(
        self,
        capability: str,
        op: DeferrableOperation,
        end: ChainOutcome,
        latency: float,
        held: Holding | None,
    ) -> Result[httpx.Response]:
        """Park durably, then settle the ledger's claim as deferred to that request."""
        deferral_id = self.deferral.park(capability, op, end.attempts)
        if held is not None:
            settle = Settle(held.operation_id, held.token, DEFERRED, None, deferral_id=deferral_id)
            self.ledger.write(settle)
        if self.events.active:
            self.events.emit(CallFinished(capability, "deferred", None, end.attempts, latency))
        return Result("deferred", None, end.attempts, deferral_id=deferral_id)

    def _finish(
        self, capability: str, end: ChainOutcome, latency: float, replay_of: str | None
    ) -> Result[httpx.Response]:
        status: Status = "delivered" if end.outcome is Outcome.OK else "failed"
        if self.events.routine if status == "delivered" else self.events.active:
            self.events.emit(
                CallFinished(capability, status, end.provider, end.attempts, latency, replay_of)
            )
        if end.outcome is Outcome.OK:
            return Result("delivered", end.provider, end.attempts, end.response)
        error: type[CallFailed]
        if end.outcome is Outcome.FATAL:
            error, text = FatalError, f"{end.provider} rejected the request"
        elif end.outcome is Outcome.AMBIGUOUS:
            error, text = AmbiguousOutcome, f"{end.provider} may have acted; not sent elsewhere"
        elif end.out_of_time:
            error, text = DeadlineExceeded, "deadline passed"
        else:
            error, text = ChainExhausted, "no provider could serve the call"
        raise error(f"{capability}: {text}", end.attempts, end.response) from end.error

    # -- ops: live overrides, config reload, status -----------------------------------------

    @property
    def ops(self) -> OpsLoop:
        """The ops loop: live overrides, config reloads and published status."""
        if self._ops is None:
            raise ResilientError("this gateway was built with ops=False: it has no ops loop")
        return self._ops

    def apply_overrides(self, state: OverrideState) -> None:
        """Make ops' live overrides take effect (the ops loop calls this; any thread may)."""
        self._roster.apply(state)

    def overrides_lapse(self) -> bool:
        """Whether a time-limited override has run out since the overrides were applied."""
        return self._roster.overrides_lapse()

    def chain_fits(self, capability: str, names: Sequence[str]) -> bool:
        """A chain override may only name known providers whose kind serves the capability."""
        return self._roster.chain_fits(capability, names)

    def status(self) -> dict[str, Any]:
        """Every provider, chain and the deferral queue now, as plain JSON-ready data."""
        queue: dict[str, Any] | None = None
        store = getattr(self._deferral, "store", None)
        if store is not None:
            try:
                queue = dict(store.stats())
            except Exception as exc:  # the status of a broken store is that it is broken
                queue = {"error": type(exc).__name__}
        roster = self._roster
        return {
            "source": roster.settings.source,
            "at": time.time(),
            "providers": {name: rt.status() for name, rt in roster.providers.items()},
            "capabilities": {
                name: {"chain": [rt.name for rt in chain]} for name, chain in roster.chains.items()
            },
            "queue": queue,
        }

    def reload(self, settings: GatewaySettings) -> list[str]:
        """Swap in a new config at once. Providers whose settings changed (or are new) are
        rebuilt and start afresh; the others keep their breaker, limiter and clients. Returns
        the rebuilt names. Where state lives (Redis, spool, encryption key) needs a restart."""
        current = self.settings
        if (settings.redis_url, settings.spool_path, settings.encryption_key) != (
            current.redis_url,
            current.spool_path,
            current.encryption_key,
        ):
            raise ConfigError(
                settings.source,
                "gateway",
                "redis_url, spool_path and encryption_key change only with a restart",
            )
        rebuilt, retired = self._roster.reload(settings)
        self._facades.clear()
        self._sync_facades.clear()
        for rt in retired:
            rt.close()
        return rebuilt

    def reload_on_sighup(self) -> None:
        """Reload the config file on SIGHUP too (opt-in: call it from the main thread)."""
        self.ops.reload_on_sighup()

    @property
    def reload_error(self) -> str | None:
        """Why the last config reload failed (the last good config is still in force)."""
        return self._ops.reload_error if self._ops is not None else None

    # -- SDK transports ---------------------------------------------------------------------

    def transport(
        self, provider: str, inner: httpx.BaseTransport | None = None
    ) -> ResilientTransport:
        """An httpx transport routing every request through `provider`'s pipeline."""
        return ResilientTransport(self.provider(provider), inner)

    def async_transport(
        self, provider: str, inner: httpx.AsyncBaseTransport | None = None
    ) -> AsyncResilientTransport:
        return AsyncResilientTransport(self.provider(provider), inner)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        if self._ops is not None:
            self._ops.close()
        if self._deferral is not None:
            self._deferral.close()
        if self._ledger is not None:
            self._ledger.close()
        for rt in self._roster.providers.values():
            rt.close()

    async def aclose(self) -> None:
        if self._ops is not None:
            await asyncio.to_thread(self._ops.close)
        if self._deferral is not None:
            await asyncio.to_thread(self._deferral.close)
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.close)
        for rt in self._roster.providers.values():
            await rt.aclose()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncGateway:
    """`gw.sync`: the blocking facades of the same gateway (same providers, same state)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def capability(self, name: str) -> Any:
        gw = self._gateway
        return gw._facade(name, gw._sync_facades, sync=True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.capability(name)
