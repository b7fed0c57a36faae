"""The deferral backend a gateway gets (the `resilient.deferral` entry point).

Embedded default (no Redis configured): parked requests go to the SQLite spool, and the gateway
replays them in a background thread for as long as it is open.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from queues.deferred import Codec, DeferredRequest
from queues.replayer import Replayer
from queues.spool import Spool
from resilient.deferral import DeferrableOperation
from resilient.result import Attempt

if TYPE_CHECKING:
    from resilient.gateway import Gateway


class EmbeddedBackend:
    def __init__(self, gateway: Gateway, *, replay: bool = True) -> None:
        settings = gateway.settings
        self.spool = Spool(settings.spool_path, Codec())
        self._gateway = gateway
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.replayer = Replayer(gateway, self.spool)
        if replay:
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._replay_forever, args=(ready,), name="resilient-replay", daemon=True
            )
            self._thread.start()
            ready.wait()

    def park(self, capability: str, op: DeferrableOperation, attempts: tuple[Attempt, ...]) -> str:
        now = time.time()
        request = DeferredRequest(
            capability=capability,
            operation=op.kind,
            payload=op.payload(),
            operation_id=op.operation_id,
            created_at=now,
            deadline=now + self._gateway.settings.capabilities[capability].deadline,
        ).with_attempts(attempts, replayed=False)
        self.spool.put(request)
        return request.id

    def _replay_forever(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self.replayer.run(self._stop)
            for rt in self._gateway.providers.values():
                await rt.aclose_loop_client()

        asyncio.run(main())

    def close(self) -> None:
        """Stop replaying; a replay cut short keeps its lease and comes due again later."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
            self._thread = None
        self.spool.close()


def create(gateway: Gateway) -> EmbeddedBackend:
    return EmbeddedBackend(gateway, replay=gateway.background_replay)
