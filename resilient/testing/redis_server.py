"""A throwaway real redis-server on loopback: Redis behaviour (Lua, RQ, outages) is not mocked.

Talks RESP over a raw socket so it works without the optional `redis` package.
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

INSTALL_HINT = (
    "redis-server not found on PATH: install it with `apt-get install redis-server` "
    "(Debian/Ubuntu) or `brew install redis`"
)


class RedisServer:
    """One redis-server process with no persistence; `restart()` keeps the port so clients
    configured with `url` reconnect to the same address after a simulated outage."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 10.0) -> None:
        self._port = port
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("redis-server has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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
        self._dir = Path(tempfile.mkdtemp(prefix="resilient-redis-"))
        log_path = self._dir / "redis.log"
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port", str(self._port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self._dir),
                    "--daemonize", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait_until_ready(log_path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port, with an empty dataset."""
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
        """Send one command, return the first reply line (enough for status replies)."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(payload)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
