"""The aiohttp transport, the lean clients and group commit: what they send, what their errors
mean to the classifier, and that they keep what httpx's full path kept."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from queues.group_commit import GroupCommit
from queues.replayer import worker_settings
from resilient import Secret
from resilient.gateway import Gateway
from resilient.http_clients import LeanAsyncClient, LeanClient
from resilient.policy.classify import Classifier
from resilient.policy.outcome_class import Outcome
from resilient.settings import CapabilitySettings, GatewaySettings
from resilient.testing import Fault, SimResponse, Simulator
from resilient.transport_aiohttp import AiohttpTransport
from tests.conftest import provider
from tests.test_config import error

KEY = "sk-aiohttp-Qv7canary"
TIMEOUT = httpx.Timeout(connect=0.5, read=0.5, write=0.5, pool=0.5).as_dict()


def aiohttp_gateway(sim: Simulator, *names: str) -> Gateway:
    providers = {n: provider(n, sim.url(f"/{n}"), api_key=Secret(KEY)) for n in names}
    return Gateway(
        GatewaySettings(
            providers=providers,
            capabilities={"http": CapabilitySettings("http", names)},
            async_client="aiohttp",
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def send(url: str, **kwargs: Any) -> httpx.Response:
    transport = AiohttpTransport()
    try:
        request = httpx.Request("GET", url, extensions={"timeout": TIMEOUT}, **kwargs)
        response = await transport.handle_async_request(request)
        await response.aread()
        return response
    finally:
        await transport.aclose()


async def test_the_gateway_sends_through_aiohttp_exactly_what_it_built(
    simulator: Simulator,
) -> None:
    simulator.route(
        "POST", "/a/v1/m", lambda r: SimResponse.json({"got": r.json()}, headers={"x-id": "m1"})
    )
    with aiohttp_gateway(simulator, "a") as gw:
        result = await gw.http.request(
            "POST", "/v1/m", params={"q": "é x"}, json={"n": 1}, headers={"Idempotency-Key": "op-1"}
        )
        assert isinstance(gw.provider("a").aclient._transport, AiohttpTransport)
        await gw.provider("a").aclose_loop_client()
    assert result.value.json() == {"got": {"n": 1}}
    assert result.value.headers["x-id"] == "m1"
    [seen] = simulator.requests(prefix="/a")
    assert (seen.method, seen.path, seen.query) == ("POST", "/a/v1/m", "q=%C3%A9+x")
    assert seen.headers["idempotency-key"] == "op-1"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert "aiohttp" not in seen.headers.get("user-agent", "")  # no headers of aiohttp's own


async def test_each_event_loop_gets_its_own_aiohttp_session(simulator: Simulator) -> None:
    simulator.route("GET", "/a/ok", lambda r: SimResponse.json({"ok": True}))
    with aiohttp_gateway(simulator, "a") as gw:

        async def once() -> int:
            result = await gw.http.request("GET", "/ok")
            await gw.provider("a").aclose_loop_client()
            return result.value.status_code

        assert await asyncio.to_thread(asyncio.run, once()) == 200
        assert await asyncio.to_thread(asyncio.run, once()) == 200  # a fresh loop, a fresh one


async def test_a_refused_connection_is_a_connect_error_so_it_may_fail_over_anything() -> None:
    with pytest.raises(httpx.ConnectError) as info:
        await send(f"http://127.0.0.1:{free_port()}/x")
    verdict = Classifier(()).error(info.value)
    assert verdict is not None and verdict.outcome is Outcome.RETRYABLE


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        (Fault.hang(), httpx.ReadTimeout),
        (Fault.reset(), (httpx.RemoteProtocolError, httpx.ReadError)),
        (Fault.reset_mid_body(), (httpx.RemoteProtocolError, httpx.ReadError)),
    ],
)
async def test_a_failure_after_connecting_is_ambiguous(
    simulator: Simulator, fault: Fault, raised: Any
) -> None:
    """The request may have been received: the classifier must never take it as not sent."""
    simulator.route("GET", "/x", lambda r: SimResponse.json({"padding": "x" * 5000}))
    simulator.inject(fault)
    with pytest.raises(raised) as info:
        await send(simulator.url("/x"))
    verdict = Classifier(()).error(info.value)
    assert verdict is not None and verdict.outcome is Outcome.AMBIGUOUS


async def test_a_body_arrives_whole_however_it_was_chunked(simulator: Simulator) -> None:
    body = bytes(range(256)) * 1024
    simulator.route("GET", "/big", lambda r: SimResponse(200, {}, body))
    response = await send(simulator.url("/big"))
    assert response.content == body


async def test_a_streamed_request_body_is_sent_whole(simulator: Simulator) -> None:
    simulator.route("POST", "/up", lambda r: SimResponse(200, {}, r.body[::-1]))

    async def parts() -> Any:
        yield b"abc"
        yield b"def"

    transport = AiohttpTransport()
    try:
        request = httpx.Request(
            "POST", simulator.url("/up"), content=parts(), extensions={"timeout": TIMEOUT}
        )
        response = await transport.handle_async_request(request)
        assert await response.aread() == b"fedcba"
    finally:
        await transport.aclose()


# -- the lean clients ------------------------------------------------------------------------


def test_the_lean_client_carries_no_cookies_from_one_call_to_the_next(
    simulator: Simulator,
) -> None:
    simulator.route("GET", "/set", lambda r: SimResponse(200, {"set-cookie": "session=abc"}))
    simulator.route(
        "GET", "/echo", lambda r: SimResponse(200, {}, r.headers.get("cookie", "").encode())
    )
    with LeanClient(max_response_bytes=1 << 24) as client:
        client.send(client.build_request("GET", simulator.url("/set")))
        echoed = client.send(client.build_request("GET", simulator.url("/echo")))
    assert echoed.content == b""
    with httpx.Client() as plain:  # what it differs from: httpx's jar would send it back
        plain.get(simulator.url("/set"))
        assert plain.get(simulator.url("/echo")).content == b"session=abc"


async def test_the_lean_async_client_reads_unless_streaming_and_honours_auth(
    simulator: Simulator,
) -> None:
    simulator.route(
        "GET", "/who", lambda r: SimResponse(200, {}, r.headers["authorization"].encode())
    )
    async with LeanAsyncClient(max_response_bytes=1 << 24) as client:
        read = await client.send(
            client.build_request("GET", simulator.url("/who"), headers={"authorization": "x"})
        )
        assert read.is_stream_consumed and read.content == b"x"
        streamed = await client.send(
            client.build_request("GET", simulator.url("/who"), headers={"authorization": "y"}),
            stream=True,
        )
        assert not streamed.is_stream_consumed
        assert await streamed.aread() == b"y"
        authed = await client.send(
            client.build_request("GET", simulator.url("/who")), auth=("user", "pw")
        )
        assert authed.content.startswith(b"Basic ")  # the auth flow ran: httpx's full path
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(client.build_request("GET", simulator.url("/who")))


# -- group commit ------------------------------------------------------------------------------


class SlowStore:
    """Records each settle call; each takes a moment, as a store write does."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Sequence[Any]]] = []
        self.fail = fail

    def settle(self, **batch: Sequence[Any]) -> None:
        import time

        time.sleep(0.02)
        if self.fail:
            raise OSError("disk full")
        self.calls.append(batch)


