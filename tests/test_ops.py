"""Live ops: a change made from the CLI reaches a running gateway within about a second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient.config import load_settings
from resilient.gateway import Gateway
from resilient.testing import SimResponse, Simulator

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[gateway]
overrides_path = "{overrides}"
{redis}

[providers.a]
kind = "http"
base_url = "{base}/a"

[providers.b]
kind = "http"
base_url = "{base}/b"

[capabilities.http]
chain = ["a", "b"]
"""


@pytest.fixture(params=["file", "redis"])
def config(request: pytest.FixtureRequest, simulator: Simulator, tmp_path: Path) -> Path:
    """Overrides in the local file, and in Redis: the same commands, the same effect."""
    for name in ("a", "b"):
        simulator.route("GET", f"/{name}/x", lambda r, _n=name: SimResponse.json({"by": _n}))
    redis = ""
    if request.param == "redis":
        redis = f'redis_url = "{request.getfixturevalue("redis_url")}"'
    path = tmp_path / "resilient.toml"
    path.write_text(
        CONFIG.format(overrides=tmp_path / "overrides.json", redis=redis, base=simulator.base_url)
    )
    return path


@pytest.fixture
def gateway(config: Path) -> Iterator[Gateway]:
    with Gateway(load_settings(config)) as gw:
        yield gw


def cli(config: Path, *args: str, ok: bool = True) -> Any:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilient.cli",
            args[0],
            "--config",
            str(config),
            "--json",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)
    return run


def served_by(gw: Gateway) -> str | None:
    return gw.sync.http.request("GET", "/x").provider


