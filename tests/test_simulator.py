import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate

import httpx
import pytest

from resilient.testing import Fault, SimRequest, SimResponse, Simulator

pytest_plugins = ["pytester"]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as c:
        yield c


def test_builtin_health_and_echo(simulator: Simulator, client: httpx.Client) -> None:
    assert client.get(simulator.url("/__health")).json() == {"ok": True}
    echoed = client.put(simulator.url("/echo/a/b?x=1"), content=b"hello")
    assert echoed.status_code == 200
    assert echoed.json()["method"] == "PUT"
    assert echoed.json()["path"] == "/echo/a/b"
    assert echoed.json()["query"] == "x=1"
    assert echoed.json()["body"] == "hello"


def test_base_url_is_loopback_with_real_port(simulator: Simulator) -> None:
    assert simulator.base_url == f"http://127.0.0.1:{simulator.port}"
    assert simulator.url("/sendgrid") == simulator.base_url + "/sendgrid"
    assert simulator.port > 0


def test_routes_with_params_headers_query_and_json(
    simulator: Simulator, client: httpx.Client
) -> None:
    seen: list[SimRequest] = []

    def handler(request: SimRequest) -> SimResponse:
        seen.append(request)
        return SimResponse.json({"id": request.params["id"], "got": request.json()}, status=201)

    simulator.route("POST", "/v1/customers/{id}", handler)
    response = client.post(
        simulator.url("/v1/customers/cus%2042?expand=x"),
        json={"name": "Ada"},
        headers={"X-Trace": "t1"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"id": "cus 42", "got": {"name": "Ada"}}
    assert seen[0].method == "POST"
    assert seen[0].query == "expand=x"
    assert seen[0].headers["x-trace"] == "t1"


def test_param_route_does_not_match_other_shapes(
    simulator: Simulator, client: httpx.Client
) -> None:
    simulator.route("GET", "/v1/customers/{id}", lambda r: SimResponse.json({}))
    assert client.get(simulator.url("/v1/customers/")).status_code == 404
    assert client.get(simulator.url("/v1/customers/1/cards")).status_code == 404
    assert client.post(simulator.url("/v1/customers/1")).status_code == 404


def test_any_method_route_and_replacement(simulator: Simulator, client: httpx.Client) -> None:
    simulator.route("*", "/v3/mail/send", lambda r: SimResponse(status=202))
    assert client.post(simulator.url("/v3/mail/send")).status_code == 202
    assert client.delete(simulator.url("/v3/mail/send")).status_code == 202
    simulator.route("*", "/v3/mail/send", lambda r: SimResponse(status=200, body=b"v2"))
    assert client.post(simulator.url("/v3/mail/send")).text == "v2"


def test_unknown_route_is_404_json(simulator: Simulator, client: httpx.Client) -> None:
    response = client.patch(simulator.url("/nope"))
    assert response.status_code == 404
    assert response.json() == {"error": "no route", "method": "PATCH", "path": "/nope"}
    assert simulator.requests()[-1].effect is False


def test_handler_exception_is_500_without_effect(
    simulator: Simulator, client: httpx.Client
) -> None:
    def broken(request: SimRequest) -> SimResponse:
        raise ValueError("boom")

    simulator.route("GET", "/broken", broken)
    response = client.get(simulator.url("/broken"))
    assert response.status_code == 500
    assert "boom" in response.json()["detail"]
    assert simulator.effects() == []


def test_head_gets_headers_without_body(simulator: Simulator, client: httpx.Client) -> None:
    simulator.route("HEAD", "/file", lambda r: SimResponse(body=b"12345"))
    response = client.head(simulator.url("/file"))
    assert response.status_code == 200
    assert response.headers["content-length"] == "5"
    assert response.content == b""
    assert client.get(simulator.url("/__health")).status_code == 200  # connection still usable


def test_status_fault_replaces_route(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(503, json={"error": "down"}, headers={"X-Why": "maint"}))
    response = client.post(simulator.url("/echo/x"))
    assert response.status_code == 503
    assert response.json() == {"error": "down"}
    assert response.headers["x-why"] == "maint"
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("status:503", False, 503)


def test_status_fault_with_raw_body(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(500, body=b"oops"))
    response = client.get(simulator.url("/echo"))
    assert (response.status_code, response.content) == (500, b"oops")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.rate_limited(2), {"retry-after": "2"}),
        (Fault.rate_limited(0.5), {"retry-after": "0.5"}),
        (Fault.rate_limited(retry_after_ms=250), {"retry-after-ms": "250"}),
        (
            Fault.rate_limited(3, retry_after_ms=3000),
            {"retry-after": "3", "retry-after-ms": "3000"},
        ),
        (Fault.rate_limited(), {}),
    ],
)
def test_rate_limited(
    simulator: Simulator, client: httpx.Client, fault: Fault, expected: dict[str, str]
) -> None:
    simulator.inject(fault)
    response = client.get(simulator.url("/echo"))
    assert response.status_code == 429
    hints = {k: v for k, v in response.headers.items() if k.startswith("retry-after")}
    assert hints == expected
    assert simulator.requests()[-1].fault == "rate_limited"


