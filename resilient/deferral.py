"""The contract between the gateway and a deferral backend, which lives in `queues`.

When a deferrable call exhausts its chain, the gateway hands it to the backend, which must make
it durable before `park` returns and replay it later through the same gateway. The core finds
the backend through the `resilient.deferral` entry point, so it never imports `queues`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from resilient.errors import ResilientError
from resilient.result import Attempt


@runtime_checkable
class DeferrableOperation(Protocol):
    """An operation that can be parked: rebuilt from `payload` by its kind's decoder."""

    kind: str  # names the decoder registered with `register_operation`
    operation_id: str  # one logical operation across retries, replays and providers

    def payload(self) -> Mapping[str, Any]:
        """Provider-neutral, JSON-safe, and free of credentials (resolved again at replay)."""
        ...


class DeferralBackend(Protocol):
    def park(self, capability: str, op: DeferrableOperation, attempts: tuple[Attempt, ...]) -> str:
        """Store durably; return the deferral id. Raises on failure: nothing accepted is lost."""
        ...

    def close(self) -> None: ...


_decoders: dict[str, Callable[[Mapping[str, Any]], Any]] = {}


def register_operation(kind: str, decoder: Callable[[Mapping[str, Any]], Any]) -> None:
    """How to rebuild a parked operation of `kind` from its payload at replay time."""
    _decoders[kind] = decoder


def decode_operation(kind: str, payload: Mapping[str, Any]) -> Any:
    try:
        decoder = _decoders[kind]
    except KeyError:
        raise ResilientError(f"no decoder for parked operations of kind {kind!r}") from None
    return decoder(payload)
