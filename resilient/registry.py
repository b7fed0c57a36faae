"""Provider kinds, found by name: `resilient` never imports `providers`, it looks kinds up here.

Packages register kinds on import or through the `resilient.providers` entry-point group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    capability: str  # "email", "sms", "payments", "social", "llm", or "http" for plain HTTP APIs
    options: type[BaseModel] | None = None  # kind-specific config keys; None: no extra keys
    factory: Callable[..., Any] | None = None  # builds the adapter from its ProviderSettings
    classify: tuple[tuple[str, str], ...] = ()  # the kind's own status rules; config's win
    # (sync, async) httpx transports built from its ProviderSettings, for an API that is not
    # HTTP (SMTP); used where the gateway was given none
    transports: Callable[..., tuple[Any, Any]] | None = None


_kinds: dict[str, ProviderKind] = {}
_lock = threading.Lock()
_entry_points_loaded = threading.Event()


def register(kind: ProviderKind) -> None:
    with _lock:
        _kinds[kind.name] = kind


def is_registered(name: str) -> bool:
    """Whether `name` is registered yet, without loading entry points (for registering code)."""
    return name in _kinds


def kinds() -> Mapping[str, ProviderKind]:
    """Every known kind, loading the `resilient.providers` entry points on first use."""
    if not _entry_points_loaded.is_set():
        for ep in entry_points(group="resilient.providers"):
            ep.load()  # the module registers its kinds on import
        _entry_points_loaded.set()
    return dict(_kinds)


def get(name: str) -> ProviderKind:
    return kinds()[name]


register(ProviderKind(name="http", capability="http"))


@dataclass(frozen=True, slots=True)
class FacadeKinds:
    """The classes behind `gw.<capability>` and `gw.sync.<capability>` for one capability kind."""

    async_facade: Callable[[Any, str], Any]
    sync_facade: Callable[[Any, str], Any]


_facades: dict[str, FacadeKinds] = {}


def register_facade(capability: str, facades: FacadeKinds) -> None:
    with _lock:
        _facades[capability] = facades


def facade(capability: str) -> FacadeKinds:
    kinds()  # facades of entry-point packages register on import, like their kinds
    return _facades[capability]