def test_rate_limited_with_http_date(simulator: Simulator, client: httpx.Client) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    simulator.inject(Fault.rate_limited(when))
    assert client.get(simulator.url("/echo")).headers["retry-after"] == when


def test_latency_then_serves_normally(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.latency(0.2))
    started = time.monotonic()
    response = client.post(simulator.url("/echo/slow"), content=b"x")
    assert time.monotonic() - started >= 0.2
    assert response.json()["body"] == "x"
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("latency", True, 200)


def test_latency_longer_than_client_timeout_times_out(simulator: Simulator) -> None:
    simulator.inject(Fault.latency(1.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(simulator.url("/echo"), timeout=0.3)


def test_hang_is_cut_by_client_timeout(simulator: Simulator) -> None:
    simulator.inject(Fault.hang())
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(simulator.url("/echo/x"), timeout=0.3)
    assert time.monotonic() - started < 2.0
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("hang", False, None)


def test_hang_after_effect_records_the_work(simulator: Simulator) -> None:
    simulator.inject(Fault.hang(after_effect=True))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(simulator.url("/echo/x"), timeout=0.3)
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("hang", True, None)


def test_reset_before_any_response_byte(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.reset(), times=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(simulator.url("/echo/x"))
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("reset", False, None)
    assert client.get(simulator.url("/__health")).status_code == 200  # pool recovers


def test_reset_is_a_tcp_rst_not_a_clean_close(simulator: Simulator) -> None:
    simulator.inject(Fault.reset())
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=2.0) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while sock.recv(4096):
                pass


def test_reset_after_effect(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.reset(after_effect=True))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(simulator.url("/echo/charge"), headers={"Idempotency-Key": "k1"})
    effects = simulator.effects(path="/echo/charge")
    assert [(e.fault, e.idempotency_key, e.status) for e in effects] == [("reset", "k1", None)]


def test_reset_mid_body_after_headers(simulator: Simulator, client: httpx.Client) -> None:
    simulator.route("POST", "/v1/charges", lambda r: SimResponse.json({"id": "ch_1" * 50}))
    simulator.inject(Fault.reset_mid_body())
    with client.stream("POST", simulator.url("/v1/charges")) as response:
        assert response.status_code == 200
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            response.read()
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("reset_mid_body", True, 200)


def test_reset_mid_body_cuts_even_an_empty_body(simulator: Simulator) -> None:
    simulator.route("POST", "/empty", lambda r: SimResponse())
    simulator.inject(Fault.reset_mid_body())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(simulator.url("/empty"), timeout=2.0)


def test_fault_after_delays_activation(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(503), after=0.3)
    assert client.get(simulator.url("/echo")).status_code == 200
    time.sleep(0.35)
    assert client.get(simulator.url("/echo")).status_code == 503


def test_fault_duration_expires(simulator: Simulator, client: httpx.Client) -> None:
    handle = simulator.inject(Fault.status(503), duration=0.3)
    assert client.get(simulator.url("/echo")).status_code == 503
    time.sleep(0.35)
    assert client.get(simulator.url("/echo")).status_code == 200
    assert handle.hits == 1


def test_fault_times_limits_hits(simulator: Simulator, client: httpx.Client) -> None:
    handle = simulator.inject(Fault.status(502), times=2)
    codes = [client.get(simulator.url("/echo")).status_code for _ in range(4)]
    assert codes == [502, 502, 200, 200]
    assert handle.hits == 2


def test_flapping_alternates_from_injection(simulator: Simulator, client: httpx.Client) -> None:
    handle = simulator.inject(
        Fault.flapping(up=0.2, down=0.2, fault=Fault.status(503)), path="/echo"
    )
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        client.get(simulator.url("/echo"))
        time.sleep(0.02)
    records = simulator.requests(path="/echo")
    for record in records:
        phase = (record.received_at - handle.injected_at) % 0.4
        expected = ("status:503", 503) if phase >= 0.2 else (None, 200)
        assert (record.fault, record.status) == expected, phase
    assert {r.status for r in records} == {200, 503}
    assert handle.hits == sum(r.status == 503 for r in records)


def test_flapping_healthy_phase_steps_aside(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(500))
    simulator.inject(Fault.flapping(up=5, down=5, fault=Fault.status(503)))
    assert client.get(simulator.url("/echo")).status_code == 500


def test_most_recent_matching_fault_wins(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(503))
    newer = simulator.inject(Fault.status(500))
    simulator.inject(Fault.status(418), path="/elsewhere")
    assert client.get(simulator.url("/echo")).status_code == 500
    newer.clear()
    assert client.get(simulator.url("/echo")).status_code == 503
    simulator.clear_faults()
    assert client.get(simulator.url("/echo")).status_code == 200


def test_fault_scope_by_method_path_and_prefix(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(501), method="post", prefix="/echo/stripe")
    simulator.inject(Fault.status(502), path="/echo/exact")
    assert client.post(simulator.url("/echo/stripe/charges")).status_code == 501
    assert client.get(simulator.url("/echo/stripe/charges")).status_code == 200
    assert client.post(simulator.url("/echo/other")).status_code == 200
    assert client.get(simulator.url("/echo/exact")).status_code == 502
    assert client.get(simulator.url("/echo/exact/more")).status_code == 200


def test_records_and_effects(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.status(503), times=1, path="/echo/pay")
    for key in ("a", "a", "b"):
        client.post(simulator.url("/echo/pay?x=1"), content=b"{}", headers={"IDEMPOTENCY-KEY": key})
    client.get(simulator.url("/__health"))

    everything = simulator.requests()
    assert [r.path for r in everything] == ["/echo/pay", "/echo/pay", "/echo/pay", "/__health"]
    assert [r.received_at for r in everything] == sorted(r.received_at for r in everything)
    pay = simulator.requests(method="POST", path="/echo/pay")
    assert [(r.idempotency_key, r.fault, r.effect, r.status) for r in pay] == [
        ("a", "status:503", False, 503),
        ("a", None, True, 200),
        ("b", None, True, 200),
    ]
    assert pay[0].query == "x=1"
    assert pay[0].body == b"{}"
    assert pay[0].headers["idempotency-key"] == "a"
    assert [r.idempotency_key for r in simulator.effects(prefix="/echo")] == ["a", "b"]
    assert simulator.requests(method="GET", prefix="/echo") == []


def test_reset_clears_faults_records_and_routes(simulator: Simulator, client: httpx.Client) -> None:
    simulator.route("GET", "/mine", lambda r: SimResponse())
    simulator.route("GET", "/mine/{id}", lambda r: SimResponse())
    simulator.inject(Fault.status(503), path="/elsewhere")
    client.get(simulator.url("/mine"))
    simulator.reset()
    assert simulator.requests() == []
    assert client.get(simulator.url("/mine")).status_code == 404
    assert client.get(simulator.url("/mine/1")).status_code == 404
    assert client.get(simulator.url("/elsewhere")).status_code == 404
    assert client.get(simulator.url("/__health")).status_code == 200


def test_keep_alive_reuses_one_connection(simulator: Simulator, client: httpx.Client) -> None:
    ports = set()
    for _ in range(5):
        response = client.post(simulator.url("/echo/k"), content=b"x")
        assert response.status_code == 200
        ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1


def test_keep_alive_raw_socket_pipelined(simulator: Simulator) -> None:
    request = b"POST /echo/r HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=2.0) as sock:
        sock.sendall(request * 3)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert len(simulator.requests(path="/echo/r")) == 3


def test_connection_close_is_honoured(simulator: Simulator) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=2.0) as sock:
        sock.sendall(b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b'{"ok": true}')


def test_malformed_request_gets_400(simulator: Simulator) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=2.0) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


