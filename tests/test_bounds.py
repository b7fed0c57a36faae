"""Hard bounds against hostile answers: a whole answer is read within the provider's
`max_response_bytes`, counted after decompression (a huge body, a compression bomb, a Content-
Length that announces too much), sync and async; past it the attempt fails, nothing more is
read, and a provider that answers sensibly still serves."""

from __future__ import annotations

import gzip
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from resilient.errors import CallFailed, ChainExhausted
from resilient.settings import RetrySettings
from resilient.testing import SimResponse, Simulator
from tests.conftest import caller, gateway_for, provider

CAP = 1 << 20  # 1 MiB
MIB = b"x" * (1 << 20)


@pytest.fixture
def hostile(simulator: Simulator) -> Simulator:
    big = SimResponse.stream([MIB] * 64, headers={"content-type": "application/octet-stream"})
    simulator.route("GET", "/huge/x", lambda r: big)
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    simulator.route(
        "GET",
        "/bomb/x",
        lambda r: SimResponse(200, {"content-encoding": "gzip"}, bomb),
    )
    simulator.route("GET", "/fine/x", lambda r: SimResponse.json({"ok": True}))
    encoded = gzip.compress(b'{"ok": true}')
    simulator.route(
        "GET", "/zipped/x", lambda r: SimResponse(200, {"content-encoding": "gzip"}, encoded)
    )
    return simulator


@pytest.mark.parametrize("route", ["huge", "bomb"])
async def test_an_answer_past_the_cap_fails_the_attempt(
    hostile: Simulator, mode: str, route: str
) -> None:
    gw = gateway_for(provider(route, hostile.url(f"/{route}"), max_response_bytes=CAP))
    with pytest.raises(ChainExhausted) as raised:
        await caller(gw, mode)("GET", "/x")
    await gw.aclose()
    assert {a.reason for a in raised.value.attempts} == {"ResponseTooLarge"}


async def test_a_sensible_answer_behind_a_hostile_one_still_serves(
    hostile: Simulator, mode: str
) -> None:
    gw = gateway_for(
        provider("bomb", hostile.url("/bomb"), max_response_bytes=CAP),
        provider("fine", hostile.url("/fine"), max_response_bytes=CAP),
    )
    result = await caller(gw, mode)("GET", "/x")
    await gw.aclose()
    assert (result.provider, result.value.json()) == ("fine", {"ok": True})


async def test_a_compressed_answer_within_the_cap_is_handed_on_decoded(
    hostile: Simulator, mode: str
) -> None:
    gw = gateway_for(provider("zipped", hostile.url("/zipped"), max_response_bytes=CAP))
    result = await caller(gw, mode)("GET", "/x")
    await gw.aclose()
    assert result.value.json() == {"ok": True}
    assert "content-encoding" not in result.value.headers


class _Announcer(socketserver.BaseRequestHandler):
    """Announces a gigabyte, sends two bytes, and holds the connection open."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n{}")
        time.sleep(5)


@pytest.fixture
def announcer() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Announcer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_an_answer_announcing_more_than_the_cap_is_not_read(
    announcer: str, mode: str
) -> None:
    """Refused on its Content-Length: no wait for a gigabyte, the connection closed."""
    gw = gateway_for(provider("liar", announcer, max_response_bytes=CAP))
    started = time.monotonic()
    with pytest.raises(ChainExhausted) as raised:
        await caller(gw, mode)("GET", "/x")
    await gw.aclose()
    assert {a.reason for a in raised.value.attempts} == {"ResponseTooLarge"}
    assert time.monotonic() - started < 4.0  # not one attempt waited for the body


class _Drip(socketserver.BaseRequestHandler):
    """Answers a byte at a time, each within any read timeout: the headers (`/head`) or the
    body (anything else) take far longer than any call may."""

    def handle(self) -> None:
        request = self.request.recv(65536)
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
        drip_head = b" /head" in request.split(b"\r\n", 1)[0]
        try:
            if not drip_head:
                self.request.sendall(head)
            for byte in head if drip_head else b"x" * 100:
                self.request.sendall(bytes([byte]))
                time.sleep(0.25)
        except OSError:
            return  # the client gave up: as it should


@pytest.fixture
def drip() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/head", "/body"])
async def test_a_dripping_answer_ends_by_the_call_deadline(drip: str, mode: str, path: str) -> None:
    """A byte every 0.25 s keeps each read within its 1 s timeout; the call (timeout 1.5 s)
    still ends by its deadline, sync as async, not after the 25 s the drip would take."""
    gw = gateway_for(provider("drip", drip, retry=RetrySettings(attempts=1)), timeout=1.5)
    started = time.monotonic()
    with pytest.raises(CallFailed):
        await caller(gw, mode)("GET", path)
    elapsed = time.monotonic() - started
    await gw.aclose()
    assert elapsed < 4.0  # 1.5 s and the documented slack; a busy machine gets room


@pytest.mark.parametrize("path", ["/head", "/body"])
def test_a_drop_in_sdk_call_ends_by_its_attempt_deadline(drip: str, path: str) -> None:
    """The blocking SDK bridges (sendgrid here; stripe and twilio share it) hold the attempt's
    deadline as the gateway's own calls do: a dripping answer ends at 1.5 s, not after 25 s."""
    from sendgrid.helpers.mail import Mail

    from providers.sendgrid import SendGridAPIClient
    from resilient.gateway import Gateway
    from resilient.settings import GatewaySettings, TimeoutSettings

    timeouts = TimeoutSettings(connect=1.0, read=1.0, write=1.0, attempt=1.5)
    settings = replace(
        provider("sendgrid", drip + path, retry=RetrySettings(attempts=1), timeouts=timeouts),
        kind="sendgrid",
    )
    sg = SendGridAPIClient(
        "SG.test-key", gateway=Gateway(GatewaySettings(providers={"sendgrid": settings}))
    )
    mail = Mail(from_email="a@x.io", to_emails="b@x.io", subject="Hi", html_content="<p>hi</p>")
    started = time.monotonic()
    with pytest.raises(Exception):
        sg.send(mail)
    assert time.monotonic() - started < 4.0  # 1.5 s and the documented slack
