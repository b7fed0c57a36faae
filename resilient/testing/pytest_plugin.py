"""pytest fixtures for the provider simulator and a real Redis.

Loaded in every pytest run where the package is installed, so it imports nothing heavy at module
level; the servers start only when a test asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from resilient.testing.redis_server import RedisServer
    from resilient.testing.simulator import Simulator


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[Simulator]:
    """One simulator for the whole session: starting a server per test would dominate runtime."""
    from resilient.testing.simulator import Simulator

    with Simulator() as sim:
        yield sim


@pytest.fixture
def simulator(simulator_server: Simulator) -> Simulator:
    """The session simulator with no faults, records or routes left over from earlier tests."""
    simulator_server.reset()
    return simulator_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the session. A missing binary fails the test rather than
    skipping it: a silently skipped Redis test hides a gap."""
    from resilient.testing.redis_server import INSTALL_HINT, RedisServer

    server = RedisServer()
    try:
        server.start()
    except RuntimeError as exc:
        if str(exc) == INSTALL_HINT:
            pytest.fail(INSTALL_HINT, pytrace=False)
        raise
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _resilient_revive_redis(request: pytest.FixtureRequest) -> None:
    """Bring the session Redis back for the next test that uses it after one stopped it."""
    if "redis_server" in request.fixturenames:
        server: RedisServer = request.getfixturevalue("redis_server")
        if not server.running:
            server.start()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied, so each test starts from no keys."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url
