"""The dedupe ledger: what happened to each logical operation, by operation id.

Before a ledgered operation runs, the gateway asks the ledger. Delivered already (a retry by the
application, a replay after a crash): the recorded result is returned and nothing is sent.
Maybe done on provider X (an ambiguous outcome): only X may be tried again, and only if X
honours the operation's idempotency key; no other provider ever sees it. In memory by default;
in Redis when the gateway has one, so every process shares it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, Protocol

import httpx

DELIVERED: Final = "delivered"
AMBIGUOUS: Final = "ambiguous"
DEFAULT_TTL = 7 * 86400.0  # longer than any deferral deadline a sane config sets


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    state: Literal["delivered", "ambiguous"]
    provider: str
    message_id: str | None
    at: float


class LedgeredOperation(Protocol):
    """An operation the gateway deduplicates: it says so with a true `ledger` attribute."""

    ledger: bool
    operation_id: str

    def message_id(self, provider: str, response: httpx.Response | None) -> str | None:
        """The provider's id for what it did, read from its answer."""
        ...


class Ledger(Protocol):
    def get(self, operation_id: str) -> LedgerEntry | None: ...

    def record(self, operation_id: str, entry: LedgerEntry) -> None: ...


class MemoryLedger:
    """Bounded and expiring: the oldest records go first past `max_entries`."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, LedgerEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, operation_id: str) -> LedgerEntry | None:
        with self._lock:
            entry = self._entries.get(operation_id)
            if entry is not None and time.time() - entry.at > self._ttl:
                del self._entries[operation_id]
                return None
            return entry

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries[operation_id] = entry
            self._entries.move_to_end(operation_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class RedisLedger:
    """One key per operation, expiring after `ttl`; shared by every process on the Redis.

    Every record is also kept locally, and while Redis is unreachable the local copy answers:
    the gateway keeps serving, and this process still never repeats what it did itself.
    """

    def __init__(
        self, client: Any, ttl: float = DEFAULT_TTL, prefix: str = "resilient:ledger:"
    ) -> None:
        import redis

        self._redis = client
        self._ttl = int(ttl)
        self._prefix = prefix
        self._local = MemoryLedger(ttl)
        self._errors = (redis.RedisError, OSError)

    @classmethod
    def from_url(cls, url: str) -> RedisLedger:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0))

    def get(self, operation_id: str) -> LedgerEntry | None:
        try:
            raw = self._redis.get(self._prefix + operation_id)
        except self._errors:
            return self._local.get(operation_id)
        return self._local.get(operation_id) if raw is None else LedgerEntry(**json.loads(raw))

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        self._local.record(operation_id, entry)
        with contextlib.suppress(*self._errors):  # kept locally: only others miss it meanwhile
            self._redis.set(self._prefix + operation_id, json.dumps(asdict(entry)), ex=self._ttl)
