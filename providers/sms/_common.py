"""What the SMS adapters share: the sender a message goes out from, Basic auth, and the reading
of an option that may hold a secret.

Twilio and Vonage give no idempotency key for sending a message, so an SMS that a provider may
have taken is never sent through another one: only answers that say it was *not* taken fail over.
"""

from __future__ import annotations

from pydantic import SecretStr

from providers.models import Sms
from resilient.errors import ResilientError
from resilient.runtime import ProviderRuntime
from resilient.secrets import Secret


def sender(sms: Sms, provider: ProviderRuntime) -> str:
    """`sms.sender`, else the provider's configured `sender` (a number or an alphanumeric id):
    a provider with neither cannot say who the message is from."""
    configured = provider.settings.options.get("sender")
    chosen = sms.sender or configured
    if not chosen:
        raise ResilientError(
            f"provider {provider.name!r} has no sender: give Sms(sender=...) or set `sender` "
            "in its config"
        )
    return str(chosen)


def reveal(value: object) -> str | None:
    """A secret option's text: config turns SecretStr options into Secret; settings built by
    hand may hold either, or plain text."""
    if isinstance(value, Secret):
        return value.reveal() or None
    if isinstance(value, SecretStr):
        return value.get_secret_value() or None
    return value if isinstance(value, str) and value else None
