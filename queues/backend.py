"""The deferral backends a gateway gets (through the `resilient.deferral` entry point).

- Embedded (no Redis configured): parked requests go to the SQLite spool, and the gateway
  replays them in a background thread for as long as it is open.
- Redis configured: parked requests go to Redis, shared by every process; `resilient worker`
  replays them. When Redis cannot be reached, a deferral spills to the local spool instead of
  failing, and a mover thread carries the spill into Redis once it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from queues.deferred import Codec, DeferredRequest
from queues.replayer import Replayer
from queues.spool import Spool
from queues.store import Store
from resilient.deferral import DeferrableOperation
from resilient.result import Attempt

if TYPE_CHECKING:
    from resilient.gateway import Gateway

SPILL_CHECK_INTERVAL = 1.0  # seconds between looks at the spill while Redis was away
SPILL_BATCH = 500


def _codec(gateway: Gateway) -> Codec:
    key = gateway.settings.encryption_key
    return Codec(key.reveal() if key else None)


def _parked(
    gateway: Gateway, capability: str, op: DeferrableOperation, attempts: tuple[Attempt, ...]
) -> DeferredRequest:
    now = time.time()
    return DeferredRequest(
        capability=capability,
        operation=op.kind,
        payload=op.payload(),
        operation_id=op.operation_id,
        created_at=now,
        deadline=now + gateway.settings.capabilities[capability].deadline,
    ).with_attempts(attempts, replayed=False)


class _Background:
    """A daemon thread running one coroutine on its own event loop until `stop()`."""

    def __init__(self, name: str, work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self._work = work
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=name, daemon=True)
        self._thread.start()
        ready.wait()

    def _main(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._work(self._stop)

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


class EmbeddedBackend:
    def __init__(self, gateway: Gateway, *, replay: bool = True) -> None:
        self.spool = Spool(gateway.settings.spool_path, _codec(gateway))
        self.store: Store = self.spool
        self._gateway = gateway
        self.replayer = Replayer(gateway, self.spool)
        self._background = _Background("resilient-replay", self._replay) if replay else None

    def park(self, capability: str, op: DeferrableOperation, attempts: tuple[Attempt, ...]) -> str:
        request = _parked(self._gateway, capability, op, attempts)
        self.spool.put(request)
        return request.id

    async def _replay(self, stop: asyncio.Event) -> None:
        await self.replayer.run(stop)
        for rt in self._gateway.providers.values():
            await rt.aclose_loop_client()

    def close(self) -> None:
        """Stop replaying; a replay cut short keeps its lease and comes due again later."""
        if self._background is not None:
            self._background.stop()
        self.spool.close()


class RedisBackend:
    def __init__(self, gateway: Gateway, redis_url: str) -> None:
        from queues.redis_store import RedisStore

        self._gateway = gateway
        self.redis = RedisStore.from_url(redis_url, _codec(gateway))
        self.store: Store = self.redis
        self.spill = Spool(gateway.settings.spool_path, _codec(gateway))
        self.replayer = Replayer(gateway, self.redis)
        self.spilled = 0
        self._mover = _Background("resilient-spill-mover", self._move_spill)

    def park(self, capability: str, op: DeferrableOperation, attempts: tuple[Attempt, ...]) -> str:
        import redis

        request = _parked(self._gateway, capability, op, attempts)
        try:
            self.redis.put(request)
        except redis.RedisError:
            self.spill.put(request)  # durable locally; carried into Redis once it is back
            self.spilled += 1
        return request.id

    async def _move_spill(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.move_spill)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SPILL_CHECK_INTERVAL)

    def move_spill(self) -> int:
        """Carry spilled requests into Redis; returns how many moved (0 while Redis is away)."""
        if not self.spill.stats()["ready"] or not self.redis.ping():
            return 0
        import redis

        moved = 0
        for capability in self._gateway.settings.capabilities:
            while True:
                claimed = self.spill.claim(capability, SPILL_BATCH, lease=60.0)
                if not claimed.requests:
                    break
                try:
                    for request in claimed.requests:
                        self.redis.put(request)
                        self.spill.settle(delivered=[request.id])
                        moved += 1
                except redis.RedisError:
                    return moved  # gone again: the rest keep their lease and move later
        return moved

    def close(self) -> None:
        self._mover.stop()
        self.spill.close()
        self.redis.close()


def create(gateway: Gateway) -> EmbeddedBackend | RedisBackend:
    url = gateway.settings.redis_url
    if url:
        return RedisBackend(gateway, url)
    return EmbeddedBackend(gateway, replay=gateway.background_replay)