async def test_outcomes_that_arrive_together_are_written_together() -> None:
    store = SlowStore()
    commit = GroupCommit(store)  # type: ignore[arg-type]
    await asyncio.gather(*(commit.record({"delivered": [f"d{n}"]}) for n in range(50)))
    written = [i for call in store.calls for i in call["delivered"]]
    assert sorted(written) == sorted(f"d{n}" for n in range(50))  # every one, once
    assert len(store.calls) <= 3  # the first alone, the rest in one or two groups


async def test_a_caller_returns_only_once_its_outcome_is_written() -> None:
    store = SlowStore()
    commit = GroupCommit(store)  # type: ignore[arg-type]
    await commit.record({"dead": [("r1", "why")]})
    assert store.calls == [{"delivered": [], "later": [], "dead": [("r1", "why")]}]


async def test_a_failed_write_fails_every_caller_of_its_group() -> None:
    commit = GroupCommit(SlowStore(fail=True))  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(commit.record({"delivered": [f"d{n}"]}) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)


# -- choosing the client -----------------------------------------------------------------------


def test_a_worker_sends_with_aiohttp_unless_the_config_chose() -> None:
    assert worker_settings(GatewaySettings()).async_client == "aiohttp"
    assert worker_settings(GatewaySettings(async_client="httpx")).async_client == "httpx"
    assert Gateway(GatewaySettings()).settings.async_client is None  # applications: httpx


