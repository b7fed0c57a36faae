"""resilient: keeps an application's calls to third-party APIs working while those APIs fail."""

from typing import TYPE_CHECKING, Any

from resilient.errors import (
    AmbiguousOutcome,
    CallFailed,
    ChainExhausted,
    ConfigError,
    DeadlineExceeded,
    FatalError,
    InvalidRequest,
    ResilientError,
)
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt, Result
from resilient.secrets import Secret

if TYPE_CHECKING:
    from resilient.gateway import Gateway

__all__ = [
    "AmbiguousOutcome",
    "Attempt",
    "CallFailed",
    "ChainExhausted",
    "ConfigError",
    "DeadlineExceeded",
    "FatalError",
    "Gateway",
    "InvalidRequest",
    "Outcome",
    "ResilientError",
    "Result",
    "Secret",
]


def __getattr__(name: str) -> Any:
    """Load `Gateway` on first use: importing `resilient` (the pytest plugin does) stays cheap."""
    if name == "Gateway":
        from resilient.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'resilient' has no attribute {name!r}")
