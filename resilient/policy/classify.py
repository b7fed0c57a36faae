"""Outcome classification: what one attempt's response or error means for the next step.

Rules are data: a default status table, overridable per provider, plus the server's own hints
(Retry-After, retry-after-ms, x-should-retry, Stripe-Should-Retry). Exceptions are matched by
class name along the MRO, so httpx and httpx2 (and our own timeouts) classify alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from resilient.policy.outcome_class import Outcome

DEFAULT_STATUS_RULES: tuple[tuple[str, Outcome], ...] = (
    ("1xx", Outcome.OK),
    ("2xx", Outcome.OK),
    ("3xx", Outcome.OK),
    ("4xx", Outcome.FATAL),
    ("401", Outcome.FAILOVER),  # our credentials for this provider: another may work
    ("403", Outcome.FAILOVER),
    ("408", Outcome.RETRYABLE),
    ("425", Outcome.RETRYABLE),
    ("429", Outcome.RETRYABLE),
    ("5xx", Outcome.RETRYABLE),
    ("500", Outcome.AMBIGUOUS),  # the provider may have acted before failing
    ("501", Outcome.FAILOVER),
    ("504", Outcome.AMBIGUOUS),
)
"""Later rules win over earlier ones; exact codes win over "Nxx" classes."""

# Exception class names, most specific first along each class's MRO. `sent` tells whether the
# request may have reached the provider: a connect failure never did, a read timeout might have.
DEFAULT_ERROR_RULES: Mapping[str, Outcome] = {
    "ConnectError": Outcome.RETRYABLE,
    "ConnectTimeout": Outcome.RETRYABLE,
    "PoolTimeout": Outcome.RETRYABLE,
    "ProxyError": Outcome.FAILOVER,
    "UnsupportedProtocol": Outcome.FATAL,
    "LocalProtocolError": Outcome.FATAL,
    "InvalidURL": Outcome.FATAL,
    "ReadTimeout": Outcome.AMBIGUOUS,
    "WriteTimeout": Outcome.AMBIGUOUS,
    "TimeoutError": Outcome.AMBIGUOUS,  # our attempt timeout (asyncio / builtin)
    "TimeoutException": Outcome.AMBIGUOUS,
    "RemoteProtocolError": Outcome.AMBIGUOUS,  # connection reset or closed mid-exchange
    "ReadError": Outcome.AMBIGUOUS,
    "WriteError": Outcome.AMBIGUOUS,
    "NetworkError": Outcome.AMBIGUOUS,
    "TransportError": Outcome.AMBIGUOUS,
}
_TIMEOUT_NAMES = frozenset({"ReadTimeout", "WriteTimeout", "TimeoutError", "TimeoutException"})

# When a spent rate limit resets: X and GitHub send epoch seconds, Bluesky's PDS epoch seconds,
# Mastodon an ISO 8601 time, the IETF draft delta seconds. They come on every answer; only a 429
# makes them a wait.
RESET_HEADERS = ("x-rate-limit-reset", "x-ratelimit-reset", "ratelimit-reset")
_EPOCH = 1e9  # larger than any delay a server asks for (31 years): an epoch time, not a delay


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    status: int | None
    reason: str
    server_delay: float | None = None  # seconds the provider asked us to wait
    timed_out: bool = False  # no answer in time: retrying the same provider multiplies the wait

    @property
    def health(self) -> bool | None:
        """What this says about the provider: True healthy, False unhealthy, None nothing."""
        if self.outcome is Outcome.OK:
            return True
        return None if self.outcome is Outcome.FATAL else False


_OK_VERDICTS = {code: Verdict(Outcome.OK, code, str(code)) for code in range(100, 600)}
"""Frozen, so shared: an OK verdict depends on its status code alone."""


class Classifier:
    """Maps a status (+ headers) or an exception to a Verdict, per the provider's rules."""

    __slots__ = ("_by_status", "_errors")

    def __init__(
        self,
        overrides: Iterable[tuple[str, str | Outcome]] = (),
        error_rules: Mapping[str, Outcome] = DEFAULT_ERROR_RULES,
    ) -> None:
        rules = [*DEFAULT_STATUS_RULES, *((p, Outcome(o)) for p, o in overrides)]
        table: list[Outcome] = [Outcome.FATAL] * 600
        for exact in (False, True):  # classes first, then exact codes on top
            for pattern, outcome in rules:
                if pattern.endswith("xx") != exact:
                    codes = (
                        [int(pattern)]
                        if exact
                        else range(int(pattern[0]) * 100, int(pattern[0]) * 100 + 100)
                    )
                    for code in codes:
                        table[code] = outcome
        self._by_status = tuple(table)
        self._errors = dict(error_rules)

    def response(
        self, status: int, headers: Mapping[str, str], now: float | None = None
    ) -> Verdict:
        outcome = self._by_status[status] if 100 <= status < 600 else Outcome.FATAL
        if outcome is Outcome.OK:
            return _OK_VERDICTS[status]
        should_retry = headers.get("x-should-retry") or headers.get("stripe-should-retry")
        if should_retry == "true" and outcome is not Outcome.FAILOVER:
            outcome = Outcome.RETRYABLE
        elif should_retry == "false" and outcome in (Outcome.RETRYABLE, Outcome.AMBIGUOUS):
            outcome = Outcome.FAILOVER
        delay = server_delay(headers, now)
        if delay is None and status == 429:
            delay = rate_limit_reset(headers, now)
        return Verdict(outcome, status, str(status), delay)

    def error(self, exc: BaseException) -> Verdict | None:
        """A Verdict for a transport error; None for anything else (a bug: let it propagate)."""
        for cls in type(exc).__mro__:
            outcome = self._errors.get(cls.__name__)
            if outcome is not None:
                return Verdict(
                    outcome, None, type(exc).__name__, None, cls.__name__ in _TIMEOUT_NAMES
                )
        return None


def server_delay(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, else Retry-After (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def rate_limit_reset(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until a spent rate limit resets, from the first reset header that parses."""
    current = time.time() if now is None else now
    for name in RESET_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            try:
                when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is None:
                continue
            return max(0.0, when.timestamp() - current)
        return max(0.0, number - current if number > _EPOCH else number)
    return None
