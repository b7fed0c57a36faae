"""resilient: keeps an application's calls to third-party APIs working while those APIs fail."""

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

__all__ = [
    "AmbiguousOutcome",
    "Attempt",
    "CallFailed",
    "ChainExhausted",
    "ConfigError",
    "DeadlineExceeded",
    "FatalError",
    "InvalidRequest",
    "Outcome",
    "ResilientError",
    "Result",
]
