"""What the replayer and the CLI need of a place that keeps parked requests.

Two implement it: the SQLite spool (embedded, and the spill when Redis is down) and Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from queues.deferred import DeferredRequest

READY, LEASED, DEAD = "ready", "leased", "dead"
AMBIGUOUS_LETTER = "ambiguous outcome"  # how a maybe-done request's dead-letter reason begins


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored request as listed: state and timing, without decoding the body."""

    id: str
    capability: str
    state: str
    due: float
    created: float
    deadline: float
    tries: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim hands a worker: decoded requests, and the rows that would not decode."""

    requests: list[DeferredRequest]
    corrupt: list[tuple[str, str]]  # (id, why): already moved to the dead letters


class Store(Protocol):
    def put(self, request: DeferredRequest, *, due: float | None = None) -> None:
        """Durable when it returns."""
        ...

    def claim(
        self, capability: str, limit: int, lease: float, now: float | None = None
    ) -> Claimed: ...

    def settle(
        self,
        *,
        delivered: Sequence[str] = (),
        later: Sequence[tuple[DeferredRequest, float]] = (),
        dead: Sequence[tuple[DeferredRequest, str]] = (),
    ) -> None: ...

    def expire(self, now: float | None = None) -> int: ...

    def get(self, request_id: str) -> tuple[Entry, DeferredRequest | None] | None: ...

    def entries(self, state: str | None = None, limit: int = 100) -> list[Entry]: ...

    def make_due(
        self,
        *,
        request_id: str | None = None,
        capabilities: Sequence[str] = (),
        now: float | None = None,
    ) -> int: ...

    def redrive(
        self, request_id: str, now: float | None = None, deadline: float | None = None
    ) -> bool:
        """A dead letter back in line, with a new `deadline` if given. False if none."""
        ...

    def purge(self, request_id: str | None = None) -> int: ...

    def stats(self, now: float | None = None) -> dict[str, float | int]: ...

    def close(self) -> None: ...
