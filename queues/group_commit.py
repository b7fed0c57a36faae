"""Replay outcomes written to the store in groups: one write per batch, not one per request.

A replayed request's outcome is recorded as soon as it is known, so a worker killed a moment
later re-sends nothing it already delivered. Writing each one on its own costs a thread hop and
a store write per request (about a third of a replay's CPU). Here the first outcome starts a
write at once, and whatever arrives while that write is in flight goes in the next one (group
commit): an idle replayer writes each outcome immediately, a busy one a few hundred at a time,
and every caller still returns only once its own outcome is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from queues.store import Store

_KINDS = ("delivered", "later", "dead")


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._batch: dict[str, list[Any]] = {kind: [] for kind in _KINDS}
        self._durable: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def record(self, settlement: dict[str, Sequence[Any]]) -> None:
        """Adds `settlement` (Store.settle's arguments) to the next write; returns once written."""
        for kind, items in settlement.items():
            self._batch[kind].extend(items)
        if self._durable is None:
            self._durable = asyncio.get_running_loop().create_future()
        durable = self._durable
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        await asyncio.shield(durable)

    async def _write(self) -> None:
        try:
            while self._durable is not None:
                batch, durable = self._batch, self._durable
                self._batch, self._durable = {kind: [] for kind in _KINDS}, None
                try:
                    await asyncio.to_thread(self._store.settle, **batch)
                except Exception as exc:
                    durable.set_exception(exc)
                except BaseException:
                    durable.cancel()
                    raise
                else:
                    durable.set_result(None)
        finally:
            self._writer = None
            if self._durable is not None:  # cancelled with outcomes unwritten: they are not
                self._durable.cancel()
                self._durable = None
