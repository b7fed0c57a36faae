"""Redis with AUTH (`redis://:PASSWORD@host:port/0`) and TLS (`rediss://`), and parked payloads
encrypted at rest in Redis (the SQLite spool's encryption is tested in test_spool.py and
test_deferral.py).

AUTH runs against a real redis-server started with `requirepass`. A wrong password is Redis
being unreachable as far as the design goes: deferrals spill to the local spool, and the
password shows in no log line, status, error text or CLI output. TLS needs no TLS server to
show the scheme is honoured: every client the gateway makes uses an SSL connection, and against
a plain Redis the handshake fails, so the park spills where a plain URL would have parked in
Redis.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from queues.backend import RedisBackend
from queues.deferred import Codec
from queues.redis_store import RedisStore
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.ops import stores_for
from resilient.testing import Fault, RedisServer, SimResponse, Simulator

pytestmark = pytest.mark.redis

PASSWORD = "redis-pw-Zq81canary/+:@"  # URL-special characters: quoted in the URL
WRONG = "wrong-pw-Zq81canary"
FORMS = (PASSWORD, WRONG, "redis-pw-Zq81canary")  # and the unquoted prefix, to be sure


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    """A redis-server that requires PASSWORD."""
    with RedisServer(password=PASSWORD) as server:
        yield server


@pytest.fixture
def auth_url(secured: RedisServer) -> str:
    secured.flushall()
    return secured.url


@pytest.fixture
def api(simulator: Simulator) -> Simulator:
    simulator.route("POST", "/a/v1/m", lambda request: SimResponse.json({}, status=202))
    return simulator


def config(sim: Simulator, folder: Path, redis_url: str, **gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "redis_url": redis_url,
            "spool_path": str(folder / "spool.db"),
            "overrides_path": str(folder / "overrides.json"),
            **gateway,
        },
        "providers": {
            "a": {"kind": "http", "base_url": sim.url("/a"), "retry": {"attempts": 1}},
        },
        "capabilities": {"http": {"chain": ["a"], "defer": True, "timeout": "2s"}},
    }


def park(gw: Gateway, count: int) -> list[str]:
    """`count` requests parked (the provider down), as the caller was told."""
    keys = [f"auth-op-{n}" for n in range(count)]
    results = [
        gw.sync.http.request("POST", "/v1/m", json={"n": key}, headers={"Idempotency-Key": key})
        for key in keys
    ]
    assert {r.status for r in results} == {"deferred"}
    return keys


def run_cli(path: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`resilient COMMAND --config PATH ARGS` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "resilient.cli", command, "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def leaks(texts: list[str]) -> list[str]:
    return [form for form in FORMS for text in texts if form in text]


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [logging.Formatter().format(record) for record in caplog.records]


def raw_reply(port: int, command: bytes) -> bytes:
    """A command on a fresh connection with no AUTH: what anyone without the password gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(command)
        return sock.recv(4096)


def test_parks_in_redis_and_a_worker_replays_with_auth(
    api: Simulator,
    secured: RedisServer,
    auth_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert "%2F%2B%3A%40" in auth_url  # the password's / + : @ quoted
    path = tmp_path / "resilient.yaml"
    path.write_text(json.dumps(config(api, tmp_path, auth_url)))
    outage = api.inject(Fault.status(503), prefix="/a")
    with Gateway(settings_from_mapping(json.loads(path.read_text()))) as gw:
        keys = park(gw, 5)
        backend = gw.deferral
        assert isinstance(backend, RedisBackend)
        assert backend.spilled == 0  # parked in Redis itself, authenticated
        assert backend.redis.stats()["ready"] == 5
    assert raw_reply(secured.port, b"PING\r\n").startswith(b"-NOAUTH")  # AUTH is in force
    outage.clear()

    worker = run_cli(path, "worker", "--burst")
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout.splitlines()[-1])["delivered"] == 5
    delivered = {r.idempotency_key for r in api.effects(prefix="/a")}
    assert delivered == set(keys)
    assert leaks([worker.stdout, worker.stderr, *logged(caplog)]) == []