async def test_200_concurrent_async_requests(simulator: Simulator) -> None:
    simulator.inject(Fault.latency(0.05), prefix="/echo/slow")
    async with httpx.AsyncClient(timeout=10.0) as client:
        responses = await asyncio.gather(
            *(
                client.post(simulator.url(f"/echo/slow/{i}"), content=str(i).encode())
                for i in range(200)
            )
        )
    assert [r.json()["body"] for r in responses] == [str(i) for i in range(200)]
    assert len(simulator.effects(prefix="/echo/slow")) == 200


async def test_async_hang_and_reset(simulator: Simulator) -> None:
    simulator.inject(Fault.hang(), path="/echo/hang")
    simulator.inject(Fault.reset(), path="/echo/reset")
    async with httpx.AsyncClient(timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(simulator.url("/echo/hang"))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.get(simulator.url("/echo/reset"))
        assert (await client.get(simulator.url("/echo/ok"))).status_code == 200


def test_stop_while_hung_returns_promptly() -> None:
    sim = Simulator().start()
    sim.inject(Fault.hang())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(sim.url("/echo"), timeout=30.0)
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2.0
    while not sim.requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.requests()[0].fault == "hang"
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2.0
    caller.join(5.0)
    assert not caller.is_alive()
    assert len(errors) == 1
    assert not sim.running


def test_context_manager_and_restart() -> None:
    with Simulator() as sim:
        first = sim.base_url
        assert httpx.get(sim.url("/__health")).status_code == 200
    assert not sim.running
    with pytest.raises(RuntimeError, match="start"):
        _ = sim.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(first + "/__health", timeout=1.0)
    with sim:
        assert httpx.get(sim.url("/__health")).status_code == 200


def test_max_records_keeps_the_newest() -> None:
    with Simulator(max_records=2) as sim, httpx.Client() as client:
        for i in range(4):
            client.get(sim.url(f"/echo/{i}"))
        assert [r.path for r in sim.requests()] == ["/echo/2", "/echo/3"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fault.status(42),
        lambda: Fault.latency(-1),
        lambda: Fault.flapping(up=0, down=1, fault=Fault.hang()),
    ],
)
def test_invalid_faults_are_refused(build: Callable[[], Fault]) -> None:
    with pytest.raises(ValueError):
        build()


