"""The embedded ledger: one SQLite file (WAL, fsync'd commits), shared by the processes that
use the same `spool_path`.

Every claim and outcome is a read-modify-write of one row inside BEGIN IMMEDIATE, which holds
SQLite's write lock across processes; the rules are `resilient.ledger.rules`'. Writes go by
group commit, so callers in flight together pay one fsync.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from resilient.group_commit import GroupCommitter
from resilient.ledger.rules import (
    CLAIMED,
    DEFAULT_TTL,
    Claim,
    LedgerCommand,
    LedgerEntry,
    apply,
    visible,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    provider TEXT,
    at REAL NOT NULL,
    token TEXT NOT NULL,
    owner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    message_id TEXT,
    deferral_id TEXT
);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at);
"""
_COLUMNS = "state, provider, at, token, owner, lease_until, message_id, deferral_id"
_INSERT = f"INSERT OR IGNORE INTO ledger (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_REPLACE = _INSERT.replace("OR IGNORE", "OR REPLACE")
_SELECT = f"SELECT {_COLUMNS} FROM ledger WHERE id = ?"
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
        self._fsync = True
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the connection: the writer thread and readers
        self._batches = 0
        self._writer: GroupCommitter[LedgerCommand] = GroupCommitter(
            self._write, "resilient-ledger"
        )

    def submit(self, command: LedgerCommand) -> Future[Any]:
        return self._writer.submit(command)

    def write(self, command: LedgerCommand) -> Any:
        return self._writer.write(command)

    def _write(self, commands: Sequence[LedgerCommand]) -> list[Any]:
        """One transaction for the batch; fsync'd when it holds a claim or a move to another
        provider (durable before that provider's first byte). A final outcome is committed
        without an fsync: a process crash keeps it (WAL), and if a power cut loses it the
        claim it ended stands again, ambiguous on its provider: never a second effect."""
        now = time.time()
        fsync = any(isinstance(c, Claim) or c.state == CLAIMED for c in commands)
        answers: list[Any] = []
        with self._lock:
            db = self._db
            if fsync != self._fsync:
                db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
                self._fsync = fsync
            db.execute("BEGIN IMMEDIATE")
            try:
                answers = [self._apply(db, command, now) for command in commands]
                self._batches += 1
                if self._batches % _PRUNE_EVERY == 0:
                    db.execute("DELETE FROM ledger WHERE at < ?", (now - self._ttl,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return answers

    @staticmethod
    def _apply(db: sqlite3.Connection, command: LedgerCommand, now: float) -> Any:
        key = command.operation_id
        if isinstance(command, Claim):  # most claims are of new ids: one INSERT, no SELECT
            fresh, granted = apply(None, command, now)
            assert fresh is not None
            inserted = db.execute(
                _INSERT,
                (key, *_row(fresh)),
            )
            if inserted.rowcount == 1:
                return granted
        row = db.execute(_SELECT, (key,)).fetchone()
        after, answer = apply(None if row is None else LedgerEntry(*row), command, now)
        if after is not None:
            db.execute(
                _REPLACE,
                (key, *_row(after)),
            )
        return answer

    def get(self, operation_id: str) -> LedgerEntry | None:
        """The entry as callers must read it (a dead holder's claim is ambiguous)."""
        with self._lock:
            row = self._db.execute(_SELECT, (operation_id,)).fetchone()
        return None if row is None else visible(LedgerEntry(*row), time.time())

    def record(self, operation_id: str, entry: LedgerEntry) -> None:
        """Written as it is, outside any claim; durable (fsync'd) when this returns."""
        with self._lock:
            if not self._fsync:
                self._db.execute("PRAGMA synchronous=FULL")
                self._fsync = True
            self._db.execute(_REPLACE, (operation_id, *_row(entry)))

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._db.close()


def _row(entry: LedgerEntry) -> tuple[object, ...]:
    """`entry`'s values in _COLUMNS order."""
    return (
        entry.state,
        entry.provider,
        entry.at,
        entry.token,
        entry.owner,
        entry.lease_until,
        entry.message_id,
        entry.deferral_id,
    )
