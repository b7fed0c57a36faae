"""Operating a running gateway: live overrides, config reloads and status, without a deploy.

The ops loop, once a second, reloads a changed config file, applies the overrides if they
changed and publishes the gateway's status. Overrides come from the override store (Redis, or
the local file). Status goes to a status board (Redis keys that expire, or one file per process
beside the overrides file), where `resilient status` reads every running process's view. If
Redis is unreachable the loop keeps the last overrides it applied and tries again next tick:
serving never waits on it. The functions at the end are the bodies of the gateway's ops methods
(`gw.apply_overrides`, `gw.reload`, `gw.status`, ...): they work on that gateway's state.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from resilient import registry
from resilient.errors import ConfigError, ResilientError
from resilient.overrides import (
    FileOverrideStore,
    OverrideState,
    OverrideStore,
    ProviderOverride,
    RedisOverrideStore,
)
from resilient.secrets import redact
from resilient.units import parse_rate

if TYPE_CHECKING:
    from resilient.gateway import Gateway
    from resilient.settings import GatewaySettings

TICK = 1.0  # seconds: a change is live in every process within about this long
STATUS_TTL = 10.0  # seconds a published status counts as current

logger = logging.getLogger("resilient")


class StatusBoard(Protocol):
    def publish(self, status: dict[str, Any]) -> None: ...

    def read(self) -> dict[str, dict[str, Any]]:
        """Every process's current status, by process (host:pid)."""
        ...

    def withdraw(self) -> None: ...


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class FileStatusBoard:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._mine = self.directory / f"{process_name().replace(':', '-')}.json"

    def publish(self, status: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self._mine.with_suffix(".tmp")
        temporary.write_text(json.dumps(status))
        temporary.replace(self._mine)

    def read(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted(self.directory.glob("*.json")):
            try:
                if time.time() - path.stat().st_mtime > STATUS_TTL:
                    continue
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a process writing or exiting right now
        return found

    def withdraw(self) -> None:
        self._mine.unlink(missing_ok=True)


class RedisStatusBoard:
    PREFIX = "resilient:status:"

    def __init__(self, client: Any) -> None:
        self._redis = client
        self._key = self.PREFIX + process_name()

    def publish(self, status: dict[str, Any]) -> None:
        self._redis.set(self._key, json.dumps(status), ex=int(STATUS_TTL))

    def read(self) -> dict[str, dict[str, Any]]:
        keys = sorted(self._redis.scan_iter(match=self.PREFIX + "*"))
        values = self._redis.mget(keys) if keys else []
        return {
            (k.decode() if isinstance(k, bytes) else k)[len(self.PREFIX) :]: json.loads(v)
            for k, v in zip(keys, values, strict=True)
            if v is not None
        }

    def withdraw(self) -> None:
        self._redis.delete(self._key)


def stores_for(gateway: Gateway) -> tuple[OverrideStore, StatusBoard]:
    """Redis when the gateway has one, else files beside `overrides_path`."""
    url = gateway.settings.redis_url
    if url:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return RedisOverrideStore(client), RedisStatusBoard(client)
    path = Path(gateway.settings.overrides_path)
    return FileOverrideStore(path), FileStatusBoard(path.parent / "status")


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a changed file: (mtime in ns, size); None when it is no file."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return (info.st_mtime_ns, info.st_size)


class OpsLoop:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.store, self.board = stores_for(gateway)
        self._applied = -1
        self._config = Path(gateway.settings.source)
        self._config_seen = _stamp(self._config)
        self.reload_error: str | None = None  # why the last reload failed, until one succeeds
        self._stop = threading.Event()
        self.refresh_overrides()  # before the first call: a new process obeys ops at once
        self._thread = threading.Thread(target=self._run, name="resilient-ops", daemon=True)
        self._thread.start()

    def reload_config(self, *, force: bool = False) -> None:
        """Reload the config file if it changed (or `force`): all of it, or none of it."""
        stamp = _stamp(self._config)
        if stamp is None or (stamp == self._config_seen and not force):
            return
        self._config_seen = stamp
        from resilient.config import load_settings

        try:
            rebuilt = self._gateway.reload(load_settings(self._config))
        except ResilientError as exc:
            self.reload_error = str(exc)
            logger.warning("config reload failed, keeping the last good config: %s", exc)
            return
        self.reload_error = None
        logger.info("config reloaded from %s; rebuilt: %s", self._config, rebuilt or "none")

    def tick(self) -> None:
        """Reload a changed config, apply overrides if they changed (or one lapsed), then
        publish status."""
        self.reload_config()
        if self.refresh_overrides():
            try:
                self.board.publish(self._gateway.status())
            except Exception as exc:  # Redis or the disk away: publish again next tick
                logger.warning("ops loop: status not published: %s: %s", type(exc).__name__, exc)

    def refresh_overrides(self) -> bool:
        """Apply the live overrides if they changed (or one lapsed). False when the store could
        not be read (Redis or the disk away): the last overrides stay, and a warning says so.
        Bounded by the store's own timeouts (a second for Redis)."""
        try:
            version = self.store.version()
            if version != self._applied or self._gateway.overrides_lapse():
                self._gateway.apply_overrides(self.store.load())
                self._applied = version
        except Exception as exc:
            logger.warning("ops loop: %s: %s (keeping the last overrides)", type(exc).__name__, exc)
            return False
        return True

    def _run(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(TICK):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.board.withdraw()
        except Exception as exc:
            logger.debug("ops loop: could not withdraw status: %s", exc)


# -- the bodies of the gateway's ops methods ---------------------------------------------------


def apply_overrides(gateway: Gateway, state: OverrideState) -> None:
    """Each provider's enabled flag, breaker hold and rate limit, then every chain, as `state`
    says (as configured where it says nothing); a chain override that does not fit is ignored."""
    now = time.time()
    for name, rt in gateway._providers.items():
        override = state.providers.get(name, ProviderOverride())
        enabled = override.enabled_now(now)
        rt.enabled = rt.settings.enabled if enabled is None else enabled
        rt.breaker.hold(override.breaker)
        rate = parse_rate(override.rate_limit) if override.rate_limit else rt.settings.rate_limit
        if rt.limiter.rate != rate:
            rt.limiter = rt.make_limiter(rate)
    chains = {}
    for capability, configured in gateway.settings.capabilities.items():
        names = state.chains.get(capability)
        if names is not None and not chain_fits(gateway, capability, names):
            logger.warning("ops: ignoring chain override %s for %s", names, capability)
            names = None
        chains[capability] = tuple(gateway._providers[n] for n in names or configured.chain)
    gateway._chains = chains
    if state.version != gateway.overrides.version:
        for change in state.log[len(gateway.overrides.log) :][-20:]:
            logger.info("ops: %s", redact(json.dumps(change, sort_keys=True)))
    gateway.overrides = state
    gateway._next_lapse = min(
        (o.until for o in state.providers.values() if o.until is not None and o.until > now),
        default=float("inf"),
    )


def overrides_lapse(gateway: Gateway) -> bool:
    return time.time() >= gateway._next_lapse


def chain_fits(gateway: Gateway, capability: str, names: Sequence[str]) -> bool:
    if not names or len(set(names)) != len(names):
        return False
    wanted = gateway._capability_kind(capability)
    return all(
        n in gateway._providers
        and registry.get(gateway._providers[n].settings.kind).capability in (wanted, "http")
        for n in names
    )


def reload(gateway: Gateway, settings: GatewaySettings) -> list[str]:
    """Keep the runtimes whose settings are unchanged, build the others, swap them in under the
    gateway's lock with the overrides re-applied, then close the retired ones."""
    current = gateway.settings
    if (settings.redis_url, settings.spool_path, settings.encryption_key) != (
        current.redis_url,
        current.spool_path,
        current.encryption_key,
    ):
        raise ConfigError(
            settings.source,
            "gateway",
            "redis_url, spool_path and encryption_key change only with a restart",
        )
    kept = {
        n: rt for n, rt in gateway._providers.items() if settings.providers.get(n) == rt.settings
    }
    providers = {
        name: kept.get(name) or gateway._runtime(ps) for name, ps in settings.providers.items()
    }
    with gateway._lock:
        retired = [rt for n, rt in gateway._providers.items() if kept.get(n) is not rt]
        gateway._providers = providers
        gateway.settings = settings
        gateway._facades.clear()
        gateway._sync_facades.clear()
        apply_overrides(gateway, gateway.overrides)  # rebuilds the chains on the new config
    for rt in retired:
        rt.close()
    return sorted(set(providers) - set(kept))


def reload_on_sighup(gateway: Gateway) -> None:
    loop = gateway._ops
    if loop is None:
        raise ResilientError("reloading needs the ops loop (a gateway built with ops=True)")
    signal.signal(signal.SIGHUP, lambda *_: loop.reload_config(force=True))


def status(gateway: Gateway) -> dict[str, Any]:
    queue: dict[str, Any] | None = None
    if gateway._deferral is not None:
        store = getattr(gateway._deferral, "store", None)
        if store is not None:
            try:
                queue = dict(store.stats())
            except Exception as exc:  # the status of a broken store is that it is broken
                queue = {"error": type(exc).__name__}
    return {
        "source": gateway.settings.source,
        "at": time.time(),
        "providers": {name: rt.status() for name, rt in gateway._providers.items()},
        "capabilities": {
            name: {"chain": [rt.name for rt in chain]} for name, chain in gateway._chains.items()
        },
        "queue": queue,
    }
