"""Live ops overrides: take a provider out of rotation (for a while, with a reason), hold its
breaker open or closed, change its rate limit, or reorder a capability's chain; no deploy.

They live in Redis when the gateway has one (every process sees a change within a second) and
in a local JSON file otherwise. Each change is logged with who, when and why. Gateways poll the
store's version once a second and apply what changed (`resilient.ops`).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

LOG_LIMIT = 200  # changes kept in the log, newest last


@dataclass(frozen=True)
class ProviderOverride:
    enabled: bool | None = None  # None: as configured
    until: float | None = None  # wall clock: the enable/disable override lapses then
    reason: str | None = None
    breaker: str | None = None  # "open" or "closed": held so, whatever calls do
    rate_limit: str | None = None  # "100/min": replaces the configured limit

    def enabled_now(self, now: float) -> bool | None:
        if self.enabled is None or (self.until is not None and now >= self.until):
            return None
        return self.enabled


@dataclass(frozen=True)
class OverrideState:
    version: int = 0
    providers: dict[str, ProviderOverride] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OverrideState:
        data = json.loads(text)
        return cls(
            version=int(data.get("version", 0)),
            providers={k: ProviderOverride(**v) for k, v in data.get("providers", {}).items()},
            chains={k: list(v) for k, v in data.get("chains", {}).items()},
            log=list(data.get("log", [])),
        )

    def changed(self, what: str, reason: str | None, **values: Any) -> OverrideState:
        """This state, one version on, with the change appended to the log."""
        entry = {
            "at": time.time(),
            "who": f"{getpass.getuser()}@{socket.gethostname()}",
            "what": what,
            "reason": reason,
            **values,
        }
        return replace(self, version=self.version + 1, log=[*self.log, entry][-LOG_LIMIT:])


Change = Callable[[OverrideState], OverrideState]


class OverrideStore(Protocol):
    def version(self) -> int:
        """Cheap: read every second by every gateway."""
        ...

    def load(self) -> OverrideState: ...

    def update(self, change: Change) -> OverrideState:
        """Read, change and write back atomically (against other writers)."""
        ...


class FileOverrideStore:
    """A JSON file, written whole and renamed into place under an exclusive lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def version(self) -> int:
        return self.load().version

    def load(self) -> OverrideState:
        try:
            return OverrideState.from_json(self.path.read_text())
        except FileNotFoundError:
            return OverrideState()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def update(self, change: Change) -> OverrideState:
        with self._locked():
            state = change(self.load())
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(state.to_json())
            temporary.replace(self.path)
        return state


class RedisOverrideStore:
    """One JSON value and a version counter; writers use an optimistic transaction."""

    KEY = "resilient:overrides"

    def __init__(self, client: Any) -> None:
        self._redis = client

    def version(self) -> int:
        return int(self._redis.get(self.KEY + ":version") or 0)

    def load(self) -> OverrideState:
        raw = self._redis.get(self.KEY)
        return OverrideState() if raw is None else OverrideState.from_json(raw)

    def update(self, change: Change) -> OverrideState:
        import redis

        while True:
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(self.KEY)
                    raw = pipe.get(self.KEY)
                    state = change(OverrideState() if raw is None else OverrideState.from_json(raw))
                    pipe.multi()
                    pipe.set(self.KEY, state.to_json())
                    pipe.set(self.KEY + ":version", state.version)
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue  # another writer won: apply our change to theirs


def set_provider(name: str, what: str, reason: str | None = None, **values: Any) -> Change:
    """A change to provider `name`'s override; `values` are ProviderOverride fields."""

    def change(state: OverrideState) -> OverrideState:
        current = state.providers.get(name, ProviderOverride())
        providers = {**state.providers, name: replace(current, **values)}
        return replace(state.changed(what, reason, provider=name, **values), providers=providers)

    return change


def set_chain(capability: str, chain: list[str] | None, reason: str | None = None) -> Change:
    """Reorder `capability`'s chain (None: back to the configured order)."""

    def change(state: OverrideState) -> OverrideState:
        chains = dict(state.chains)
        if chain is None:
            chains.pop(capability, None)
        else:
            chains[capability] = list(chain)
        what = "chain" if chain is not None else "chain reset"
        return replace(
            state.changed(what, reason, capability=capability, chain=chain), chains=chains
        )

    return change