def test_a_wrong_password_spills_to_the_spool_and_never_shows_the_password(
    api: Simulator,
    secured: RedisServer,
    auth_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = settings_from_mapping(config(api, tmp_path, auth_url.replace("redis-pw", "wrong-pw")))
    api.inject(Fault.status(503), prefix="/a")
    texts: list[str] = []
    with Gateway(wrong) as gw:  # with the ops loop, which talks to Redis too
        park(gw, 1)
        backend = gw.deferral
        assert isinstance(backend, RedisBackend)
        assert backend.spilled == 1 and backend.spill.stats()["ready"] == 1  # not lost
        assert not backend.redis.ping()
        with pytest.raises(redis.AuthenticationError) as refused:
            backend.redis.stats()
        texts += [str(refused.value), repr(refused.value), json.dumps(gw.status(), default=str)]
        wait_until(lambda: any("AuthenticationError" in line for line in logged(caplog)))
    assert leaks([*texts, *logged(caplog)]) == []

    # the password put right (same spool): the spilled request is carried into Redis
    with Gateway(settings_from_mapping(config(api, tmp_path, auth_url)), ops=False) as gw:
        backend = gw.deferral
        assert isinstance(backend, RedisBackend)
        wait_until(lambda: backend.redis.stats()["ready"] == 1)
        assert backend.spill.stats()["ready"] == 0


def test_the_queue_cli_with_a_wrong_password_never_prints_it(
    api: Simulator, auth_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "resilient.yaml"
    path.write_text(json.dumps(config(api, tmp_path, auth_url.replace("redis-pw", "wrong-pw"))))
    stats = run_cli(path, "queue", "stats")
    assert stats.returncode != 0
    assert "AuthenticationError" in stats.stderr or "invalid" in stats.stderr
    assert leaks([stats.stdout, stats.stderr]) == []


def test_the_queue_cli_with_a_wrong_password_says_so_in_one_line(
    api: Simulator, auth_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "resilient.yaml"
    path.write_text(json.dumps(config(api, tmp_path, auth_url.replace("redis-pw", "wrong-pw"))))
    stats = run_cli(path, "queue", "stats")
    assert stats.returncode == 2
    assert "Traceback" not in stats.stderr and len(stats.stderr.strip().splitlines()) == 1


def test_the_settings_repr_hides_the_redis_password(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {"gateway": {"redis_url": f"redis://:{WRONG}@127.0.0.1:6379/0"}}
    )
    assert leaks([repr(settings), str(settings)]) == []


def test_rediss_urls_are_accepted_and_every_client_speaks_tls(
    api: Simulator, redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    """`rediss://` against a plain (non-TLS) Redis: each client the gateway makes is an SSL one,
    so the TLS handshake fails and the park spills; the same URL as `redis://` parks in Redis."""
    tls = f"rediss://:{WRONG}@127.0.0.1:{redis_server.port}/0?ssl_cert_reqs=none"
    api.inject(Fault.status(503), prefix="/a")
    with Gateway(settings_from_mapping(config(api, tmp_path, tls)), ops=False) as gw:
        backend = gw.deferral
        assert isinstance(backend, RedisBackend)
        store, board = stores_for(gw.settings)
        clients: list[Any] = [
            backend.redis._redis,
            gw.ledger._redis,  # type: ignore[attr-defined]
            gw._shared,
            store._redis,  # type: ignore[attr-defined]
            board._redis,  # type: ignore[attr-defined]
        ]
        for client in clients:
            pool = client.connection_pool
            assert pool.connection_class is redis.SSLConnection
            assert pool.connection_kwargs["ssl_cert_reqs"] == "none"  # the URL's options pass
        park(gw, 1)
        assert backend.spilled == 1  # the handshake with a plain server failed

    plain = redis_url  # the same server, without TLS: the park lands in Redis
    with Gateway(settings_from_mapping(config(api, tmp_path / "plain", plain)), ops=False) as gw:
        backend = gw.deferral
        assert isinstance(backend, RedisBackend)
        park(gw, 1)
        assert backend.spilled == 0 and backend.redis.stats()["ready"] == 1


def test_a_payload_parked_in_redis_is_unreadable_without_the_key(
    api: Simulator, auth_url: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    settings = settings_from_mapping(config(api, tmp_path, auth_url, encryption_key=key))
    api.inject(Fault.status(503), prefix="/a")
    with Gateway(settings, ops=False) as gw:
        result = gw.sync.http.request(
            "POST", "/v1/m", json={"note": "personal data 4711"}, headers={"X-Trace": "t-4711"}
        )
    assert result.status == "deferred" and result.deferral_id is not None

    client: Any = redis.Redis.from_url(auth_url)
    stored = b""
    for name in client.scan_iter():
        stored += name + (client.dump(name) or b"")
        if client.type(name) == b"hash":
            stored += b"".join(k + v for k, v in client.hgetall(name).items())
    client.close()
    assert stored and b"4711" not in stored and b"personal" not in stored
    body = redis.Redis.from_url(auth_url).hget(f"resilient:q:r:{result.deferral_id}", "body")
    assert isinstance(body, bytes) and body.startswith(b"gAAAAA")  # a Fernet token

    other = RedisStore.from_url(auth_url, Codec(Fernet.generate_key().decode()))
    entry, request = other.get(result.deferral_id) or (None, None)
    assert entry is not None and request is None  # listed, but undecodable without the key
    right = RedisStore.from_url(auth_url, Codec(key))
    found = right.get(result.deferral_id)
    assert found is not None and found[1] is not None
    assert found[1].payload["json"] == {"note": "personal data 4711"}
    other.close()
    right.close()
