"""Reconciliation: asking a provider what became of an operation whose outcome was ambiguous.

An adapter that can find out (the provider lists what it did, and what we sent can be matched)
builds one lookup request and reads its answer as Found: DONE (with the provider's id),
NOT_DONE (provably not there: free to send, here or elsewhere) or UNKNOWN (no way to tell).
The plan yields `Lookup`; the executors send it like an attempt and hand back the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from resilient.result import Attempt
from resilient.runtime import ProviderRuntime

DONE: Final = "done"
NOT_DONE: Final = "not_done"
UNKNOWN: Final = "unknown"

CLOCK_SKEW = 300.0  # seconds a provider's clock may differ from ours when matching by time
ASKED = "lookup: "  # how the reason of a lookup's attempt record begins


@dataclass(frozen=True, slots=True)
class Found:
    state: Literal["done", "not_done", "unknown"]
    message_id: str | None = None
    detail: str = ""  # what was asked and answered, for the attempt record and AmbiguousOutcome


@dataclass(slots=True)
class Lookup:
    """Ask `provider` whether the operation was done since `since` (wall-clock seconds)."""

    provider: ProviderRuntime
    since: float
    timeout: float


def asked(attempts: Sequence[Attempt]) -> bool:
    """Whether these attempts include a lookup (the provider was asked what it did)."""
    return any(a.reason.startswith(ASKED) for a in attempts)
