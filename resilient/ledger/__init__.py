"""The operation ledger: a durable claim per operation id, made before the first byte is sent,
so an operation with side effects happens at most once across providers, processes, restarts
and crashes. The rules live in `rules`; SQLite (embedded) and Redis (shared) store them."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

from resilient.ledger.rules import (
    AMBIGUOUS,
    CLAIMED,
    DEFERRED,
    DELIVERED,
    FAILED,
    Claim,
    Granted,
    LedgerCommand,
    LedgerEntry,
    Settle,
)


class Ledger(Protocol):
    def submit(self, command: LedgerCommand) -> Future[Any]:
        """Apply a Claim (answers Granted) or a Settle (answers the entry written, or None if
        the claim was no longer the writer's), durably, by the time the future is done."""
        ...

    def write(self, command: LedgerCommand) -> Any:
        """`submit`, blocking until the answer is durable (a sync caller's way: it may write
        on its own thread instead of handing the write to another)."""
        ...

    def get(self, operation_id: str) -> LedgerEntry | None: ...

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        """Write `entry` as it is, outside any claim: what is known from elsewhere (a
        cross-channel fallback delivered it; an operator reconciled it by hand)."""
        ...

    def close(self) -> None: ...


__all__ = [
    "AMBIGUOUS",
    "CLAIMED",
    "DEFERRED",
    "DELIVERED",
    "FAILED",
    "Claim",
    "Granted",
    "Ledger",
    "LedgerCommand",
    "LedgerEntry",
    "Settle",
]
