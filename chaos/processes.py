"""What the crash scenarios start, kill and restart: the application (`python -m chaos.app`),
the same-key charger (`chaos.scenarios.charger_main`), `resilient worker`, and the config file
they share with the scenario's own gateway.

Every process loads the same file, so the parent's gateway, the application and the workers
agree on providers, chain, timeouts and where parked requests live.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from queues.store import Store
from resilient.testing import Simulator

ROOT = Path(__file__).resolve().parent.parent
STRIPE_KEY = "sk_test_chaos_Zq81canary"  # distinctive: redaction masks it in every log line
PAYPAL_KEY = "pp-chaos-Zq81canary"
TWILIO_ACCOUNT = "AC0chaos"


def config_mapping(
    sim: Simulator, tmp: Path, *, redis_url: str | None = None, timeout: float = 1.0
) -> dict[str, Any]:
    """Providers `p` and `f` on `sim` behind one deferring `http` capability. `timeout` bounds
    a call, and so the lease a dead worker's requests wait out (the timeout plus 5 s)."""

    def provider(name: str) -> dict[str, Any]:
        return {
            "kind": "http",
            "base_url": sim.url(f"/{name}"),
            "timeout": {"connect": "500ms", "read": "1s", "write": "1s", "attempt": "1s"},
            "retry": {"attempts": 2, "backoff": "10ms..50ms"},
            "breaker": {"min_calls": 5, "window": "2s", "open_for": "500ms", "open_for_max": "2s"},
        }

    gateway: dict[str, Any] = {
        "spool_path": str(tmp / "spool.db"),
        "overrides_path": str(tmp / "overrides.json"),
    }
    if redis_url:
        gateway["redis_url"] = redis_url
    return {
        "gateway": gateway,
        "providers": {"p": provider("p"), "f": provider("f")},
        "capabilities": {"http": {"chain": ["p", "f"], "defer": True, "timeout": timeout}},
    }


def payments_mapping(
    sim: Simulator, tmp: Path, *, redis_url: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """Payments over the simulated Stripe, then PayPal (under /stripe and /paypal on `sim`), not
    deferring: a charge is done now or not at all. Processes given this config share the ledger
    (`spool-ledger.db` beside the spool, or Redis)."""
    retry = {"attempts": 2, "backoff": "10ms..20ms"}
    breaker = {"min_calls": 5, "window": "2s", "open_for": "500ms", "open_for_max": "1s"}
    gateway: dict[str, Any] = {
        "spool_path": str(tmp / "spool.db"),
        "overrides_path": str(tmp / "overrides.json"),
    }
    if redis_url:
        gateway["redis_url"] = redis_url
    return {
        "gateway": gateway,
        "providers": {
            "stripe": {
                "kind": "stripe",
                "api_key": STRIPE_KEY,
                "base_url": sim.url("/stripe"),
                "timeout": "2s",
                "retry": retry,
                "breaker": breaker,
            },
            "paypal": {
                "kind": "paypal",
                "client_id": "chaos-client",
                "api_key": PAYPAL_KEY,
                "base_url": sim.url("/paypal"),
                "timeout": "3s",
                "retry": retry,
                "breaker": breaker,
            },
        },
        "capabilities": {"payments": {"chain": ["stripe", "paypal"], "timeout": timeout}},
    }


def sms_mapping(
    sim: Simulator, tmp: Path, *, rate: str | None, timeout: float = 4.0
) -> dict[str, Any]:
    """SMS through the simulated Twilio alone (under /twilio on `sim`), deferring, at most `rate`
    (None: unpaced). Its attempt timeout (1 s) leaves room in `timeout` for a lookup after it
    (1 s of pause, then 1 s to ask), so a held request is reconciled rather than dead-lettered."""
    twilio: dict[str, Any] = {
        "kind": "twilio",
        "api_key": "auth-token",
        "account_sid": TWILIO_ACCOUNT,
        "base_url": sim.url("/twilio"),
        "timeout": "1s",
        "retry": {"attempts": 1},
        "breaker": {"min_calls": 1000},  # held requests must not pause the drain
    }
    if rate is not None:
        twilio["rate_limit"] = rate
    return {
        "gateway": {
            "spool_path": str(tmp / "spool.db"),
            "overrides_path": str(tmp / "overrides.json"),
        },
        "providers": {"twilio": twilio},
        "capabilities": {"sms": {"chain": ["twilio"], "defer": True, "timeout": timeout}},
    }


def write_config(path: Path, mapping: dict[str, Any]) -> Path:
    """`mapping` as a config file (JSON, which the YAML loader reads): `path` should end .yaml."""
    path.write_text(json.dumps(mapping, indent=2))
    return path


def python(module: str, *args: str, log: Path, pipe: bool = False) -> subprocess.Popen[str]:
    """`python -m module args` from the repository root, in a process group of its own (an RQ
    worker forks its scheduler: killing the group leaves no orphan); stderr (and stdout unless
    `pipe`) appended to `log`, so a process that dies leaves its last words there."""
    return _start(["-m", module, *args], log, pipe=pipe)


def _start(
    argv: list[str], log: Path, *, pipe: bool = False, stdin: bool = False
) -> subprocess.Popen[str]:
    """`python argv` as `python` starts it; `stdin`: a pipe to talk to it, else nothing."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    with log.open("a") as sink:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else sink,
            stderr=sink,
            text=True,
            start_new_session=True,
        )


def worker(config: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    """`resilient worker --config FILE [args]`: RQ workers, or with `--burst` one drain."""
    return python("resilient.cli", "worker", "--config", str(config), *args, log=log)


def app(config: Path, tag: str, log: Path) -> subprocess.Popen[str]:
    """The application process: traffic until killed, one line per returned call on stdout."""
    return python("chaos.app", "--config", str(config), "--tag", tag, log=log, pipe=True)


CHARGER = "from chaos.scenarios import charger_main; raise SystemExit(charger_main())"


def charger(config: Path, role: str, prefix: str, keys: int, log: Path) -> subprocess.Popen[str]:
    """A same-key application process: says `ready` once its gateway is up, charges keys
    `prefix`-0.. from the moment (time.monotonic) written to its stdin, one `CallRecord` line
    per returned call, and exits when every key is charged. (`-c`: `python -m` of a module the
    `chaos` package already imported would run it twice.)"""
    args = ["--config", str(config), "--role", role, "--prefix", prefix, "--keys", str(keys)]
    return _start(["-c", CHARGER, *args], log, pipe=True, stdin=True)


def burst(config: Path, log: Path, timeout: float = 60.0) -> None:
    """One `resilient worker --burst`: what is due now, replayed; stopped if it overruns."""
    process = worker(config, log, "--burst")
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(process)


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL to the process and its group, as a crash would: no handler runs, nothing is
    flushed or closed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def stop(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """SIGTERM (a worker finishes its job and exits), SIGKILL if it takes over `timeout`; then
    whatever it left in its group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    kill(process)


def tail(log: Path, lines: int = 15) -> str:
    """The end of a process's log, for a violation's message."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def parked_operations(store: Store) -> set[str]:
    """The operation ids (idempotency keys) of every request `store` holds, in any state."""
    found = set()
    for entry in store.entries(None, 10**7):
        stored = store.get(entry.id)
        if stored is not None and stored[1] is not None:
            found.add(stored[1].operation_id)
    return found


def pending(store: Store) -> int:
    """Requests still waiting or leased (dead letters are counted apart)."""
    stats = store.stats()
    return int(stats["ready"] + stats["leased"])