def test_simulator_fixture_resets_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import httpx
        from resilient.testing import Fault, SimResponse

        def test_dirty(simulator):
            simulator.route("GET", "/left", lambda r: SimResponse())
            simulator.inject(Fault.status(503), path="/__health")
            httpx.get(simulator.url("/left"))

        def test_clean(simulator, simulator_server):
            assert simulator is simulator_server
            assert simulator.requests() == []
            assert httpx.get(simulator.url("/left")).status_code == 404
            assert httpx.get(simulator.url("/__health")).status_code == 200
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


# streamed responses and stream faults

_PARTS = [f"data: {n}\n\n" for n in range(4)]


def _streamed(simulator: Simulator, delay: float = 0.0) -> None:
    simulator.route("POST", "/v1/stream", lambda r: SimResponse.stream(_PARTS, delay=delay))


def test_stream_is_chunked_and_complete(simulator: Simulator, client: httpx.Client) -> None:
    _streamed(simulator, delay=0.01)
    with client.stream("POST", simulator.url("/v1/stream")) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.read() == "".join(_PARTS).encode()
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == (None, True, 200)
    assert client.get(simulator.url("/__health")).status_code == 200  # connection reusable


def test_stream_parts_are_flushed_one_by_one(simulator: Simulator) -> None:
    """The first part is readable while the server holds back the rest: each part is flushed."""
    _streamed(simulator)
    simulator.inject(Fault.stall_stream(after=1))
    with (
        httpx.Client(timeout=httpx.Timeout(2.0, read=0.5)) as client,
        client.stream("POST", simulator.url("/v1/stream")) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "data: 0"
        with pytest.raises(httpx.ReadTimeout):
            list(lines)
    record = simulator.requests()[-1]
    assert (record.fault, record.effect, record.status) == ("stream_stall", True, 200)


def test_stream_cut_after_n_parts(simulator: Simulator, client: httpx.Client) -> None:
    _streamed(simulator)
    simulator.inject(Fault.cut_stream(after=2))
    received: list[str] = []
    with (
        client.stream("POST", simulator.url("/v1/stream")) as response,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        received.extend(line for line in response.iter_lines() if line)
    assert received == ["data: 0", "data: 1"]


def test_stream_malformed_event_inserted(simulator: Simulator, client: httpx.Client) -> None:
    _streamed(simulator)
    simulator.inject(Fault.malformed_event(at=1))
    body = client.post(simulator.url("/v1/stream")).text
    assert body == _PARTS[0] + "data: {this is not json\n\n" + "".join(_PARTS[1:])


def test_stream_without_end_marker(simulator: Simulator, client: httpx.Client) -> None:
    _streamed(simulator)
    simulator.inject(Fault.no_end_marker())
    assert client.post(simulator.url("/v1/stream")).text == "".join(_PARTS[:-1])


def test_stream_slow_first_token_sends_headers_first(simulator: Simulator) -> None:
    _streamed(simulator)
    simulator.inject(Fault.slow_first_token(1.0))
    with (
        httpx.Client(timeout=httpx.Timeout(2.0, read=0.3)) as client,
        client.stream("POST", simulator.url("/v1/stream")) as response,
    ):
        assert response.status_code == 200  # the head came at once
        with pytest.raises(httpx.ReadTimeout):
            response.read()


def test_plain_answer_counts_as_one_part(simulator: Simulator, client: httpx.Client) -> None:
    simulator.inject(Fault.cut_stream(after=0))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(simulator.url("/echo/x"))
    assert simulator.requests()[-1].effect
