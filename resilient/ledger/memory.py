"""A ledger in this process's memory: the same rules, nothing durable. For tests and for the
benchmark's baseline (`Gateway(settings, ledger=MemoryLedger())`); never a production choice,
as a restart forgets every claim."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from resilient.ledger.rules import LedgerCommand, LedgerEntry, apply, visible


class MemoryLedger:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, LedgerEntry] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def write(self, command: LedgerCommand) -> Any:
        with self._lock:
            after, answer = apply(self._entries.get(command.operation_id), command, time.time())
            if after is not None:
                self._store(command.operation_id, after)
        return answer

    def submit(self, command: LedgerCommand) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(self.write(command))
        return future

    def _store(self, operation_id: str, entry: LedgerEntry) -> None:
        self._entries[operation_id] = entry
        self._entries.move_to_end(operation_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def get(self, operation_id: str) -> LedgerEntry | None:
        with self._lock:
            entry = self._entries.get(operation_id)
        return None if entry is None else visible(entry, time.time())

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        with self._lock:
            self._store(operation_id, entry)

    def close(self) -> None:
        pass
