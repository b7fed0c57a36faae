"""What teams write today instead of the gateway: tenacity + pybreaker + aiolimiter by hand.

Both stacks follow the libraries' documented usage, with the gateway's policy numbers: 3
attempts, jittered exponential backoff 0.2 s .. 5 s, retry on transport errors and on
408/425/429/5xx, a breaker, and a rate limit of 1,000,000/s (set, never binding). The
per-phase timeouts are httpx's own (the client's `timeout=`), as such stacks usually leave them.

- async: tenacity's `@retry` on a coroutine, `async with AsyncLimiter`, and pybreaker for the
  state: its `call()` wraps only the status check (pybreaker's async path needs tornado, and
  `call()` around the request would hold its lock for the whole round trip).
- sync: tenacity's `@retry`, pybreaker's `call()` around the request (its documented use), and
  a lock-protected token bucket (aiolimiter is asyncio-only).
- tenacity alone: just the `@retry` decorator and the status check, to price tenacity itself.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import httpx
import pybreaker

F = TypeVar("F", bound=Callable[..., Any])
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
RATE_PER_SECOND = 1_000_000.0


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"retryable status {response.status_code}")
        self.response = response


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code in RETRY_STATUSES:
        raise RetryableStatus(response)
    return response


def _retry(fn: F) -> F:
    """tenacity's `@retry` with the gateway's policy numbers."""
    import tenacity

    decorator = tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),
        retry=tenacity.retry_if_exception_type((httpx.TransportError, RetryableStatus)),
        reraise=True,
    )
    return cast(F, decorator(fn))


def _breaker() -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=15)


class TokenBucket:
    """The small thread-safe limiter a sync stack writes by hand."""

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self._rate
            time.sleep(wait)


def async_stack(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[httpx.Response]]:
    """tenacity + pybreaker + aiolimiter around one async GET."""
    from aiolimiter import AsyncLimiter

    breaker = _breaker()
    limiter = AsyncLimiter(RATE_PER_SECOND, 1.0)

    async def call() -> httpx.Response:
        if breaker.current_state == pybreaker.STATE_OPEN:
            raise pybreaker.CircuitBreakerError("open")
        async with limiter:
            response = await client.get(url)
        result: httpx.Response = breaker.call(check, response)
        return result

    return _retry(call)


def sync_stack(client: httpx.Client, url: str) -> Callable[[], httpx.Response]:
    """tenacity + pybreaker + a token bucket around one sync GET."""
    breaker = _breaker()
    limiter = TokenBucket(RATE_PER_SECOND, burst=RATE_PER_SECOND)

    def send() -> httpx.Response:
        return check(client.get(url))

    def call() -> httpx.Response:
        limiter.acquire()
        result: httpx.Response = breaker.call(send)
        return result

    return _retry(call)


def async_tenacity(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[httpx.Response]]:
    """tenacity alone around one async GET."""

    async def call() -> httpx.Response:
        return check(await client.get(url))

    return _retry(call)


def sync_tenacity(client: httpx.Client, url: str) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        return check(client.get(url))

    return _retry(call)