def soon(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "not applied in time"
        time.sleep(0.1)


def test_disable_takes_effect_in_a_running_process(config: Path, gateway: Gateway) -> None:
    assert served_by(gateway) == "a"
    change = cli(config, "providers", "disable", "a", "--reason", "vendor incident 123")
    assert change["change"]["reason"] == "vendor incident 123" and "@" in change["change"]["who"]
    soon(lambda: served_by(gateway) == "b")
    cli(config, "providers", "enable", "a")
    soon(lambda: served_by(gateway) == "a")


FIRST_CALL = """
import sys
from resilient.config import load_settings
from resilient.gateway import Gateway
with Gateway(load_settings(sys.argv[1])) as gw:
    print(gw.sync.http.request("GET", "/x").provider)
"""


def first_call_of_a_new_process(config: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_process_started_after_a_change_obeys_it_from_its_first_call(config: Path) -> None:
    """A deploy, an autoscaled replica or a cron job started during an incident never sends
    its first call to a provider ops turned off, nor along a chain they reordered."""
    cli(config, "providers", "disable", "a", "--reason", "incident")
    assert first_call_of_a_new_process(config) == "b"
    cli(config, "providers", "enable", "a")
    cli(config, "chain", "http", "b", "a")
    assert first_call_of_a_new_process(config) == "b"


def test_disable_for_a_while_lapses_by_itself(config: Path, gateway: Gateway) -> None:
    cli(config, "providers", "disable", "a", "--for", "1500ms")
    soon(lambda: served_by(gateway) == "b")
    soon(lambda: served_by(gateway) == "a", timeout=6)


def test_breaker_held_open_then_released(config: Path, gateway: Gateway) -> None:
    cli(config, "providers", "open", "a")
    soon(lambda: gateway.provider("a").breaker.state == "open")
    assert served_by(gateway) == "b"
    cli(config, "providers", "release", "a")
    soon(lambda: gateway.provider("a").breaker.state == "closed")
    assert served_by(gateway) == "a"


def test_rate_limit_changed_live(config: Path, gateway: Gateway) -> None:
    cli(config, "providers", "limit", "a", "2/s")
    soon(lambda: str(gateway.provider("a").limiter.rate) == "2/1s")
    cli(config, "providers", "limit", "a", "config")
    soon(lambda: gateway.provider("a").limiter.rate is None)


def test_chain_reordered_live_and_reset(config: Path, gateway: Gateway) -> None:
    cli(config, "chain", "http", "b", "a", "--reason", "a is degraded")
    soon(lambda: served_by(gateway) == "b")
    cli(config, "chain", "http", "--reset")
    soon(lambda: served_by(gateway) == "a")


def test_bad_changes_are_refused_with_a_clear_error(config: Path) -> None:
    for args in (
        ("providers", "disable", "nope"),
        ("providers", "limit", "a", "fast"),
        ("chain", "http", "a", "a"),
        ("chain", "http", "zzz"),
    ):
        run = cli(config, *args, ok=False)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.startswith("resilient: ")


def test_status_shows_running_processes_and_recent_changes(config: Path, gateway: Gateway) -> None:
    served_by(gateway)
    cli(config, "providers", "disable", "b", "--reason", "maintenance")
    soon(lambda: not gateway.provider("b").enabled)
    gateway.ops.tick()  # publish now rather than within a second
    report = cli(config, "status")
    (process,) = [p for p in report["processes"].values() if p["source"] == str(config)]
    assert process["providers"]["b"]["enabled"] is False
    assert process["providers"]["a"]["samples"] >= 1
    assert report["overrides"]["recent_changes"][-1]["reason"] == "maintenance"


RELOADABLE = """
[gateway]
overrides_path = "{overrides}"

[providers.a]
kind = "http"
base_url = "{base}/a"

[providers.b]
kind = "http"
base_url = "{base}/b"
{b_limit}

[capabilities.http]
chain = {chain}
"""


def write_config(path: Path, simulator: Simulator, *, chain: str, b_limit: str = "") -> None:
    path.write_text(
        RELOADABLE.format(
            overrides=path.parent / "overrides.json",
            base=simulator.base_url,
            chain=chain,
            b_limit=b_limit,
        )
    )


@pytest.fixture
def reloadable(simulator: Simulator, tmp_path: Path) -> Iterator[tuple[Path, Gateway]]:
    for name in ("a", "b"):
        simulator.route("GET", f"/{name}/x", lambda r, _n=name: SimResponse.json({"by": _n}))
    path = tmp_path / "resilient.toml"
    write_config(path, simulator, chain='["a", "b"]')
    with Gateway.from_config(path) as gw:
        yield path, gw


def test_config_reloads_on_change_keeping_unchanged_providers_state(
    simulator: Simulator, reloadable: tuple[Path, Gateway]
) -> None:
    path, gw = reloadable
    a_before, b_before = gw.provider("a"), gw.provider("b")
    time.sleep(0.01)  # a distinct modification time
    write_config(path, simulator, chain='["b", "a"]', b_limit='rate_limit = "5/s"')
    soon(lambda: served_by(gw) == "b")
    assert gw.provider("a") is a_before  # unchanged: same breaker, limiter, clients
    assert gw.provider("b") is not b_before and str(gw.provider("b").limiter.rate) == "5/1s"


def test_a_broken_reload_keeps_the_last_good_config_and_says_why(
    simulator: Simulator, reloadable: tuple[Path, Gateway]
) -> None:
    path, gw = reloadable
    path.write_text(path.read_text().replace('chain = ["a", "b"]', 'chain = ["a", "nope"]'))
    soon(lambda: gw.reload_error is not None)
    assert str(path) in (gw.reload_error or "") and "nope" in (gw.reload_error or "")
    assert served_by(gw) == "a" and [rt.name for rt in gw.chain("http")] == ["a", "b"]
    write_config(path, simulator, chain='["b"]')
    soon(lambda: gw.reload_error is None and served_by(gw) == "b")


def test_sighup_reloads_at_once(simulator: Simulator, reloadable: tuple[Path, Gateway]) -> None:
    import os
    import signal

    path, gw = reloadable
    gw.reload_on_sighup()
    try:
        stamp = path.stat()
        text = path.read_text()
        path.write_text(text.replace('["a", "b"]', '["b", "a"]'))  # same size
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # unchanged to the watcher
        time.sleep(1.5)
        assert served_by(gw) == "a"  # the watcher saw no change
        os.kill(os.getpid(), signal.SIGHUP)
        assert served_by(gw) == "b"
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
