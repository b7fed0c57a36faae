"""The embedded store for parked requests: one SQLite file (stdlib sqlite3, WAL).

Durable before `put` returns (an fsync'd commit, shared by the puts in flight together).
Workers claim due requests under a lease: a worker that dies mid-replay loses nothing, its
requests come due again when the lease ends.
Outcomes are settled without an fsync: a WAL commit survives the death of the process, and
losing one to a power cut only means a replay the provider's idempotency key absorbs. Several
processes may share one spool file; SQLite's locking keeps claims exclusive.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from queues.deferred import Codec, CorruptRequest, DeferredRequest
from queues.store import DEAD, LEASED, READY, Claimed, Entry
from resilient.group_commit import GroupCommitter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deferred (
    id TEXT PRIMARY KEY,
    capability TEXT NOT NULL,
    state TEXT NOT NULL,
    due REAL NOT NULL,
    created REAL NOT NULL,
    deadline REAL NOT NULL,
    tries INTEGER NOT NULL,
    reason TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deferred_due ON deferred (state, due);
CREATE INDEX IF NOT EXISTS deferred_deadline ON deferred (deadline);
"""


class Spool:
    """A `queues.store.Store` in one SQLite file."""

    def __init__(self, path: str | Path, codec: Codec | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._codec = codec or Codec()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._puts: GroupCommitter[tuple[object, ...]] = GroupCommitter(
            self._put_rows, "resilient-spool"
        )

    @contextmanager
    def _transaction(self, *, fsync: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: takes the write lock up front, so concurrent claimers serialize."""
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, request: DeferredRequest, *, due: float | None = None) -> None:
        """Store `request` (replacing one with the same id); durable when this returns. Puts
        from threads in flight together share one fsync'd commit (group commit)."""
        row = (
            request.id,
            request.capability,
            READY,
            request.created_at if due is None else due,
            request.created_at,
            request.deadline,
            request.tries,
            self._codec.encode(request),
        )
        self._puts.write(row)

    def _put_rows(self, rows: Sequence[tuple[object, ...]]) -> list[None]:
        with self._transaction(fsync=True) as db:
            db.executemany(
                "INSERT OR REPLACE INTO deferred VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)", rows
            )
        return [None] * len(rows)

    def claim(self, capability: str, limit: int, lease: float, now: float | None = None) -> Claimed:
        """Lease up to `limit` due requests of `capability` (ready, or whose lease ran out)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, body FROM deferred WHERE capability = ? AND state IN (?, ?) "
                "AND due <= ? ORDER BY due LIMIT ?",
                (capability, READY, LEASED, now, limit),
            ).fetchall()
            requests, corrupt = [], []
            for row_id, body in rows:
                try:
                    requests.append(self._codec.decode(body))
                except CorruptRequest as exc:
                    corrupt.append((row_id, str(exc)))
            db.executemany(
                "UPDATE deferred SET state = ?, due = ? WHERE id = ?",
                [(LEASED, now + lease, r.id) for r in requests],
            )
            db.executemany(
                "UPDATE deferred SET state = ?, reason = ? WHERE id = ?",
                [(DEAD, f"corrupt payload: {why}", row_id) for row_id, why in corrupt],
            )
        return Claimed(requests, corrupt)

    def settle(
        self,
        *,
        delivered: Sequence[str] = (),
        later: Sequence[tuple[DeferredRequest, float]] = (),
        dead: Sequence[tuple[DeferredRequest, str]] = (),
    ) -> None:
        """Record replay outcomes in one commit: delivered ones leave the spool; `later` ones
        keep their new history and come due at the given time; `dead` ones become dead letters
        with their full history and the reason."""
        encode = self._codec.encode
        with self._transaction() as db:
            db.executemany("DELETE FROM deferred WHERE id = ?", [(i,) for i in delivered])
            db.executemany(
                "UPDATE deferred SET state = ?, due = ?, tries = ?, body = ? WHERE id = ?",
                [(READY, due, r.tries, encode(r), r.id) for r, due in later],
            )
            db.executemany(
                "UPDATE deferred SET state = ?, reason = ?, tries = ?, body = ? WHERE id = ?",
                [(DEAD, why, r.tries, encode(r), r.id) for r, why in dead],
            )

    def expire(self, now: float | None = None) -> int:
        """Dead-letter every waiting request past its deadline: never sent late."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            return db.execute(
                "UPDATE deferred SET state = ?, reason = ? WHERE state != ? AND deadline < ?",
                (DEAD, "deadline passed before delivery", DEAD, now),
            ).rowcount

    def get(self, request_id: str) -> tuple[Entry, DeferredRequest | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, capability, state, due, created, deadline, tries, reason, body "
                "FROM deferred WHERE id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        try:
            request: DeferredRequest | None = self._codec.decode(row[8])
        except CorruptRequest:
            request = None
        return Entry(*row[:8]), request

    def entries(self, state: str | None = None, limit: int = 100) -> list[Entry]:
        query = "SELECT id, capability, state, due, created, deadline, tries, reason FROM deferred"
        args: tuple[object, ...] = ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created LIMIT ?", (*args, limit)).fetchall()
        return [Entry(*row) for row in rows]

    def make_due(
        self,
        *,
        request_id: str | None = None,
        capabilities: Sequence[str] = (),
        now: float | None = None,
    ) -> int:
        """Waiting requests (one, or all of some capabilities) due now instead of later."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            if request_id is not None:
                return db.execute(
                    "UPDATE deferred SET due = ? WHERE id = ? AND state = ?",
                    (now, request_id, READY),
                ).rowcount
            return sum(
                db.execute(
                    "UPDATE deferred SET due = ? WHERE capability = ? AND state = ?",
                    (now, capability, READY),
                ).rowcount
                for capability in capabilities
            )

    def redrive(
        self, request_id: str, now: float | None = None, deadline: float | None = None
    ) -> bool:
        """A dead letter back in line: with its own deadline, or `deadline` when given (one
        that passed would bury it again at once). False if there is none."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            if deadline is not None:
                row = db.execute(
                    "SELECT body FROM deferred WHERE id = ? AND state = ?", (request_id, DEAD)
                ).fetchone()
                if row is None:
                    return False
                request = replace(self._codec.decode(row[0]), deadline=deadline)
                db.execute(
                    "UPDATE deferred SET deadline = ?, body = ? WHERE id = ?",
                    (deadline, self._codec.encode(request), request_id),
                )
            changed = db.execute(
                "UPDATE deferred SET state = ?, due = ?, reason = NULL WHERE id = ? AND state = ?",
                (READY, now, request_id, DEAD),
            ).rowcount
        return changed == 1

    def purge(self, request_id: str | None = None) -> int:
        """Delete one dead letter, or all of them."""
        with self._transaction() as db:
            if request_id is None:
                return db.execute("DELETE FROM deferred WHERE state = ?", (DEAD,)).rowcount
            return db.execute(
                "DELETE FROM deferred WHERE id = ? AND state = ?", (request_id, DEAD)
            ).rowcount

    def stats(self, now: float | None = None) -> dict[str, float | int]:
        now = time.time() if now is None else now
        with self._lock:
            counts = dict(
                self._db.execute("SELECT state, COUNT(*) FROM deferred GROUP BY state").fetchall()
            )
            oldest = self._db.execute(
                "SELECT MIN(created) FROM deferred WHERE state != ?", (DEAD,)
            ).fetchone()[0]
        return {
            "ready": counts.get(READY, 0),
            "leased": counts.get(LEASED, 0),
            "dead": counts.get(DEAD, 0),
            "oldest_age": round(now - oldest, 3) if oldest is not None else 0.0,
        }

    def close(self) -> None:
        self._puts.close()
        with self._lock:
            self._db.close()
