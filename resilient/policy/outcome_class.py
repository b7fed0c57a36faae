"""The five outcome classes every attempt maps to; see resilient.policy.classify for the rules."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    OK = "ok"
    RETRYABLE = "retryable"  # try this provider again (429, 503, not sent at all)
    FAILOVER = "failover"  # this provider cannot serve now: next provider
    AMBIGUOUS = "ambiguous"  # may have reached the provider: repeat only with an idempotency key
    FATAL = "fatal"  # our request is invalid: every provider would refuse it

    def __str__(self) -> str:
        return self.value
