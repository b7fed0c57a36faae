"""Secrets that cannot leak by accident: they print as '***' and are masked in every log line."""

from __future__ import annotations

import threading


class Secret:
    """An API key or password. `str()`/`repr()` never show it; `reveal()` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            _registry.add(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never serialized; resolve it from config where it is used")


class _SecretRegistry:
    """Every secret value ever loaded, so redaction can mask it wherever it shows up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()  # longest first: no tail of a longer one survives

    def add(self, value: str) -> None:
        if len(value) < 4:
            return  # too short to mask without mangling ordinary text
        with self._lock:
            self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "***")
        return text


_registry = _SecretRegistry()
redact = _registry.redact
