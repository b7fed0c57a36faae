"""The stores of parked requests, SQLite spool and Redis alike: durable puts, leased claims,
settlement, expiry, dead letters, corruption. Spool-only behaviour is at the end."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.deferred import Codec, CorruptRequest, DeferredRequest
from queues.redis_store import RedisStore
from queues.spool import Spool
from queues.store import DEAD, LEASED, READY, Store
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt


def request(n: int = 0, *, created: float = 1000.0, deadline: float = 5000.0) -> DeferredRequest:
    return DeferredRequest(
        capability="email",
        operation="http",
        payload={"n": n},
        operation_id=f"op-{n}",
        created_at=created + n,
        deadline=deadline,
    )


@pytest.fixture(params=["sqlite", "redis"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store-contract test runs on the SQLite spool and on a real redis-server."""
    store: Store
    if request.param == "sqlite":
        store = Spool(tmp_path / "spool.db")
    else:
        store = RedisStore.from_url(request.getfixturevalue("redis_url"))
    yield store
    store.close()


def test_put_then_claim_leases_in_order(spool: Spool) -> None:
    for n in (2, 0, 1):
        spool.put(request(n))
    claimed = spool.claim("email", 10, lease=30, now=2000)
    assert [r.operation_id for r in claimed.requests] == ["op-0", "op-1", "op-2"]
    assert {e.state for e in spool.entries()} == {LEASED}
    assert spool.claim("email", 10, lease=30, now=2001).requests == []  # leased: not again


def test_an_expired_lease_comes_due_again(spool: Spool) -> None:
    """A worker that died mid-replay loses nothing: its lease runs out, another claims it."""
    spool.put(request())
    assert len(spool.claim("email", 1, lease=30, now=2000).requests) == 1
    assert spool.claim("email", 1, lease=30, now=2029).requests == []
    assert len(spool.claim("email", 1, lease=30, now=2031).requests) == 1


def test_claims_are_per_capability(spool: Spool) -> None:
    spool.put(request())
    assert spool.claim("sms", 10, lease=30, now=2000).requests == []
    assert len(spool.claim("email", 10, lease=30, now=2000).requests) == 1


def test_settle_delivers_reschedules_and_buries(spool: Spool) -> None:
    for n in range(3):
        spool.put(request(n))
    first, second, third = spool.claim("email", 3, lease=30, now=2000).requests
    attempt = Attempt("a", Outcome.RETRYABLE, 503, 0.01, "503")
    spool.settle(
        delivered=[first.id],
        later=[(second.with_attempts((attempt,), replayed=True), 2100.0)],
        dead=[(third, "rejected by provider")],
    )
    states = {e.id: (e.state, e.tries, e.reason) for e in spool.entries()}
    assert first.id not in states
    assert states[second.id] == (READY, 1, None)
    assert states[third.id] == (DEAD, 0, "rejected by provider")
    assert spool.claim("email", 3, lease=30, now=2099).requests == []  # not due yet
    (again,) = spool.claim("email", 3, lease=30, now=2100).requests
    assert again.attempts[-1]["status"] == 503  # history kept


def test_expire_buries_requests_past_their_deadline(spool: Spool) -> None:
    spool.put(request(0, deadline=1500))
    spool.put(request(1, deadline=9000))
    assert spool.expire(now=2000) == 1
    dead = spool.entries(DEAD)
    assert [e.reason for e in dead] == ["deadline passed before delivery"]
    assert spool.claim("email", 10, lease=30, now=2000).requests[0].operation_id == "op-1"


def test_redrive_and_purge_dead_letters(spool: Spool) -> None:
    spool.put(request(0))
    spool.put(request(1))
    a, b = spool.claim("email", 2, lease=30, now=2000).requests
    spool.settle(dead=[(a, "x"), (b, "y")])
    assert spool.redrive(a.id, now=2000) is True
    assert spool.redrive(a.id, now=2000) is False  # no longer dead
    assert [r.id for r in spool.claim("email", 5, lease=30, now=2000).requests] == [a.id]
    assert spool.purge() == 1
    assert spool.get(b.id) is None


def test_an_expired_letter_redriven_with_a_new_deadline_is_not_buried_again(
    spool: Spool,
) -> None:
    spool.put(request(0, deadline=1500.0))
    assert spool.expire(now=2000) == 1
    assert spool.redrive(request(0).id, now=2000) is False  # another id: nothing
    [letter] = spool.entries(DEAD)
    assert spool.redrive(letter.id, now=2000, deadline=9000.0) is True
    assert spool.expire(now=2001) == 0
    found = spool.get(letter.id)
    assert found is not None and found[1] is not None
    assert (found[0].state, found[0].deadline, found[1].deadline) == (READY, 9000.0, 9000.0)


def test_a_corrupt_row_is_dead_lettered_and_does_not_block_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.put(request(0))
    spool.put(request(1))
    db = sqlite3.connect(tmp_path / "spool.db")
    with db:
        db.execute(
            "UPDATE deferred SET body = ? WHERE id = (SELECT MIN(id) FROM deferred)", (b"{tr",)
        )
    claimed = spool.claim("email", 10, lease=30, now=2000)
    assert len(claimed.requests) == 1 and len(claimed.corrupt) == 1
    (dead,) = spool.entries(DEAD)
    assert dead.reason is not None and dead.reason.startswith("corrupt payload")


def test_a_corrupt_redis_entry_is_dead_lettered(redis_url: str) -> None:
    import redis

    store = RedisStore.from_url(redis_url)
    store.put(request(0))
    store.put(request(1))
    first = store.entries()[0]
    redis.Redis.from_url(redis_url).hset(f"resilient:q:r:{first.id}", "body", b"{tr")
    claimed = store.claim("email", 10, lease=30, now=2000)
    assert len(claimed.requests) == 1 and claimed.corrupt[0][0] == first.id
    (dead,) = store.entries(DEAD)
    assert dead.id == first.id and (dead.reason or "").startswith("corrupt payload")


def test_spool_survives_reopening(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool.db")
    first.put(request())
    first.close()
    second = Spool(tmp_path / "spool.db")
    assert [r.operation_id for r in second.claim("email", 5, 30, now=2000).requests] == ["op-0"]


def test_encrypted_payloads_are_unreadable_without_the_key(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    spool = Spool(tmp_path / "spool.db", Codec(key))
    spool.put(request(7))
    raw = (tmp_path / "spool.db").read_bytes() + _wal(tmp_path)
    assert b"op-7" not in raw
    assert spool.claim("email", 1, 30, now=2000).requests[0].operation_id == "op-7"
    with pytest.raises(CorruptRequest, match="decrypt"):
        Codec(Fernet.generate_key().decode()).decode(Codec(key).encode(request(7)))


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "spool.db-wal"
    return wal.read_bytes() if wal.exists() else b""


@pytest.mark.parametrize("data", [b"", b"[]", b'{"id": 1}', b"\xff\xfe", b'{"capability": "x"}'])
def test_codec_rejects_what_is_not_a_request(data: bytes) -> None:
    with pytest.raises(CorruptRequest):
        Codec().decode(data)
