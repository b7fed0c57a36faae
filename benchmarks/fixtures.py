"""What the suites measure: gateways built from settings, in-memory transports, the simulator.

The gateway under test runs the full pipeline: a rate limit that is set (but never binds at the
rates measured), the breaker, the retry policy, the attempt timeout, classification, and events
with the default log listener. The `resilient` logger keeps Python's default level (WARNING) and
gets a NullHandler, as in an application that configured logging elsewhere: records at WARNING
and above are built and dropped, nothing is written to the terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from resilient.gateway import Gateway
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.units import Rate

PATH = "/v1/ping"
BODY = b'{"ok":true}'
RESPONSE_HEADERS = {"content-type": "application/json"}
RATE = Rate(1_000_000, 1.0)  # set, so the limiter books every call; never binds here
RETRY = RetrySettings(attempts=3, backoff_base=0.2, backoff_cap=5.0)
TIMEOUTS = TimeoutSettings(connect=5.0, read=30.0, write=30.0, attempt=30.0)
# What the gateway's per-attempt httpx timeouts come to with TIMEOUTS: raw clients get the same.
RAW_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=30.0)
# The same pool on both sides: 20 connections, all kept alive. httpcore 1.0's pool does
# O(connections^2) bookkeeping per request once it holds more connections than it keeps alive
# (httpx's default, 100 and 20, closes and reopens connections under load, then times connects
# out), and O(connections^2) per request when it keeps 100 alive; 20 and 20 is the steadiest and
# fastest for either side, so the ratio measures the gateway, not the pool's chaos.
LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=60.0)
ROOT = Path(__file__).resolve().parent.parent

logging.getLogger("resilient").addHandler(logging.NullHandler())


def provider_settings(name: str, base_url: str, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {
        "timeouts": TIMEOUTS,
        "retry": RETRY,
        "breaker": BreakerSettings(open_for=3600.0, open_for_max=3600.0),
        "rate_limit": RATE,
    }
    values.update(overrides)
    return ProviderSettings(name=name, kind="http", base_url=base_url, **values)


def gateway(
    base_urls: list[str],
    *,
    transport: httpx.BaseTransport | None = None,
    async_transport: httpx.AsyncBaseTransport | None = None,
    redis_url: str | None = None,
) -> Gateway:
    """One "http" capability chaining providers p0..pN-1, one per base URL. With `redis_url`,
    breaker and limiter state (and the ops loop's overrides and status) live in that Redis."""
    providers = [provider_settings(f"p{i}", url) for i, url in enumerate(base_urls)]
    chain = tuple(p.name for p in providers)
    settings = GatewaySettings(
        source="<benchmarks>",
        redis_url=redis_url,
        providers={p.name: p for p in providers},
        capabilities={"http": CapabilitySettings("http", chain)},
    )
    return Gateway(settings, transport=transport, async_transport=async_transport)


def open_all_but_last(gw: Gateway) -> None:
    """Force every provider's breaker but the last one's open (they stay open for an hour)."""
    names = list(gw.providers)
    for name in names[:-1]:
        gw.provider(name).breaker.force("open")


# -- in-memory transports: a fresh 200 per request, no I/O at all --------------------------


class MemoryTransport(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=RESPONSE_HEADERS, content=BODY)


class AsyncMemoryTransport(httpx.AsyncBaseTransport):
    """Yields to the event loop once, as any real I/O does: the loop's own housekeeping (such
    as dropping cancelled timers) then runs as it would in production, on both sides."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return httpx.Response(200, headers=RESPONSE_HEADERS, content=BODY)


class PeakTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and records the most requests it ever held at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.in_flight = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    def reset_peak(self) -> int:
        peak, self.peak = self.peak, self.in_flight
        return peak

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- the simulator, in its own process -------------------------------------------------------


class SimulatorProcess:
    """`python -m benchmarks.server`: the loopback simulator on the other core, so its CPU is
    not taken from the client under test (and the GIL is not shared with it)."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url

    def cpu_seconds(self) -> float:
        """User + system CPU the server used so far (Linux; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextmanager
def simulator_process() -> Iterator[SimulatorProcess]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"benchmark simulator did not start: {line!r}")
        yield SimulatorProcess(proc, line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the server stops
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the baselines: plain httpx clients with the same timeouts as the gateway's attempts ------


def raw_client(base_url: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(base_url=base_url, transport=transport, timeout=RAW_TIMEOUT)


def raw_async_client(
    base_url: str, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=RAW_TIMEOUT)
