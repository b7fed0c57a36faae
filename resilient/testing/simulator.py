"""A fault-injecting HTTP/1.1 server standing in for third-party providers.

Real sockets on loopback, so clients, SDKs and transports are exercised exactly as in production:
connection pooling, timeouts and resets included. asyncio + h11 in one daemon thread with its own
loop: thousands of keep-alive connections, and a hung connection costs a parked task, not a thread.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11

from resilient.testing.background_server import BackgroundServer
from resilient.testing.faults import STREAM_KINDS, Fault

Handler = Callable[["SimRequest"], "SimResponse"]

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_READ_SIZE = 65536
_BACKLOG = 2048
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class SimRequest:
    """One request as a route handler sees it; `params` holds the `{name}` path segments."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return jsonlib.loads(self.body)


@dataclass
class SimResponse:
    """An answer. A streamed one (`SimResponse.stream`) also has `parts`, sent one chunk each
    with chunked transfer encoding and `delays[i]` seconds before part i; `body` is then all the
    parts joined, for faults that do not stream (reset_mid_body)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    parts: tuple[bytes, ...] | None = None
    delays: tuple[float, ...] = ()

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> SimResponse:
        merged = {"content-type": "application/json", **(headers or {})}
        return cls(status=status, headers=merged, body=jsonlib.dumps(data).encode())

    @classmethod
    def stream(
        cls,
        events: Iterable[bytes | str],
        *,
        delay: float | Sequence[float] = 0.0,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> SimResponse:
        """A streamed answer: each of `events` (one server-sent event each, say) is its own
        flushed chunk. `delay`: seconds between parts, or one wait per part (before it, the
        first included). Content type text/event-stream unless `headers` say otherwise."""
        parts = tuple(e.encode() if isinstance(e, str) else bytes(e) for e in events)
        if isinstance(delay, (int, float)):
            delays = tuple(0.0 if index == 0 else float(delay) for index in range(len(parts)))
        else:
            delays = tuple(float(d) for d in delay)
        merged = {"content-type": "text/event-stream; charset=utf-8", **(headers or {})}
        return cls(status, merged, b"".join(parts), parts, delays)


@dataclass(frozen=True)
class RecordedRequest:
    """What the simulator received and what it did about it: the ground truth tests assert on."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    idempotency_key: str | None
    fault: str | None
    effect: bool
    status: int | None

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class _Record:
    """Mutable while the request is in flight (effect and status land later); snapshot to read."""

    __slots__ = (
        "body",
        "effect",
        "fault",
        "headers",
        "method",
        "path",
        "query",
        "received_at",
        "status",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        received_at: float,
        fault: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.received_at = received_at
        self.fault = fault
        self.effect = False
        self.status: int | None = None

    def snapshot(self) -> RecordedRequest:
        return RecordedRequest(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.headers,
            body=self.body,
            received_at=self.received_at,
            idempotency_key=self.headers.get("idempotency-key"),
            fault=self.fault,
            effect=self.effect,
            status=self.status,
        )


class FaultHandle:
    """An injected fault: its scope, its window and how often it fired."""

    def __init__(
        self,
        sim: Simulator,
        fault: Fault,
        *,
        method: str | None,
        path: str | None,
        prefix: str | None,
        injected_at: float,
        after: float,
        duration: float | None,
        times: int | None,
    ) -> None:
        self.fault = fault
        self.method = method.upper() if method is not None else None
        self.path = path
        self.prefix = prefix
        self.injected_at = injected_at
        self.starts_at = injected_at + after
        self.ends_at = None if duration is None else self.starts_at + duration
        self.times = times
        self._hits = 0
        self._sim = sim

    @property
    def hits(self) -> int:
        """Requests this fault was applied to."""
        return self._hits

    def clear(self) -> None:
        self._sim._remove_fault(self)

    def _matches(self, method: str, path: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or self.path == path)
            and (self.prefix is None or path.startswith(self.prefix))
        )

    def _expired(self, now: float) -> bool:
        return (self.ends_at is not None and now >= self.ends_at) or (
            self.times is not None and self._hits >= self.times
        )


