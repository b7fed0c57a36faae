"""Operating a running gateway: live overrides, config reloads and status, without a deploy.

The ops loop, once a second, reloads a changed config file, applies the overrides if they
changed and publishes the gateway's status. Overrides come from the override store (Redis, or
the local file). Status goes to a status board (Redis keys that expire, or one file per process
beside the overrides file), where `resilient status` reads every running process's view. If
Redis is unreachable the loop keeps the last overrides it applied and tries again next tick:
serving never waits on it. The loop changes the gateway only through the methods named in
`Operated`; the gateway owns the loop (`gw.ops`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from resilient.errors import ResilientError
from resilient.overrides import (
    FileOverrideStore,
    OverrideState,
    OverrideStore,
    RedisOverrideStore,
)
from resilient.settings import GatewaySettings

TICK = 1.0  # seconds: a change is live in every process within about this long
STATUS_TTL = 10.0  # seconds a published status counts as current

logger = logging.getLogger("resilient")


class Operated(Protocol):
    """What the ops loop needs of the gateway it runs for."""

    @property
    def settings(self) -> GatewaySettings: ...

    def apply_overrides(self, state: OverrideState) -> None: ...

    def overrides_lapse(self) -> bool: ...

    def reload(self, settings: GatewaySettings) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...


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


def stores_for(settings: GatewaySettings) -> tuple[OverrideStore, StatusBoard]:
    """Redis when the config names one, else files beside `overrides_path`."""
    url = settings.redis_url
    if url:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return RedisOverrideStore(client), RedisStatusBoard(client)
    path = Path(settings.overrides_path)
    return FileOverrideStore(path), FileStatusBoard(path.parent / "status")


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a changed file: (mtime in ns, size); None when it is no file."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return (info.st_mtime_ns, info.st_size)


class OpsLoop:
    """The loop's thread and what it remembers: the overrides version applied, the config file
    seen, and why the last reload failed."""

    def __init__(self, gateway: Operated) -> None:
        self._gateway = gateway
        self.store, self.board = stores_for(gateway.settings)
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

    def reload_on_sighup(self) -> None:
        """Reload the config file on SIGHUP too (from the main thread, as signals need)."""
        signal.signal(signal.SIGHUP, lambda *_: self.reload_config(force=True))

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
