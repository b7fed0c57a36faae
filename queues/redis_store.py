"""Parked requests in Redis, shared by every process and machine of the application.

Layout under a namespace: a hash per request (body + metadata); per capability a sorted set of
waiting ids scored by when they are due (a lease moves the score to the lease's end, so a
crashed worker's requests come due again by themselves); `live` (by creation), `deadlines`,
`leases` and `dead` sorted sets for listing, expiry and stats. Claims run as one Lua script, so
two workers never lease the same request. Durability is Redis's: run it with appendonly (and
`appendfsync always` where a parked request must survive a power cut).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis

from queues.deferred import Codec, CorruptRequest, DeferredRequest
from queues.store import DEAD, READY, Claimed, Entry

_CLAIM = """
local ns, cap, now, limit, lease_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local waiting = ns .. ':due:' .. cap
local ids = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  local key = ns .. ':r:' .. id
  redis.call('ZADD', waiting, lease_until, id)
  redis.call('ZADD', ns .. ':leases', lease_until, id)
  redis.call('HSET', key, 'state', 'leased', 'due', lease_until)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', key, 'body') or ''
end
return out
"""

_FIELDS = ("cap", "state", "due", "created", "deadline", "tries", "reason")


class RedisStore:
    """A `queues.store.Store` in Redis."""

    def __init__(
        self, client: redis.Redis, codec: Codec | None = None, namespace: str = "resilient:q"
    ) -> None:
        self._redis = client
        self._codec = codec or Codec()
        self._ns = namespace
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(cls, url: str, codec: Codec | None = None, **options: Any) -> RedisStore:
        options.setdefault("socket_timeout", 2.0)
        options.setdefault("socket_connect_timeout", 2.0)
        return cls(redis.Redis.from_url(url, **options), codec)

    def _key(self, request_id: str) -> str:
        return f"{self._ns}:r:{request_id}"

    def put(self, request: DeferredRequest, *, due: float | None = None) -> None:
        when = request.created_at if due is None else due
        ns = self._ns
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self._key(request.id),
            mapping={
                "body": self._codec.encode(request),
                "cap": request.capability,
                "state": READY,
                "due": when,
                "created": request.created_at,
                "deadline": request.deadline,
                "tries": request.tries,
                "reason": "",
            },
        )
        pipe.zadd(f"{ns}:due:{request.capability}", {request.id: when})
        pipe.zadd(f"{ns}:live", {request.id: request.created_at})
        pipe.zadd(f"{ns}:deadlines", {request.id: request.deadline})
        pipe.sadd(f"{ns}:caps", request.capability)
        pipe.execute()

    def claim(self, capability: str, limit: int, lease: float, now: float | None = None) -> Claimed:
        now = time.time() if now is None else now
        flat = self._claim(args=[self._ns, capability, repr(now), limit, repr(now + lease)])
        requests, corrupt = [], []
        for request_id, body in zip(flat[::2], flat[1::2], strict=True):
            try:
                requests.append(self._codec.decode(body))
            except CorruptRequest as exc:
                corrupt.append((request_id.decode(), str(exc)))
        if corrupt:
            pipe = self._redis.pipeline(transaction=True)
            for request_id, why in corrupt:
                self._bury(pipe, request_id, capability, f"corrupt payload: {why}", None)
            pipe.execute()
        return Claimed(requests, corrupt)

    def settle(
        self,
        *,
        delivered: Sequence[str] = (),
        later: Sequence[tuple[DeferredRequest, float]] = (),
        dead: Sequence[tuple[DeferredRequest, str]] = (),
    ) -> None:
        caps = [c.decode() if c else "" for c in self._caps_of(delivered)]
        ns = self._ns
        pipe = self._redis.pipeline(transaction=True)
        if delivered:  # a few commands per batch, not five per request
            by_capability: dict[str, list[str]] = {}
            for request_id, cap in zip(delivered, caps, strict=True):
                by_capability.setdefault(cap, []).append(request_id)
            pipe.delete(*(self._key(request_id) for request_id in delivered))
            for cap, ids in by_capability.items():
                pipe.zrem(f"{ns}:due:{cap}", *ids)
            for index in ("live", "deadlines", "leases"):
                pipe.zrem(f"{ns}:{index}", *delivered)
        for request, due in later:
            pipe.hset(
                self._key(request.id),
                mapping={
                    "state": READY,
                    "due": due,
                    "tries": request.tries,
                    "body": self._codec.encode(request),
                },
            )
            pipe.zadd(f"{ns}:due:{request.capability}", {request.id: due})
            pipe.zrem(f"{ns}:leases", request.id)
        for request, why in dead:
            self._bury(pipe, request.id, request.capability, why, request)
        pipe.execute()

    def _caps_of(self, ids: Sequence[str]) -> list[bytes | None]:
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.hget(self._key(request_id), "cap")
        return list(pipe.execute())

    def _bury(
        self,
        pipe: Any,
        request_id: str,
        capability: str,
        why: str,
        request: DeferredRequest | None,
    ) -> None:
        ns = self._ns
        fields: dict[str, Any] = {"state": DEAD, "reason": why}
        if request is not None:
            fields |= {"tries": request.tries, "body": self._codec.encode(request)}
        pipe.hset(self._key(request_id), mapping=fields)
        pipe.zrem(f"{ns}:due:{capability}", request_id)
        for index in ("live", "deadlines", "leases"):
            pipe.zrem(f"{ns}:{index}", request_id)
        pipe.zadd(f"{ns}:dead", {request_id: time.time()})

    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        ids = _text(self._redis.zrangebyscore(f"{self._ns}:deadlines", "-inf", now))
        if not ids:
            return 0
        caps = self._caps_of(ids)
        pipe = self._redis.pipeline(transaction=True)
        for request_id, cap in zip(ids, caps, strict=True):
            if cap is not None:
                self._bury(pipe, request_id, cap.decode(), "deadline passed before delivery", None)
        pipe.execute()
        return sum(cap is not None for cap in caps)

    def get(self, request_id: str) -> tuple[Entry, DeferredRequest | None] | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(self._key(request_id))  # type: ignore[assignment]
        if not raw:
            return None
        try:
            request: DeferredRequest | None = self._codec.decode(raw[b"body"])
        except CorruptRequest:
            request = None
        return self._entry(request_id, raw), request

    @staticmethod
    def _entry(request_id: str, raw: dict[bytes, bytes]) -> Entry:
        return Entry(
            id=request_id,
            capability=raw[b"cap"].decode(),
            state=raw[b"state"].decode(),
            due=float(raw[b"due"]),
            created=float(raw[b"created"]),
            deadline=float(raw[b"deadline"]),
            tries=int(raw[b"tries"]),
            reason=raw[b"reason"].decode() or None,
        )

    def entries(self, state: str | None = None, limit: int = 100) -> list[Entry]:
        index = "dead" if state == DEAD else "live"
        ids = _text(self._redis.zrange(f"{self._ns}:{index}", 0, -1))
        pipe = self._redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.hmget(self._key(request_id), *_FIELDS)
        found = []
        for request_id, values in zip(ids, pipe.execute(), strict=True):
            if values[0] is None:
                continue
            entry = self._entry(
                request_id, dict(zip((f.encode() for f in _FIELDS), values, strict=True))
            )
            if state is None or entry.state == state:
                found.append(entry)
            if len(found) == limit:
                break
        if state is None and len(found) < limit:
            found += self.entries(DEAD, limit - len(found))
        return found

    def make_due(
        self,
        *,
        request_id: str | None = None,
        capabilities: Sequence[str] = (),
        now: float | None = None,
    ) -> int:
        now = time.time() if now is None else now
        if request_id is not None:
            targets = [e for e in [self.get(request_id)] if e is not None]
            entries = [entry for entry, _ in targets]
        else:
            entries = [e for e in self.entries(READY, 10**9) if e.capability in capabilities]
        pipe = self._redis.pipeline(transaction=True)
        changed = 0
        for entry in entries:
            if entry.state != READY:
                continue
            pipe.hset(self._key(entry.id), "due", now)
            pipe.zadd(f"{self._ns}:due:{entry.capability}", {entry.id: now})
            changed += 1
        pipe.execute()
        return changed

    def redrive(
        self, request_id: str, now: float | None = None, deadline: float | None = None
    ) -> bool:
        now = time.time() if now is None else now
        found = self.get(request_id)
        if found is None or found[0].state != DEAD:
            return False
        entry, request = found
        until = entry.deadline
        ns = self._ns
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._key(request_id), mapping={"state": READY, "due": now, "reason": ""})
        if deadline is not None and request is not None:
            until, body = deadline, self._codec.encode(replace(request, deadline=deadline))
            pipe.hset(self._key(request_id), mapping={"deadline": deadline, "body": body})
        pipe.zadd(f"{ns}:due:{entry.capability}", {request_id: now})
        pipe.zadd(f"{ns}:live", {request_id: entry.created})
        pipe.zadd(f"{ns}:deadlines", {request_id: until})
        pipe.zrem(f"{ns}:dead", request_id)
        pipe.execute()
        return True

    def purge(self, request_id: str | None = None) -> int:
        ids = (
            [request_id]
            if request_id is not None
            else _text(self._redis.zrange(f"{self._ns}:dead", 0, -1))
        )
        removed = 0
        for one in ids:
            if self._redis.zrem(f"{self._ns}:dead", one):
                self._redis.delete(self._key(one))
                removed += 1
        return removed

    def stats(self, now: float | None = None) -> dict[str, float | int]:
        now = time.time() if now is None else now
        ns = self._ns
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(f"{ns}:live")
        pipe.zcard(f"{ns}:leases")
        pipe.zcard(f"{ns}:dead")
        pipe.zrange(f"{ns}:live", 0, 0, withscores=True)
        live, leased, dead, oldest = pipe.execute()
        return {
            "ready": live - leased,
            "leased": leased,
            "dead": dead,
            "oldest_age": round(now - oldest[0][1], 3) if oldest else 0.0,
        }

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()


def _text(values: Any) -> list[str]:
    """redis-py answers bytes; ids are text."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