def test_an_unknown_async_client_is_a_config_error_naming_the_key() -> None:
    problem = error({"gateway": {"async_client": "requests"}})
    assert "test.toml" in str(problem) and "gateway.async_client" in str(problem)
    assert "aiohttp" in str(problem)


# -- gw.http builds what httpx's build_request would ------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {"n": 1, "é": "ü"}},
        {"params": {"q": "a b", "n": 2}, "headers": {"User-Agent": "mine/1", "X-A": "1"}},
        {"content": b"raw", "headers": [("X-Dup", "1"), ("X-Dup", "2")]},
        {"data": {"field": "v"}, "headers": {"Authorization": "Bearer caller-own-Zk4"}},
    ],
)
@pytest.mark.parametrize("base_url", ["https://api.example.test/base", "http://bare-host"])
def test_the_direct_request_is_the_one_build_request_makes(
    kwargs: dict[str, Any], base_url: str
) -> None:
    from resilient.http_capability import HttpOperation

    settings = provider("p", base_url, api_key=Secret(KEY))
    with Gateway(GatewaySettings(providers={"p": settings})) as gw:
        rt = gw.provider("p")
        op = HttpOperation("POST", "/v1/items?x=1", dict(kwargs))
        built = op._request(rt.client, rt, 1.0)
        expected = rt.client.build_request(
            "POST", "/v1/items?x=1", timeout=rt.attempt_timeout(1.0), **kwargs
        )
        if "authorization" not in expected.headers:
            expected.headers["Authorization"] = f"Bearer {KEY}"
    assert built.url == expected.url
    assert sorted(built.headers.multi_items()) == sorted(expected.headers.multi_items())
    assert built.read() == expected.read()
    assert built.extensions["timeout"] == expected.extensions["timeout"]


async def test_a_streamed_answer_arrives_part_by_part(simulator: Simulator) -> None:
    """Chunked answers (server-sent events) are streamed, not read whole: the first part is
    readable while the server holds the rest back."""
    simulator.route("GET", "/sse", lambda r: SimResponse.stream(["data: one\n\n", "data: two\n\n"]))
    simulator.inject(Fault.stall_stream(after=1), path="/sse")
    transport = AiohttpTransport()
    try:
        request = httpx.Request("GET", simulator.url("/sse"), extensions={"timeout": TIMEOUT})
        response = await transport.handle_async_request(request)
        parts = response.aiter_raw()
        assert await parts.__anext__() == b"data: one\n\n"
        with pytest.raises(httpx.ReadTimeout):
            await parts.__anext__()
        await response.aclose()
    finally:
        await transport.aclose()


async def test_a_small_answer_is_read_with_its_headers(simulator: Simulator) -> None:
    simulator.route("GET", "/small", lambda r: SimResponse.json({"ok": True}))
    transport = AiohttpTransport()
    try:
        request = httpx.Request("GET", simulator.url("/small"), extensions={"timeout": TIMEOUT})
        response = await transport.handle_async_request(request)
        assert isinstance(response.stream, httpx.ByteStream)  # held in memory, connection freed
        assert json.loads(await response.aread()) == {"ok": True}
    finally:
        await transport.aclose()


def test_a_lean_client_set_to_follow_redirects_or_with_hooks_still_does(
    simulator: Simulator,
) -> None:
    """Client-level settings keep httpx's full path: its redirect policy, auth and hooks."""
    simulator.route("GET", "/old", lambda r: SimResponse(302, {"location": "/new"}))
    simulator.route("GET", "/new", lambda r: SimResponse(200, {}, b"moved"))
    seen: list[str] = []
    with LeanClient(
        follow_redirects=True,
        event_hooks={"request": [lambda r: seen.append("h")]},
        max_response_bytes=1 << 24,
    ) as client:
        answer = client.send(client.build_request("GET", simulator.url("/old")))
    assert answer.content == b"moved" and seen == ["h", "h"]
    with LeanClient(auth=("user", "pw"), max_response_bytes=1 << 24) as client:
        simulator.route(
            "GET", "/who", lambda r: SimResponse(200, {}, r.headers["authorization"].encode())
        )
        assert client.send(client.build_request("GET", simulator.url("/who"))).content.startswith(
            b"Basic "
        )
    with LeanClient(
        max_response_bytes=1 << 24
    ) as client:  # the lean path: the redirect is the answer
        assert client.send(client.build_request("GET", simulator.url("/old"))).status_code == 302
