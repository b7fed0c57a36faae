"""The blocking transport under the pipeline: every socket operation bounded by the attempt's
deadline, so a sync call ends by its deadline as an async one does.

httpx's phase timeouts bound each socket read on its own: a server that drips one byte a second
keeps every read within its timeout and a call going for as long as it likes. Here the executor
states the attempt's deadline (`attempt_deadline`) and each connect, read and write waits at
most the time left until it (a socket timeout shrunk to that); past it, the operation fails with
the timeout httpx would raise for that phase. No watchdog thread: the bound is the socket's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
import typing
import urllib.request
from collections.abc import Iterable, Iterator

import httpcore
import httpx

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resilient_attempt_deadline", default=None
)


@contextlib.contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's transport calls, within `seconds` from now."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, late: type[Exception]) -> float | None:
    """`timeout` shrunk to the time left before the attempt's deadline; `late` once it passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# httpcore's exceptions under httpx's names, as httpx's own transport raises them
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
}


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except tuple(_HTTPX_ERRORS) as exc:
        raise _HTTPX_ERRORS[type(exc)](str(exc), request=request) from exc


class _PoolBody(typing.Protocol):
    """What the pool answers a body with (httpcore's PoolByteStream)."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class _Body(httpx.SyncByteStream):
    def __init__(self, inner: _PoolBody, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx(self._request):
            yield from self._inner

    def close(self) -> None:
        self._inner.close()


class DeadlineTransport(httpx.BaseTransport):
    """httpx's HTTP/1.1 transport, verifying TLS as httpx does (or as `verify` says, in httpx's
    terms), on a deadline-bound pool."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        limits = httpx.Limits()  # httpx's defaults, as its own transport has them
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(request):
            answer = self._pool.handle_request(core)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(typing.cast(_PoolBody, answer.stream), request),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def deadline_transport(
    verify: ssl.SSLContext | bool = True, proxy: str | None = None
) -> DeadlineTransport | None:
    """The pool for a provider's sync client; None (httpx's own, bounded per phase only) when
    a proxy is named, here or in the environment: httpx honours it only with its own transport."""
    return None if proxy or urllib.request.getproxies() else DeadlineTransport(verify)
