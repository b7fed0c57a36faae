"""The shared ledger: one Redis key per operation, read and written under WATCH, so every
process on the Redis sees one claim per operation id; the rules are `resilient.ledger.rules`'.

While Redis is unreachable, the process falls back to the SQLite ledger beside its spool: it
keeps serving, and the processes sharing that file (this host's) still see each other's claims;
processes on other hosts do not, until Redis is back. After an error Redis is left alone for
RETRY_AFTER seconds, so an outage costs each call no connect timeout of its own.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future
from typing import Any

from resilient.ledger.rules import (
    DEFAULT_TTL,
    LedgerCommand,
    LedgerEntry,
    apply,
    visible,
)
from resilient.ledger.sqlite import SqliteLedger

RETRY_AFTER = 1.0  # seconds between tries of a Redis that failed


class RedisLedger:
    def __init__(
        self,
        client: Any,
        local: SqliteLedger,
        ttl: float = DEFAULT_TTL,
        prefix: str = "resilient:ledger:",
    ) -> None:
        import redis

        self._redis = client
        self._local = local
        self._ttl = int(ttl)
        self._prefix = prefix
        self._errors = (redis.RedisError, OSError)
        self._watch_error = redis.WatchError
        self._down_until = 0.0

    def submit(self, command: LedgerCommand) -> Future[Any]:
        """Applied at once (a Redis round trip or three); the future is already done."""
        if self._away():
            return self._local.submit(command)
        future: Future[Any] = Future()
        future.set_result(self.write(command))
        return future

    def write(self, command: LedgerCommand) -> Any:
        if not self._away():
            try:
                return self._apply(command)
            except self._errors:
                self._down_until = time.monotonic() + RETRY_AFTER
        return self._local.write(command)

    def _away(self) -> bool:
        return time.monotonic() < self._down_until

    def _apply(self, command: LedgerCommand) -> Any:
        key = self._prefix + command.operation_id
        while True:
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    current = None if raw is None else LedgerEntry.from_json(json.loads(raw))
                    after, answer = apply(current, command, time.time())
                    if after is None:
                        pipe.unwatch()
                        return answer
                    pipe.multi()
                    pipe.set(key, json.dumps(after.to_json()), ex=self._ttl)
                    pipe.execute()
                    return answer
                except self._watch_error:
                    continue  # another process wrote it meanwhile: read again

    def get(self, operation_id: str) -> LedgerEntry | None:
        raw = None
        if not self._away():
            try:
                raw = self._redis.get(self._prefix + operation_id)
            except self._errors:
                self._down_until = time.monotonic() + RETRY_AFTER
        if raw is None:
            return self._local.get(operation_id)
        return visible(LedgerEntry.from_json(json.loads(raw)), time.time())

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        try:
            self._redis.set(self._prefix + operation_id, json.dumps(entry.to_json()), ex=self._ttl)
        except self._errors:
            self._local.record(operation_id, entry)

    def close(self) -> None:
        """Closes the local fallback; the Redis client is the gateway's, shared with breakers."""
        self._local.close()
