"""What a call returns: a status, who served it, and one record per attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from resilient.policy.outcome_class import Outcome

T = TypeVar("T")
Status = Literal["delivered", "deferred", "failed"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try on one provider, or one provider skipped (latency 0, `reason` says why)."""

    provider: str
    outcome: Outcome
    status_code: int | None
    latency: float  # seconds
    reason: str  # "200", "503", "ConnectError", "breaker open", "disabled", ...

    def __str__(self) -> str:
        ms = self.latency * 1000
        return f"{self.provider}: {self.outcome.value} ({self.reason}, {ms:.0f} ms)"


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    status: Status
    provider: str | None
    attempts: tuple[Attempt, ...]
    value: T | None = None
    deferral_id: str | None = None
    # seconds since `value` was stored, when it came from a degraded-mode cache because no
    # provider could answer (then every attempt failed); None for a fresh answer
    stale_age: float | None = None
