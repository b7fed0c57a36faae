"""The exceptions a caller can see. Every call failure carries the full attempt record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from resilient.result import Attempt


class ResilientError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(ResilientError):
    """A config file is wrong: names the file, the key path and what was expected."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key or '<root>'}: {problem}")


class InvalidRequest(ResilientError, ValueError):
    """The request can never succeed: rejected before anything is sent or queued."""


class CallFailed(ResilientError):
    """A call did not succeed. `attempts` lists every attempt on every provider, in order."""

    def __init__(
        self,
        message: str,
        attempts: Sequence[Attempt] = (),
        response: httpx.Response | None = None,
    ) -> None:
        self.attempts = tuple(attempts)
        self.response = response  # the last provider answer, if there was one (error details)
        super().__init__(message + _describe(self.attempts))


class ChainExhausted(CallFailed):
    """Every provider of the chain was tried or skipped, and none served the call."""


class FatalError(CallFailed):
    """A provider rejected the request itself; another provider would refuse it too."""


class AmbiguousOutcome(CallFailed):
    """The request may have taken effect; it was not sent elsewhere, to avoid doing it twice."""


class OperationInProgress(CallFailed):
    """Another call holds this operation id and had no outcome by this call's deadline: this
    one sent nothing (retry later with the same id to get that call's outcome)."""


class DeadlineExceeded(CallFailed):
    """The call's overall deadline passed before any provider served it."""


def _describe(attempts: Sequence[Attempt]) -> str:
    if not attempts:
        return ""
    return " [" + "; ".join(str(a) for a in attempts) + "]"
