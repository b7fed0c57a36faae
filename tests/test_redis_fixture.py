import socket
from pathlib import Path

import pytest

from resilient.testing import RedisServer
from resilient.testing.redis_server import INSTALL_HINT

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.redis

_INNER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def test_start_ping_restart_same_port_stop() -> None:
    with RedisServer() as server:
        assert server.running
        assert server.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.command("SET", "k", "v") == b"+OK"
        port = server.port

        server.stop()
        assert not server.running
        assert not server.ping()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()

        server.restart()
        assert server.port == port
        assert server.ping()
        assert server.command("GET", "k") == b"$-1"  # no persistence: a restart starts empty
    assert not server.running


def test_stop_is_idempotent_and_cleans_its_directory() -> None:
    server = RedisServer().start()
    directory = server._dir
    assert directory is not None and directory.is_dir()
    server.stop()
    server.stop()
    assert not directory.exists()


def test_missing_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError) as raised:
        RedisServer().start()
    assert str(raised.value) == INSTALL_HINT
    assert (
        "install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`"
        in INSTALL_HINT
    )


def test_redis_url_fixture_is_flushed(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == redis_server.url
    assert redis_server.command("DBSIZE") == b":0"
    redis_server.command("SET", "left-behind", "1")


def test_fixtures_flush_and_revive_across_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini(_INNER_INI)
    pytester.makepyfile(
        """
        def test_writes_and_stops(redis_url, redis_server):
            assert redis_server.command("SET", "k", "v") == b"+OK"
            redis_server.stop()

        def test_revived_and_empty(redis_url, redis_server):
            assert redis_server.ping()
            assert redis_server.command("GET", "k") == b"$-1"

        def test_writes_again(redis_url, redis_server):
            assert redis_server.command("SET", "k", "v") == b"+OK"

        def test_flushed_again(redis_url, redis_server):
            assert redis_server.command("DBSIZE") == b":0"
            redis_server.stop()

        def test_server_only_user_gets_it_back(redis_server):
            assert redis_server.ping()
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=5)


def test_missing_binary_fails_instead_of_skipping(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makeini(_INNER_INI)
    pytester.makepyfile(
        """
        def test_needs_redis(redis_url):
            pass
        """
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*apt-get install redis-server*brew install redis*"])
