"""The embedded ledger: one SQLite file (WAL, fsync'd commits), shared by the processes that
use the same `spool_path`.

Every claim and outcome is a read-modify-write of one row inside BEGIN IMMEDIATE, which holds
SQLite's write lock across processes; the rules are `resilient.ledger.rules`'. Writes go by
group commit, so callers in flight together pay one fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from resilient.ledger.group_commit import GroupCommitter
from resilient.ledger.rules import (
    DEFAULT_TTL,
    DELIVERED,
    LedgerCommand,
    LedgerEntry,
    apply,
    visible,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (id TEXT PRIMARY KEY, at REAL NOT NULL, entry TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at);
"""
_PRUNE_EVERY = 1000  # batches between deletions of entries older than the TTL


def ledger_path(spool_path: str | Path) -> Path:
    """The ledger's file beside the spool's: `spool.db` -> `spool-ledger.db`."""
    spool = Path(spool_path)
    return spool.with_name(f"{spool.stem}-ledger{spool.suffix or '.db'}")


class SqliteLedger:
    def __init__(self, path: str | Path, ttl: float = DEFAULT_TTL) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ttl = ttl
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the connection: the writer thread and readers
        self._batches = 0
        self._writer: GroupCommitter[LedgerCommand] = GroupCommitter(
            self._write, "resilient-ledger"
        )

    def submit(self, command: LedgerCommand) -> Future[Any]:
        return self._writer.submit(command)

    def _write(self, commands: Sequence[LedgerCommand]) -> list[Any]:
        now = time.time()
        answers: list[Any] = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for command in commands:
                    row = db.execute(
                        "SELECT entry FROM ledger WHERE id = ?", (command.operation_id,)
                    ).fetchone()
                    current = None if row is None else LedgerEntry.from_json(json.loads(row[0]))
                    after, answer = apply(current, command, now)
                    if after is not None:
                        db.execute(
                            "INSERT OR REPLACE INTO ledger VALUES (?, ?, ?)",
                            (command.operation_id, now, json.dumps(after.to_json())),
                        )
                    answers.append(answer)
                self._batches += 1
                if self._batches % _PRUNE_EVERY == 0:
                    db.execute("DELETE FROM ledger WHERE at < ?", (now - self._ttl,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return answers

    def get(self, operation_id: str) -> LedgerEntry | None:
        """The entry as callers must read it (a dead holder's claim is ambiguous)."""
        with self._lock:
            row = self._db.execute(
                "SELECT entry FROM ledger WHERE id = ?", (operation_id,)
            ).fetchone()
        if row is None:
            return None
        return visible(LedgerEntry.from_json(json.loads(row[0])), time.time())

    def record_delivered(self, operation_id: str, provider: str, message_id: str | None) -> None:
        """Delivered by another operation on its behalf (a cross-channel fallback)."""
        entry = LedgerEntry(DELIVERED, provider, time.time(), message_id=message_id)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO ledger VALUES (?, ?, ?)",
                (operation_id, entry.at, json.dumps(entry.to_json())),
            )

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._db.close()
