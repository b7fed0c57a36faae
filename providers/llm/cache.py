"""Degraded mode for `gw.llm.chat`: the last answers to cacheable chats, served when no provider
of the chain can answer.

Opt-in per call (`cacheable=True`, for prompts that recur, say at temperature 0); the
capability's `cache = { ttl = "1h", backend = "memory" | "redis", max_entries = 1000 }` says
where answers are kept and for how long (without it: in memory, for an hour). An answered
cacheable chat is stored, keyed by a hash of what decides its answer (model, messages, tools,
temperature, max_tokens); when the chain is exhausted or out of time, an identical chat gets the
stored answer back, with `result.stale_age` saying how old it is. Anything else (a request a
provider refused, a prompt too long) is raised as always: the cache stands in for providers that
are down, not for an answer that would be refused. A store never holds a request's text or a
credential: keys are digests, values are the normalized answers. The cache never fails a call:
a store that cannot be reached is logged and skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from providers.llm.models import ChatRequest, ChatResponse, ToolCall, Usage
from resilient.errors import CallFailed, ResilientError
from resilient.result import Result
from resilient.settings import CacheSettings

if TYPE_CHECKING:
    from resilient.gateway import Gateway

logger = logging.getLogger("resilient")

_now = time.time  # wall clock: an answer's age is read by other processes too (Redis)
_caches: weakref.WeakKeyDictionary[Gateway, dict[tuple[str, CacheSettings], AnswerCache]]
_caches = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class StoreError(Exception):
    """A store could not be read or written (its backend down, an entry unreadable)."""


class Store(Protocol):
    """Where stored answers live: (stored at, answer fields) under a key; raises StoreError."""

    blocking: bool  # does network I/O: async callers run it in a thread

    def get(self, key: str) -> tuple[float, dict[str, Any]] | None: ...

    def put(self, key: str, stored_at: float, answer: dict[str, Any]) -> None: ...


class MemoryStore:
    """One process's answers, the least recently used dropped past `max_entries`."""

    blocking = False

    def __init__(self, settings: CacheSettings) -> None:
        self._ttl = settings.ttl
        self._max = settings.max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if _now() - entry[0] > self._ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, stored_at: float, answer: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = (stored_at, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class RedisStore:
    """Answers shared by every gateway on one Redis, each expiring `ttl` after it was stored."""

    blocking = True

    def __init__(self, settings: CacheSettings, redis_url: str) -> None:
        import redis

        self._ttl = max(1, math.ceil(settings.ttl))
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._errors = (redis.RedisError, ValueError, KeyError, TypeError)

    def get(self, key: str) -> tuple[float, dict[str, Any]] | None:
        try:
            raw = self._redis.get(key)
            if raw is None:
                return None
            entry = json.loads(raw)
            return float(entry["stored_at"]), dict(entry["answer"])
        except self._errors as exc:
            raise StoreError(type(exc).__name__) from exc

    def put(self, key: str, stored_at: float, answer: dict[str, Any]) -> None:
        entry = json.dumps({"stored_at": stored_at, "answer": answer})
        try:
            self._redis.set(key, entry, ex=self._ttl)
        except self._errors as exc:
            raise StoreError(type(exc).__name__) from exc


class AnswerCache:
    """One capability's stored answers."""

    def __init__(self, capability: str, store: Store) -> None:
        self.capability = capability
        self._store = store

    def key(self, chat: ChatRequest) -> str:
        """A digest of what decides the answer; the text itself is never kept."""
        material = json.dumps(
            {
                "model": chat.model,
                "messages": chat.messages,
                "tools": chat.tools,
                "temperature": chat.temperature,
                "max_tokens": chat.max_tokens,
            },
            sort_keys=True,
            default=_plain,
        )
        digest = hashlib.sha256(material.encode()).hexdigest()
        return f"resilient:llm-cache:{self.capability}:{digest}"

    def store(self, chat: ChatRequest, result: Result[ChatResponse]) -> None:
        """Keep an answer; a store out of reach costs the cache an entry, never the call."""
        if result.value is None:
            return
        try:
            self._store.put(self.key(chat), _now(), dataclasses.asdict(result.value))
        except StoreError as exc:  # Redis down, say: the answer stands
            logger.warning("llm cache: answer not stored (%s)", exc)

    def stale(self, chat: ChatRequest, error: CallFailed) -> Result[ChatResponse]:
        """The stored answer to `chat`, marked stale, in place of `error`; else `error`."""
        try:
            entry = self._store.get(self.key(chat))
        except StoreError as exc:  # nothing to stand in: the failure stands
            logger.warning("llm cache: not read (%s)", exc)
            entry = None
        if entry is None:
            raise error
        stored_at, fields = entry
        answer = _answer(fields)
        age = max(0.0, _now() - stored_at)
        return Result("delivered", answer.provider, error.attempts, answer, stale_age=age)

    async def astore(self, chat: ChatRequest, result: Result[ChatResponse]) -> None:
        if self._store.blocking:
            await asyncio.to_thread(self.store, chat, result)
        else:
            self.store(chat, result)

    async def astale(self, chat: ChatRequest, error: CallFailed) -> Result[ChatResponse]:
        if self._store.blocking:
            return await asyncio.to_thread(self.stale, chat, error)
        return self.stale(chat, error)


def answer_cache(gateway: Gateway, capability: str) -> AnswerCache:
    """The cache of `capability` on `gateway`, as its config says (in memory by default); built
    once, and again when a reload changes its settings."""
    settings = gateway.settings.capabilities[capability].cache or CacheSettings()
    with _lock:
        caches = _caches.setdefault(gateway, {})
        cache = caches.get((capability, settings))
        if cache is None:
            cache = caches[(capability, settings)] = AnswerCache(
                capability, _store(gateway, settings)
            )
    return cache


def _store(gateway: Gateway, settings: CacheSettings) -> Store:
    if settings.backend == "memory":
        return MemoryStore(settings)
    redis_url = gateway.settings.redis_url
    if not redis_url:
        raise ResilientError("an llm cache with backend 'redis' needs the gateway's redis_url")
    return RedisStore(settings, redis_url)


def _plain(value: Any) -> Any:
    """JSON for the parts of a ChatRequest that are not JSON already (ToolCall, Tool)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    return repr(value)


def _answer(fields: Mapping[str, Any]) -> ChatResponse:
    return ChatResponse(
        text=fields["text"],
        tool_calls=[ToolCall(**call) for call in fields["tool_calls"]],
        finish_reason=fields["finish_reason"],
        usage=Usage(**fields["usage"]),
        provider=fields["provider"],
        model=fields["model"],
    )
