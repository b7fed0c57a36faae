"""Cross-channel fallback: an SMS no SMS provider could deliver goes out as an email, or an
email as an SMS, adapted to what the other channel can carry.

It is opt-in twice: the capability names its `fallback` (and the sender there) in config, and
the call names the recipient on that channel (`fallback_to`), which the message itself does not
carry. It fires only when the first channel was exhausted, never after an outcome that may have
delivered (ambiguous) or one any provider would refuse (fatal). A delivery by the fallback is
recorded under the original operation id, so a retry of the same message is deduplicated.
"""

from __future__ import annotations

import html
import re
import time
import uuid
from dataclasses import replace
from typing import Any

from providers.models import MAX_SMS_CHARS, Email, Sms
from resilient.errors import InvalidRequest
from resilient.ledger import DELIVERED, Ledger, LedgerEntry
from resilient.result import Result
from resilient.settings import CapabilitySettings

_TAGS = re.compile(r"<[^>]+>")
SUBJECT_CHARS = 78  # one header line


def planned(model: Any, capability: CapabilitySettings, to: str) -> tuple[Any, str, Any]:
    """(the message with its operation id fixed now, the fallback capability, the message for
    it). Raises InvalidRequest before anything is sent when the capability has no fallback or
    the recipient does not fit the other channel."""
    if not model.idempotency_key:
        model = replace(model, idempotency_key=uuid.uuid4().hex)
    target, other = _adapted(model, capability, to)
    return model, target, other


def _adapted(model: Any, capability: CapabilitySettings, to: str) -> tuple[str, Any]:
    target = capability.fallback
    if target is None:
        raise InvalidRequest(
            f"capability {capability.name!r} has no fallback channel in its config"
        )
    key = f"{model.idempotency_key}:{target}"
    if isinstance(model, Sms):
        first_line = model.body.strip().splitlines()[0]
        return target, Email(
            sender=capability.fallback_sender or "",
            to=[to],
            subject=first_line[:SUBJECT_CHARS],
            text=model.body,
            idempotency_key=key,
        )
    assert isinstance(model, Email)
    text = model.text if model.text is not None else html.unescape(_TAGS.sub(" ", model.html or ""))
    body = f"{model.subject}\n{' '.join(text.split())}"[:MAX_SMS_CHARS]
    return target, Sms(to=to, body=body, sender=capability.fallback_sender, idempotency_key=key)


def settled(
    first: Any, fallback: Result[Any], ledger: Ledger, attempts: tuple[Any, ...]
) -> Result[Any]:
    """The call's result: the fallback's, carrying the first channel's attempts too, and a
    delivery recorded under the first message's id."""
    if fallback.status == "delivered" and fallback.provider and fallback.value is not None:
        delivered = LedgerEntry(
            DELIVERED, fallback.provider, time.time(), message_id=fallback.value.message_id
        )
        ledger.record(first.idempotency_key, delivered)
    return Result(
        fallback.status,
        fallback.provider,
        attempts + fallback.attempts,
        fallback.value,
        fallback.deferral_id,
    )
