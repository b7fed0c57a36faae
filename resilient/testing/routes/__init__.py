"""Provider-shaped routes for the simulator, so each official SDK pointed at it runs end to end.

    from resilient.testing.routes import mount
    stripe = mount(simulator, "stripe", prefix="/stripe")
    client = StripeClient("sk_test_x", base_addresses={"api": simulator.url("/stripe")})
    ...
    assert len(stripe.payment_intents) == 1

Each provider answers in its documented shapes, errors included, and keeps what it created on the
state object `mount` returns. `Simulator.reset()` drops routes: mount again after it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import importlib.util
import pkgutil
import secrets
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from resilient.testing.routes.anthropic import AnthropicState
    from resilient.testing.routes.openai import OpenAIState
    from resilient.testing.routes.paypal import PayPalState
    from resilient.testing.routes.sendgrid import SendGridState
    from resilient.testing.routes.stripe import StripeState
    from resilient.testing.routes.twilio import TwilioState
    from resilient.testing.routes.vonage import VonageState
    from resilient.testing.simulator import SimRequest, Simulator

__all__ = ["mount"]


@overload
def mount(
    sim: Simulator, provider: Literal["anthropic"], *, prefix: str = ""
) -> AnthropicState: ...
@overload
def mount(sim: Simulator, provider: Literal["openai"], *, prefix: str = "") -> OpenAIState: ...
@overload
def mount(sim: Simulator, provider: Literal["stripe"], *, prefix: str = "") -> StripeState: ...
@overload
def mount(sim: Simulator, provider: Literal["sendgrid"], *, prefix: str = "") -> SendGridState: ...
@overload
def mount(sim: Simulator, provider: Literal["twilio"], *, prefix: str = "") -> TwilioState: ...
@overload
def mount(sim: Simulator, provider: Literal["vonage"], *, prefix: str = "") -> VonageState: ...
@overload
def mount(sim: Simulator, provider: Literal["paypal"], *, prefix: str = "") -> PayPalState: ...
def mount(sim: Simulator, provider: str, *, prefix: str = "") -> Any:
    """Serve `provider`'s API under `prefix` (its base URL is then `sim.url(prefix)`, plus "/v1"
    for OpenAI); returns the provider's state: what it created, and knobs for tests."""
    if not provider.isidentifier() or not importlib.util.find_spec(f"{__name__}.{provider}"):
        known = sorted(m.name for m in pkgutil.iter_modules(__path__))
        raise ValueError(f"no simulator routes for {provider!r}; known: {', '.join(known)}")
    module = importlib.import_module(f"{__name__}.{provider}")
    return module.mount(sim, prefix.rstrip("/"))


def new_id(prefix: str, hex_digits: int = 24) -> str:
    """An identifier in a provider's style: a type prefix and random hex."""
    return prefix + secrets.token_hex(hex_digits // 2)


def bearer_token(request: SimRequest) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def basic_credentials(request: SimRequest) -> tuple[str, str] | None:
    """(username, password) of an `Authorization: Basic ...` header."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None
