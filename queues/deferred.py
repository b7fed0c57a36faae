"""A parked request, and how it is written to storage (JSON; optionally Fernet-encrypted)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from resilient.result import Attempt


class CorruptRequest(ValueError):
    """Stored bytes that do not decode to a DeferredRequest: dead-lettered, never retried."""


@dataclass(frozen=True, slots=True)
class DeferredRequest:
    capability: str
    operation: str  # the operation kind: names its decoder (resilient.deferral)
    payload: Mapping[str, Any]  # provider-neutral, JSON-safe, no credentials
    operation_id: str  # the same logical operation on every attempt, replay and provider
    created_at: float  # wall-clock seconds
    deadline: float  # wall-clock: past it the request is dead-lettered, never sent late
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tries: int = 0  # replays so far
    attempts: tuple[Mapping[str, Any], ...] = ()  # every attempt, original call included

    def with_attempts(self, attempts: tuple[Attempt, ...], *, replayed: bool) -> DeferredRequest:
        """A copy that also records `attempts` (and counts one more replay if `replayed`)."""
        records = tuple(
            {
                "provider": a.provider,
                "outcome": a.outcome.value,
                "status": a.status_code,
                "latency": round(a.latency, 6),
                "reason": a.reason,
            }
            for a in attempts
        )
        return replace(self, attempts=self.attempts + records, tries=self.tries + replayed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capability": self.capability,
            "operation": self.operation,
            "payload": dict(self.payload),
            "operation_id": self.operation_id,
            "created_at": self.created_at,
            "deadline": self.deadline,
            "tries": self.tries,
            "attempts": [dict(a) for a in self.attempts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeferredRequest:
        try:
            return cls(
                id=str(data["id"]),
                capability=str(data["capability"]),
                operation=str(data["operation"]),
                payload=dict(data["payload"]),
                operation_id=str(data["operation_id"]),
                created_at=float(data["created_at"]),
                deadline=float(data["deadline"]),
                tries=int(data["tries"]),
                attempts=tuple(dict(a) for a in data["attempts"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRequest(f"not a deferred request: {exc!r}") from exc


class Codec:
    """Bytes at rest. With a Fernet key, a stored payload is unreadable without that key."""

    def __init__(self, fernet_key: str | None = None) -> None:
        self._fernet: Any = None
        if fernet_key:
            try:
                from cryptography.fernet import Fernet
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise RuntimeError(
                    "encryption at rest needs the `cryptography` package: "
                    "pip install 'resilient-gateway[crypto]'"
                ) from exc
            self._fernet = Fernet(fernet_key.encode())

    def encode(self, request: DeferredRequest) -> bytes:
        raw = json.dumps(request.to_dict(), separators=(",", ":")).encode()
        return bytes(self._fernet.encrypt(raw)) if self._fernet else raw

    def decode(self, data: bytes) -> DeferredRequest:
        if self._fernet is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self._fernet.decrypt(data)
            except InvalidToken as exc:
                raise CorruptRequest("cannot decrypt: wrong key or damaged data") from exc
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRequest(f"not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise CorruptRequest("not a JSON object")
        return DeferredRequest.from_dict(parsed)
