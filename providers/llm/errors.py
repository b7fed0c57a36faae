"""The chat errors of their own: a prompt a provider refuses on content policy, or one too long
for its model (ContextLengthExceeded, from providers.llm.models); chats and streams read a
refusal alike through `refused()`.

A content-policy rejection is final (another attempt, or another provider, is asked nothing: the
prompt itself is the problem) and the caller sees the provider's own reason. Adapters mark such
an attempt with one of CONTENT_CODES in its verdict's reason; `rejected()` turns the FatalError
the chain raised into ContentRejected, reading the provider's words from its last answer:
`error.message` in the error shape OpenAI, Azure OpenAI and Gemini share, else Gemini's
`promptFeedback.blockReasonMessage`, else what the adapter put in the attempt's reason after
the code (Gemini's block reason, "SAFETY" say).

A refusal that comes as an answer (Anthropic's `stop_reason: "refusal"`, a Gemini candidate
stopped for SAFETY, OpenAI's `finish_reason: "content_filter"`) is no error: it is a delivered
answer whose finish_reason is "content_filter".
"""

from __future__ import annotations

from providers.adapter import json_field
from providers.llm.models import ContextLengthExceeded
from resilient.errors import FatalError

CONTENT_FILTER = "content_filter"
CONTENT_CODES = frozenset({CONTENT_FILTER, "content_policy_violation"})

__all__ = [
    "CONTENT_CODES",
    "CONTENT_FILTER",
    "ContentRejected",
    "ContextLengthExceeded",
    "refused",
    "rejected",
    "too_long",
]


class ContentRejected(FatalError):
    """The provider refused the prompt on content policy; `reason` is the provider's own."""

    def __init__(self, message: str, error: FatalError, reason: str) -> None:
        super().__init__(message, error.attempts, error.response)
        self.reason = reason


def is_content_rejection(reason: str) -> bool:
    """Whether an attempt's reason marks a content-policy rejection."""
    return not CONTENT_CODES.isdisjoint(reason.split())


def rejected(capability: str, error: FatalError) -> ContentRejected | None:
    """ContentRejected when the last attempt was refused on content policy, else None."""
    last = error.attempts[-1] if error.attempts else None
    if last is None or not is_content_rejection(last.reason):
        return None
    response = error.response
    words = None
    if response is not None:
        words = json_field(response, "error", "message") or json_field(
            response, "promptFeedback", "blockReasonMessage"
        )
    detail = [word for word in last.reason.split()[1:] if word not in CONTENT_CODES]
    reason = words or " ".join(detail) or last.reason
    return ContentRejected(
        f"{capability}: {last.provider} refused the prompt on content policy: {reason}; "
        "not retried",
        error,
        reason,
    )


def too_long(capability: str, error: FatalError) -> ContextLengthExceeded | None:
    """ContextLengthExceeded when the last attempt said the prompt does not fit its model
    (adapters put `context_length_exceeded` in its reason), else None."""
    last = error.attempts[-1] if error.attempts else None
    if last is None or "context_length_exceeded" not in last.reason:
        return None
    return ContextLengthExceeded(
        f"{capability}: the prompt is longer than {last.provider}'s model accepts "
        "(context_length_exceeded); not retried on the same model",
        error.attempts,
        error.response,
    )


def refused(capability: str, error: FatalError) -> FatalError | None:
    """The clearer error for a prompt a provider refused (ContentRejected, or
    ContextLengthExceeded); None when `error` is some other final failure."""
    return rejected(capability, error) or too_long(capability, error)
