"""An asyncio server on a thread of its own, for the test doubles (the provider simulator, the
SMTP sink): `start()` returns once it listens, `stop()` cuts every open connection, so stopping
never waits on a client, even one the server was told to leave hanging."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="BackgroundServer")


class BackgroundServer:
    _thread_name = "resilient-server"

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per open connection

    async def _listen(self) -> asyncio.Server:
        """Start listening on (host, requested port); handlers should go through `_track`."""
        raise NotImplementedError

    def _track(self, task: asyncio.Task[None]) -> None:
        """Register a connection's task, so `stop()` can cut it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self: S) -> S:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._run, args=(ready, failure), name=self._thread_name, daemon=True
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise RuntimeError(f"{type(self).__name__} failed to start") from failure[0]
        self._thread = thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; hung and open connections are cut, so this never waits on a client."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = self._loop = self._stopping = None
        self._port = None

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return self._port

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop, ready))
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        server = await self._listen()
        self._port = server.sockets[0].getsockname()[1]
        self._stopping = asyncio.Event()
        self._loop = loop
        ready.set()
        await self._stopping.wait()
        server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