class Simulator(BackgroundServer):
    """The fake provider server. Configure routes and faults from any thread while it runs."""

    _thread_name = "resilient-simulator"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, max_records: int | None = None
    ) -> None:
        """`max_records` bounds the request log (oldest dropped) for long benchmark runs."""
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._exact: dict[tuple[str, str], Handler] = {}
        self._patterns: list[tuple[str, tuple[str, ...], Handler]] = []
        self._faults: list[FaultHandle] = []
        self._records: deque[_Record] = deque(maxlen=max_records)
        self._install_builtins()

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def url(self, prefix: str) -> str:
        return self.base_url + prefix

    # routes

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method path` with `handler`; `{name}` segments match one path segment each.
        Registering the same method and path again replaces the handler."""
        method = method.upper()
        segments = tuple(path.split("/"))
        with self._lock:
            if any(_is_param(segment) for segment in segments):
                patterns = [p for p in self._patterns if (p[0], p[1]) != (method, segments)]
                self._patterns = [(method, segments, handler), *patterns]
            else:
                self._exact = {**self._exact, (method, path): handler}

    def reset(self) -> None:
        """Back to a fresh server: no faults, no records, only the built-in routes."""
        with self._lock:
            self._faults = []
            self._records.clear()
            self._exact = {}
            self._patterns = []
        self._install_builtins()

    def _install_builtins(self) -> None:
        self.route("GET", "/__health", lambda request: SimResponse.json({"ok": True}))

    # faults

    def inject(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        prefix: str | None = None,
        after: float = 0.0,
        duration: float | None = None,
        times: int | None = None,
    ) -> FaultHandle:
        """Apply `fault` to matching requests from `after` seconds on, for `duration` seconds
        and at most `times` requests. The most recently injected matching fault wins; a
        flapping fault in its healthy phase steps aside for older ones."""
        handle = FaultHandle(
            self,
            fault,
            method=method,
            path=path,
            prefix=prefix,
            injected_at=time.monotonic(),
            after=after,
            duration=duration,
            times=times,
        )
        with self._lock:
            self._faults = [*self._faults, handle]
        return handle

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def _remove_fault(self, handle: FaultHandle) -> None:
        with self._lock:
            self._faults = [h for h in self._faults if h is not handle]

    # records

    def requests(
        self, *, method: str | None = None, path: str | None = None, prefix: str | None = None
    ) -> list[RecordedRequest]:
        """Every request received, in arrival order, optionally filtered."""
        wanted = method.upper() if method is not None else None
        with self._lock:
            return [
                record.snapshot()
                for record in self._records
                if (wanted is None or record.method == wanted)
                and (path is None or record.path == path)
                and (prefix is None or record.path.startswith(prefix))
            ]

    def effects(
        self, *, method: str | None = None, path: str | None = None, prefix: str | None = None
    ) -> list[RecordedRequest]:
        """Only the requests whose route ran: what the provider actually did."""
        return [r for r in self.requests(method=method, path=path, prefix=prefix) if r.effect]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve_connection, self._host, self._requested_port, backlog=_BACKLOG
        )

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._serve_one(conn, reader, writer):
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (OSError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels us; ending normally keeps 3.11's stream callback from raising
        finally:
            writer.close()

    async def _serve_one(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read and answer one request; False when the connection must not be reused."""
        head: h11.Request | None = None
        chunks: list[bytes] = []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(_READ_SIZE))
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return False
        except h11.RemoteProtocolError as exc:
            error = SimResponse.json({"error": str(exc)}, status=exc.error_status_hint)
            await self._send(conn, writer, error)
            return False
        assert head is not None
        return await self._dispatch(conn, reader, writer, head, b"".join(chunks))

    async def _dispatch(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: h11.Request,
        body: bytes,
    ) -> bool:
        now = time.monotonic()
        method = head.method.decode("ascii")
        path, _, query = head.target.decode("latin-1").partition("?")
        headers: dict[str, str] = {}
        for raw_name, raw_value in head.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = SimRequest(method, path, query, headers, body)

        with self._lock:
            fault = self._select_fault(method, path, now) if self._faults else None
            record = _Record(
                method, path, query, headers, body, now, fault.label if fault else None
            )
            self._records.append(record)

        if fault is None:
            response = self._run_route(request, record)
            if response.parts is not None and method != "HEAD":
                return await self._stream(conn, reader, writer, response, record, None)
            await self._send(conn, writer, response, record)
            return True
        if fault.kind in STREAM_KINDS:
            response = self._run_route(request, record)
            return await self._stream(conn, reader, writer, response, record, fault)
        if fault.kind == "status":
            response = SimResponse(fault.code, dict(fault.headers), fault.body)
            await self._send(conn, writer, response, record)
            return True
        if fault.kind == "latency":
            await asyncio.sleep(fault.seconds)
            response = self._run_route(request, record)
            if response.parts is not None and method != "HEAD":
                return await self._stream(conn, reader, writer, response, record, None)
            await self._send(conn, writer, response, record)
            return True
        if fault.kind == "reset_mid_body":
            await self._send_partial(conn, writer, self._run_route(request, record), record)
            _abort_with_rst(writer)
            return False
        if fault.after_effect:
            self._run_route(request, record)
        if fault.kind == "reset":
            _abort_with_rst(writer)
            return False
        while await reader.read(_READ_SIZE):
            pass  # hang: hold the request until the client gives up or the simulator stops
        return False

    def _select_fault(self, method: str, path: str, now: float) -> Fault | None:
        """The fault for this request, counting the hit; called under the lock."""
        expired = False
        chosen: Fault | None = None
        for handle in reversed(self._faults):
            if not handle._matches(method, path) or now < handle.starts_at:
                continue
            if handle._expired(now):
                expired = True
                continue
            chosen = handle.fault.resolve(now - handle.injected_at)
            if chosen is not None:
                handle._hits += 1
                break
        if expired:
            self._faults = [h for h in self._faults if not h._expired(now)]
        return chosen

    def _run_route(self, request: SimRequest, record: _Record) -> SimResponse:
        handler, params = self._find_route(request.method, request.path)
        if handler is None:
            if request.path == "/echo" or request.path.startswith("/echo/"):
                handler = _echo
            else:
                error = {"error": "no route", "method": request.method, "path": request.path}
                return SimResponse.json(error, status=404)
        if params:
            request = SimRequest(
                request.method, request.path, request.query, request.headers, request.body, params
            )
        try:
            response = handler(request)
        except Exception as exc:
            return SimResponse.json({"error": "handler raised", "detail": repr(exc)}, status=500)
        record.effect = True
        return response

    def _find_route(self, method: str, path: str) -> tuple[Handler | None, dict[str, str]]:
        exact = self._exact
        handler = exact.get((method, path)) or exact.get(("*", path))
        if handler is not None:
            return handler, {}
        segments = path.split("/")
        for route_method, pattern, route_handler in self._patterns:
            if route_method not in (method, "*") or len(pattern) != len(segments):
                continue
            params = _match_segments(pattern, segments)
            if params is not None:
                return route_handler, params
        return None, {}

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: SimResponse,
        record: _Record | None = None,
    ) -> None:
        data = conn.send(_head(response, len(response.body)))
        head_only = record is not None and record.method == "HEAD"
        if response.body and not head_only:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        if record is not None:
            record.status = response.status
        writer.write(data)
        await writer.drain()

    async def _stream(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: SimResponse,
        record: _Record,
        fault: Fault | None,
    ) -> bool:
        """Send `response` part by part, each flushed, as `fault` (a stream fault) alters it;
        False when the connection must not be reused."""
        parts = list(response.parts if response.parts is not None else (response.body,))
        delays = [*response.delays, *[0.0] * len(parts)][: len(parts)]
        kind = fault.kind if fault is not None else None
        stop_at: int | None = None
        if fault is not None and kind == "stream_malformed":
            parts.insert(fault.events, fault.body)
            delays.insert(fault.events, 0.0)
        elif fault is not None and kind == "stream_no_end":
            kept = max(0, len(parts) - fault.events)
            del parts[kept:], delays[kept:]
        elif fault is not None and kind in ("stream_stall", "stream_cut"):
            stop_at = fault.events
        head = h11.Response(
            status_code=response.status,
            headers=[
                *(
                    (name, value)
                    for name, value in response.headers.items()
                    if name.lower() not in ("content-length", "transfer-encoding")
                ),
                ("transfer-encoding", "chunked"),
            ],
            reason=_REASONS.get(response.status, b""),
        )
        writer.write(conn.send(head))
        record.status = response.status
        await writer.drain()
        if fault is not None and kind == "stream_slow_start":
            await asyncio.sleep(fault.seconds)
        for index, (part, wait) in enumerate(zip(parts, delays, strict=True)):
            if index == stop_at:
                break
            if wait > 0:
                await asyncio.sleep(wait)
            if part:
                writer.write(conn.send(h11.Data(data=part)))
                await writer.drain()
        if kind == "stream_cut":
            _abort_with_rst(writer)
            return False
        if kind == "stream_stall":
            while await reader.read(_READ_SIZE):
                pass  # silent with the connection open, until the client gives up
            return False
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def _send_partial(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: SimResponse,
        record: _Record,
    ) -> None:
        """Status line, headers and less body than announced: the announced length always
        exceeds what is sent, so the client sees the cut even for an empty body."""
        body = response.body
        data = conn.send(_head(response, max(len(body), 1)))
        data += conn.send(h11.Data(data=body[: len(body) // 2]))
        record.status = response.status
        writer.write(data)
        await writer.drain()


def _head(response: SimResponse, length: int) -> h11.Response:
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if name.lower() != "content-length"
    ]
    headers.append(("content-length", str(length)))
    return h11.Response(
        status_code=response.status, headers=headers, reason=_REASONS.get(response.status, b"")
    )


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """SO_LINGER 0 makes close() send RST instead of FIN: a reset, not a clean close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


def _is_param(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


def _match_segments(pattern: Iterable[str], segments: Iterable[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if _is_param(expected):
            if not actual:
                return None
            params[expected[1:-1]] = unquote(actual)
        elif expected != actual:
            return None
    return params


def _echo(request: SimRequest) -> SimResponse:
    return SimResponse.json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": dict(request.headers),
            "body": request.body.decode("utf-8", errors="replace"),
        }
    )
