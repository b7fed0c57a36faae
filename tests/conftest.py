"""Shared helpers: gateways over the simulator, driven through the sync or the async executor."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from resilient.gateway import Gateway
from resilient.result import Result
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.testing import SimResponse, Simulator

FAST_RETRY = RetrySettings(attempts=3, backoff_base=0.01, backoff_cap=0.05)


# -- commands run early ---------------------------------------------------------------------


class EarlyRun:
    """A command a test runs as a user would (a subprocess) and only checks the output of,
    such as the benchmark's quick run: started in the background as the session begins when a
    test marked `@pytest.mark.early(RUN)` is selected, so that its seconds overlap the rest of
    the suite; those tests run last and wait for it. Early runs go one at a time (about one
    core's worth of the machine) and their timings are never asserted. `argv` is given a
    scratch directory of the run's own (`directory`, removed as the session ends), which is
    also its working directory unless `cwd` says otherwise."""

    def __init__(
        self,
        argv: Callable[[Path], Sequence[str]],
        *,
        timeout: float,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._argv, self._timeout, self._cwd, self._env = argv, timeout, cwd, env
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._outcome: subprocess.CompletedProcess[str] | BaseException | None = None
        self.directory: Path | None = None

    def run(self) -> subprocess.CompletedProcess[str]:
        """The command's outcome: run once (a later call waits for that run), within `timeout`
        seconds of its start."""
        with self._lock:
            if self._outcome is None:
                try:
                    self._outcome = self._run()
                except Exception as exc:
                    self._outcome = exc
            if isinstance(self._outcome, BaseException):
                raise self._outcome
            return self._outcome

    def _run(self) -> subprocess.CompletedProcess[str]:
        self.directory = Path(tempfile.mkdtemp(prefix="early-run-"))
        argv = list(self._argv(self.directory))
        with (
            tempfile.TemporaryFile("w+") as out,  # files, not pipes: no one reads them meanwhile
            tempfile.TemporaryFile("w+") as err,
        ):
            self._process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err,
                text=True,
                cwd=self._cwd or self.directory,  # never the current test's directory
                env=self._env,
            )
            try:
                code = self._process.wait(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(argv, code, out.read(), err.read())

    def stop(self) -> None:
        """Kill the command if it still runs (the session ended first); remove its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "early(run): waits for an EarlyRun started as the session began; runs last"
    )


def _early_runs(items: Sequence[pytest.Item]) -> list[Any]:
    runs: list[Any] = []
    for item in items:
        marker = item.get_closest_marker("early")
        if marker is not None and all(run is not marker.args[0] for run in runs):
            runs.append(marker.args[0])
    return runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests waiting for an early run go last, in their order: it has the suite's length to end."""
    waiting = [item for item in items if item.get_closest_marker("early") is not None]
    if waiting:
        items[:] = [item for item in items if item.get_closest_marker("early") is None] + waiting


def pytest_collection_finish(session: pytest.Session) -> None:
    runs = _early_runs(session.items)
    if not runs or session.config.option.collectonly:
        return
    session.config.stash[_EARLY] = runs

    def one_after_another() -> None:
        for run in runs:
            with contextlib.suppress(Exception):  # its test calls run() and gets the error
                run.run()

    threading.Thread(target=one_after_another, name="early-runs", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for run in session.config.stash.get(_EARLY, []):
        run.stop()


_EARLY = pytest.StashKey[list[Any]]()


@pytest.fixture(autouse=True)
def _own_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in a directory of its own: gateways keep their spool, ledger and overrides
    under `.resilient/` by default, and one test's operations must not be another's."""
    monkeypatch.chdir(tmp_path)


def provider(name: str, base_url: str, **overrides: Any) -> ProviderSettings:
    """A provider with test-sized timeouts and backoff unless overridden."""
    values: dict[str, Any] = {
        "timeouts": TimeoutSettings(connect=0.5, read=1.0, write=1.0, attempt=1.0),
        "retry": FAST_RETRY,
        "breaker": BreakerSettings(min_calls=5, window=5.0, open_for=0.3, open_for_max=1.0),
    }
    values.update(overrides)
    return ProviderSettings(name=name, kind="http", base_url=base_url, **values)


def gateway_for(*providers: ProviderSettings, timeout: float | None = None) -> Gateway:
    chain = tuple(p.name for p in providers)
    return Gateway(
        GatewaySettings(
            providers={p.name: p for p in providers},
            capabilities={"http": CapabilitySettings("http", chain, timeout=timeout)},
        )
    )


Call = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every end-to-end behaviour runs through both executors."""
    return str(request.param)


def caller(gw: Gateway, mode: str) -> Callable[..., Any]:
    """`await call("POST", "/x", json=...)` through gw.http (async) or gw.sync.http in a thread."""

    async def call(method: str, url: str, **kwargs: Any) -> Result[httpx.Response]:
        if mode == "sync":
            return await asyncio.to_thread(gw.sync.http.request, method, url, **kwargs)
        return await gw.http.request(method, url, **kwargs)  # type: ignore[no-any-return]

    return call


def provider_table(kind: str, base_url: str | None, **fields: Any) -> dict[str, Any]:
    """A provider's config table with test-sized retries; without `base_url`, its public API
    (which respx intercepts)."""
    table: dict[str, Any] = {
        "kind": kind,
        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
        **fields,
    }
    if base_url is not None:
        table["base_url"] = base_url
    return table


def capability_gateway(capability: str, chain: list[str], **providers: dict[str, Any]) -> Gateway:
    """A gateway whose `capability` chain is `chain`, from provider config tables."""
    from resilient.config import settings_from_mapping

    return Gateway(
        settings_from_mapping(
            {"providers": providers, "capabilities": {capability: {"chain": chain}}}
        )
    )


async def send_message(gw: Gateway, mode: str, message: Any, **kwargs: Any) -> Any:
    """Send an Email or Sms through its capability's facade: blocking in a thread, or awaited."""
    facade = message.capability
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.capability(facade).send, message, **kwargs)
    return await gw.capability(facade).send(message, **kwargs)


def receipt(result: Result[Any]) -> Any:
    """The Receipt of a delivered result."""
    assert result.value is not None
    return result.value


@pytest.fixture
def two_providers(simulator: Simulator) -> Iterator[Simulator]:
    """The simulator serving POST/GET /a/v1/things and /b/v1/things with 200 JSON."""
    for prefix in ("/a", "/b"):
        for method in ("GET", "POST"):
            simulator.route(
                method,
                f"{prefix}/v1/things",
                lambda request, _p=prefix: SimResponse.json({"served_by": _p[1:]}),
            )
    yield simulator
