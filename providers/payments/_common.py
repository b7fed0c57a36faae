"""What the payment adapters share: a charge is never moved to another processor after an answer
that may have charged.

Both processors deduplicate repeats by a key we send (the operation id), so an answer that may
have charged is retried on the same processor with the same key, and never sent to another one,
where it would charge a second time.
"""

from __future__ import annotations

import dataclasses

import httpx

from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome

MAY_HAVE_CHARGED_RULES: tuple[tuple[str, str], ...] = (
    # Any 5xx may come after the charge went through (the default table calls only 500 and 504
    # ambiguous; 502 and 503 would be retried and then failed over). 501 stays a failover: the
    # processor does not serve that request at all.
    ("5xx", "ambiguous"),
    # A conflict: another request with our key is running now, and it may charge.
    ("409", "ambiguous"),
)
"""Status rules of every payment kind, on top of the default table (429 retried and then failed
over, as rate limiting runs before any charge; 401/403 failed over; other 4xx, declines
included, fatal)."""


def may_have_charged(status: int) -> bool:
    """Whether an answer with this status leaves the charge in doubt (MAY_HAVE_CHARGED_RULES)."""
    return status == 409 or (status >= 500 and status != 501)


def refined(response: httpx.Response, default: Verdict, detail: str | None) -> Verdict:
    """`default` with the processor's own word for the refusal (a decline code) in its reason,
    and an answer that may have charged kept ambiguous whatever a retry hint said: a
    `Stripe-Should-Retry` header would otherwise turn it retryable or failover, and a payment
    would reach the next processor without proof that this one did nothing."""
    outcome = Outcome.AMBIGUOUS if may_have_charged(response.status_code) else default.outcome
    reason = f"{default.reason} {detail}" if detail else default.reason
    return dataclasses.replace(default, outcome=outcome, reason=reason)
