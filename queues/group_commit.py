"""Replay outcomes written to the store in groups: one write per batch, not one per request.

A replayed request's outcome is recorded as soon as it is known, so a worker killed a moment
later re-sends nothing it already delivered. Writing each one on its own costs a store write
per request; here outcomes that arrive while a write is in flight go in the next one
(`resilient.group_commit`), and every caller still returns only once its own is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from queues.store import Store
from resilient.group_commit import GroupCommitter

_KINDS = ("delivered", "later", "dead")
Settlement = dict[str, Sequence[Any]]  # Store.settle's arguments


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._writer: GroupCommitter[Settlement] = GroupCommitter(self._write, "resilient-settle")

    async def record(self, settlement: Settlement) -> None:
        """Adds `settlement` to the next write; returns once written."""
        await asyncio.wrap_future(self._writer.submit(settlement))

    def _write(self, settlements: Sequence[Settlement]) -> list[None]:
        batch: dict[str, list[Any]] = {kind: [] for kind in _KINDS}
        for settlement in settlements:
            for kind, items in settlement.items():
                batch[kind].extend(items)
        self._store.settle(**batch)
        return [None] * len(settlements)

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._writer.close()
