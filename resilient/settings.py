"""Validated, frozen settings for the hot path: plain dataclasses, no validation cost per call.

`resilient.config` builds these from a TOML/YAML file; tests and embedders may build them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from resilient.secrets import Secret
from resilient.units import Rate


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TimeoutSettings:
    """Seconds. `attempt` bounds one try end to end; `total` bounds the call on this provider."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    attempt: float = 30.0
    total: float | None = None


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Attempts include the first. Backoff is exponential with equal jitter between base and cap."""

    attempts: int = 3
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    max_server_delay: float = 30.0  # a Retry-After longer than this: the provider is down for now
    budget_ratio: float = 0.2  # retries may add at most this fraction of recent calls...
    budget_floor: int = 10  # ...plus this many per budget window, so quiet periods can retry
    budget_window: float = 10.0
    retry_ambiguous: bool = False  # retry a non-idempotent request that may have been executed


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Opens on a failure ratio over a sliding window; half-open admits `half_open_probes` calls."""

    failure_ratio: float = 0.5
    window: float = 30.0
    min_calls: int = 10
    slow_call: float | None = None  # seconds; a slower call counts as a failure
    open_for: float = 15.0
    open_for_max: float = 300.0  # repeated trips lengthen the open period up to this
    open_growth: float = 2.0
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: str
    enabled: bool = True
    base_url: str | None = None
    api_key: Secret | None = None
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    rate_limit: Rate | None = None
    rate_limit_per_credential: bool = False
    max_concurrent: int | None = None  # bulkhead; None: unbounded
    max_response_bytes: int = 16 * 1024 * 1024  # a whole answer, decompressed (not streams)
    classify: tuple[tuple[str, str], ...] = ()  # (status pattern like "409" or "5xx", outcome)
    options: Mapping[str, Any] = field(
        default_factory=_empty
    )  # kind-specific keys (a Mailgun domain, an account id)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A degraded-mode answer cache: answers to calls marked cacheable, served (stale) only when
    no provider of the chain can answer. "redis" shares it through the gateway's redis_url."""

    ttl: float = 3600.0  # seconds an answer may be served after it was stored
    backend: Literal["memory", "redis"] = "memory"
    max_entries: int = 1000  # the memory backend's bound (least recently used dropped)


@dataclass(frozen=True, slots=True)
class CapabilitySettings:
    name: str
    chain: tuple[str, ...]
    defer: bool = False
    deadline: float = 3600.0  # a deferred request older than this is dead-lettered, never sent
    timeout: float | None = None  # the whole call across the chain
    fallback: str | None = None  # another channel's capability (sms <-> email), per call opt-in
    fallback_sender: str | None = None  # the From on that channel (required for email)
    cache: CacheSettings | None = None  # degraded mode: answers kept for when the chain is down
    # llm: a logical model whose prompt was too long -> the larger-context one to ask instead
    context_fallback: Mapping[str, str] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Thresholds that fire an alert, defaulting to what common continuity plans use."""

    p95_latency: float = 2.0  # seconds
    error_rate: float = 0.01  # failed attempts over the breaker window
    min_calls: int = 20  # calls in the window (or attempts sampled) before a rate or p95 counts
    breaker_open: float = 300.0  # seconds a breaker may stay open
    queue_age: float = 600.0  # seconds the oldest parked request may wait
    interval: float = 5.0  # seconds between evaluations


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    source: str = "<defaults>"
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    spool_path: str = ".resilient/spool.db"
    encryption_key: Secret | None = None  # Fernet key: parked payloads unreadable without it
    overrides_path: str = ".resilient/overrides.json"  # live ops overrides when no Redis
    # The async HTTP client: "httpx" (httpcore) or "aiohttp" (faster under concurrency);
    # None lets each process choose (applications: httpx; replay workers: aiohttp if installed).
    async_client: Literal["httpx", "aiohttp"] | None = None
    alerts: AlertSettings = field(default_factory=AlertSettings)
    providers: Mapping[str, ProviderSettings] = field(default_factory=_empty)
    capabilities: Mapping[str, CapabilitySettings] = field(default_factory=_empty)
