"""A throwaway real redis-server on loopback: Redis behaviour (Lua, RQ, outages) is not mocked.

Talks RESP over a raw socket so it works without the optional `redis` package. Optionally with
a password (`requirepass`, so clients must AUTH) and an append-only file (so a restart keeps
the data, as a production Redis holding parked requests should).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

INSTALL_HINT = (
    "redis-server not found on PATH: install it with `apt-get install redis-server` "
    "(Debian/Ubuntu) or `brew install redis`"
)


class RedisServer:
    """One redis-server process; `restart()` keeps the port so clients configured with `url`
    reconnect to the same address after a simulated outage.

    `password`: the server requires it (`requirepass`); `url` and `command()` carry it.
    `appendonly`: every write is fsync'd to an append-only file and `stop()` keeps the data
    directory, so a restart comes back with the data; without it a restart starts empty.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 10.0,
        password: str | None = None,
        appendonly: bool = False,
    ) -> None:
        self._port = port
        self._startup_timeout = startup_timeout
        self._password = password or None
        self._appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("redis-server has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        auth = f":{quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        if self.running:
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        if self._port is None:
            self._port = _free_port()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="resilient-redis-"))
        log_path = self._dir / "redis.log"
        options = [
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self._dir),
            "--daemonize", "no",
        ]  # fmt: skip
        if self._password:
            options += ["--requirepass", self._password]
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_until_ready(log_path)
        return self

    def stop(self, timeout: float = 5.0, *, keep_data: bool | None = None) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Its data directory goes too, unless
        `keep_data` (default: whether the server is `appendonly`)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if keep_data is None:
            keep_data = self._appendonly
        if self._dir is not None and not keep_data:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port: with an empty dataset, or with
        `appendonly`, with every write acknowledged before the stop."""
        self.stop()
        return self.start()

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def command(self, *args: str) -> bytes:
        """Send one command (after AUTH when the server has a password), return the first
        reply line (enough for status replies)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            if self._password:
                reply = _exchange(sock, ("AUTH", self._password))
                if reply != b"+OK":
                    return reply
            return _exchange(sock, args)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep_data=False)

    def _wait_until_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self._port}:\n{log}")


def _exchange(sock: socket.socket, args: tuple[str, ...]) -> bytes:
    """One RESP command on `sock`; the first line of its reply."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply.split(b"\r\n", 1)[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
