"""A health endpoint for load balancers and status pages: an ASGI app, or a small HTTP server.

    app = health_app(gw)                          # mount in any ASGI server (asyncio)
    server = serve_health(gw, port=8081)          # or a stdlib server in a daemon thread
    server.url, server.close()

GET /health answers `gateway.status()` as JSON, with 200 while every capability has at least one
provider that is enabled and whose breaker is not open, and 503 otherwise (the same body, whose
"unavailable" lists the capabilities that cannot be served). GET /metrics answers the Prometheus
text of the `PrometheusMetrics` attached to the gateway, if any. Everything else is 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from resilient.metrics import PrometheusMetrics, attached_metrics

if TYPE_CHECKING:
    from resilient.gateway import Gateway

logger = logging.getLogger("resilient.health")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def unavailable_capabilities(status: dict[str, Any]) -> list[str]:
    """Capabilities of a `gateway.status()` snapshot with no provider enabled and not open."""
    providers = status.get("providers", {})

    def serves(name: str) -> bool:
        provider = providers.get(name)
        return bool(provider and provider.get("enabled") and provider.get("breaker") != "open")

    return [
        name
        for name, capability in status.get("capabilities", {}).items()
        if not any(serves(p) for p in capability.get("chain", ()))
    ]


def respond(
    gateway: Gateway, method: str, path: str, metrics: PrometheusMetrics | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status code, headers, body) for one request: the endpoint without any I/O of its own."""
    if path not in ("/health", "/metrics"):
        return _plain(404, "not found\n")
    if method not in ("GET", "HEAD"):
        code, headers, body = _plain(405, "method not allowed\n")
        return code, [*headers, ("allow", "GET, HEAD")], body
    if path == "/metrics":
        metrics = metrics if metrics is not None else attached_metrics(gateway)
        if metrics is None:
            return _plain(404, "no metrics: attach resilient.metrics.PrometheusMetrics(gateway)\n")
        return 200, _headers(metrics.content_type), metrics.render()
    status = gateway.status()
    unavailable = unavailable_capabilities(status)
    report = {**status, "healthy": not unavailable, "unavailable": unavailable}
    data = json.dumps(_finite(report), default=str, allow_nan=False).encode()
    return (503 if unavailable else 200), _headers(JSON), data


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity as None: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _headers(content_type: str) -> list[tuple[str, str]]:
    return [("content-type", content_type), ("cache-control", "no-store")]


def _plain(code: int, text: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return code, _headers(TEXT), text.encode()


def health_app(gateway: Gateway, *, metrics: PrometheusMetrics | None = None) -> ASGIApp:
    """A framework-free ASGI app serving /health and /metrics for `gateway`.

    `metrics`: what /metrics serves; default, the PrometheusMetrics attached to the gateway when
    the request comes. The status is read in a worker thread: a Redis-backed queue's stats never
    block the event loop.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"health_app serves HTTP only, not {scope['type']!r}")
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method: str = scope["method"]
        code, headers, body = await asyncio.to_thread(respond, gateway, method, path, metrics)
        headers = [*headers, ("content-length", str(len(body)))]
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class HealthServer:
    """The endpoint on a stdlib ThreadingHTTPServer, served by a daemon thread."""

    def __init__(
        self,
        gateway: Gateway,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), _handler(gateway, metrics))
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"resilient-health:{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(gateway: Gateway, metrics: PrometheusMetrics | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "resilient-health"

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                code, headers, body = respond(gateway, self.command, path, metrics)
            except Exception:
                logger.exception("health endpoint failed on %s %s", self.command, path)
                code, headers, body = _plain(500, "internal error\n")
            self.send_response(code)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler


def serve_health(
    gateway: Gateway,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics: PrometheusMetrics | None = None,
) -> HealthServer:
    """Serve /health (and /metrics) for `gateway` on `host:port` (0: a free port) in a thread."""
    return HealthServer(gateway, host, port, metrics=metrics)
