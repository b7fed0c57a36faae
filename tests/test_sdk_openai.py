"""The drop-in OpenAI clients against the simulator over loopback: sync and async, on httpx2 (the
SDK's own) and on httpx (a client passed in), plain and streamed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import httpx2
import openai
import pytest

from providers.openai import AsyncOpenAI, OpenAI
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.policy.classify import Classifier
from resilient.settings import (
    BreakerSettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.openai import OpenAIState
from tests.conftest import provider

FAST = RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.02)
MESSAGES = [{"role": "user", "content": "hello there"}]
Client = OpenAI | AsyncOpenAI


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    mount(simulator, "openai", prefix="/openai")
    return simulator


@pytest.fixture(params=["httpx2", "httpx"])
def flavor(request: pytest.FixtureRequest) -> str:
    """The SDK's own httpx2 client, or an httpx client handed to it."""
    return str(request.param)


def settings(sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {"retry": FAST, **overrides}
    return replace(provider("openai", sim.url("/openai/v1"), **values), kind="openai")


def gateway(*providers: ProviderSettings) -> Gateway:
    return Gateway(GatewaySettings(providers={p.name: p for p in providers}))


def client(mode: str, flavor: str, gw: Gateway | None, sim: Simulator, **kwargs: Any) -> Client:
    if flavor == "httpx":
        kwargs["http_client"] = httpx.Client() if mode == "sync" else httpx.AsyncClient()
    cls = OpenAI if mode == "sync" else AsyncOpenAI
    return cls(api_key="sk-test", base_url=sim.url("/openai/v1"), gateway=gw, **kwargs)


async def chat(sdk: Any, **kwargs: Any) -> Any:
    kwargs = {"model": "gpt-4o-mini", "messages": MESSAGES, **kwargs}
    if isinstance(sdk, openai.AsyncOpenAI):
        return await sdk.chat.completions.create(**kwargs)
    return await asyncio.to_thread(sdk.chat.completions.create, **kwargs)


async def streamed_text(sdk: Any, **kwargs: Any) -> str:
    stream = await chat(sdk, stream=True, **kwargs)
    if isinstance(sdk, openai.AsyncOpenAI):
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return await asyncio.to_thread(
        lambda: "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    )


async def test_sends_the_bytes_the_official_client_sends(
    sim: Simulator, mode: str, flavor: str
) -> None:
    official_cls = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
    official = official_cls(api_key="sk-test", base_url=sim.url("/openai/v1"))
    answer = await chat(official, temperature=0.2, user="u-1")
    ours = client(mode, flavor, gateway(settings(sim)), sim)
    result = await chat(ours, temperature=0.2, user="u-1")

    theirs, mine = sim.requests(prefix="/openai")
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    assert mine.headers["authorization"] == theirs.headers["authorization"] == "Bearer sk-test"
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.body == theirs.body
    assert type(result) is type(answer)
    assert result.choices[0].message.content == "echo: hello there"


async def test_a_503_is_retried_once_by_us_never_by_the_sdk(
    sim: Simulator, mode: str, flavor: str
) -> None:
    sim.inject(Fault.status(503), prefix="/openai", times=1)
    result = await chat(client(mode, flavor, gateway(settings(sim)), sim))
    assert result.choices[0].message.content == "echo: hello there"
    requests = sim.requests(prefix="/openai")
    assert [r.status for r in requests] == [503, 200]
    assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "0"]


async def test_copies_share_the_pipeline_instead_of_stacking_another(
    sim: Simulator, mode: str
) -> None:
    sdk = client(mode, "httpx2", gateway(settings(sim)), sim)
    copy = sdk.with_options(timeout=5, max_retries=4)
    assert copy.resilient_provider is sdk.resilient_provider and copy.max_retries == 0
    sim.inject(Fault.status(503), prefix="/openai", times=1)
    await chat(copy)
    assert len(sim.requests(prefix="/openai")) == 2


async def test_rate_limit_hint_is_honoured(sim: Simulator, mode: str) -> None:
    sim.inject(Fault.rate_limited(retry_after_ms=100), prefix="/openai", times=1)
    await chat(client(mode, "httpx2", gateway(settings(sim)), sim))
    first, second = sim.requests(prefix="/openai")
    assert second.received_at - first.received_at >= 0.09


async def test_open_breaker_fails_fast_with_the_sdk_connection_error(
    sim: Simulator, mode: str, flavor: str
) -> None:
    sim.inject(Fault.status(503), prefix="/openai")
    breaker = BreakerSettings(min_calls=2, window=5.0, open_for=30.0)
    sdk = client(mode, flavor, gateway(settings(sim, breaker=breaker)), sim)
    with pytest.raises(openai.InternalServerError):  # our two attempts, then the SDK's error
        await chat(sdk)
    assert sdk.resilient_provider.breaker.state == "open"
    with pytest.raises(openai.APIConnectionError):
        await chat(sdk)
    assert len(sim.requests(prefix="/openai")) == 2


async def test_fatal_errors_reach_the_caller_as_the_sdk_raises_them(
    sim: Simulator, mode: str, flavor: str
) -> None:
    sdk = client(mode, flavor, gateway(settings(sim)), sim)
    with pytest.raises(openai.BadRequestError) as caught:
        await chat(sdk, model="")
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "you must provide a model parameter",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert len(sim.requests(prefix="/openai")) == 1
    runtime = sdk.resilient_provider
    assert runtime.breaker.failure_rate(runtime.clock()) == (0, 0.0)  # our mistake, not theirs


async def test_silent_provider_raises_the_sdk_timeout(sim: Simulator, mode: str) -> None:
    sim.inject(Fault.hang(), prefix="/openai")
    timeouts = TimeoutSettings(connect=0.5, read=5.0, write=1.0, attempt=0.3)
    sdk = client(mode, "httpx2", gateway(settings(sim, timeouts=timeouts)), sim)
    with pytest.raises(openai.APITimeoutError):
        await chat(sdk)
    assert len(sim.requests(prefix="/openai")) == 1  # maybe done: not repeated


async def test_streams_through_the_pipeline(sim: Simulator, mode: str, flavor: str) -> None:
    sim.inject(Fault.status(503), prefix="/openai", times=1)
    sdk = client(mode, flavor, gateway(settings(sim)), sim)
    text = await streamed_text(sdk, stream_options={"include_usage": True})
    assert text == "echo: hello there"
    assert len(sim.requests(prefix="/openai")) == 2


async def test_stream_cut_midway_counts_against_the_provider(
    sim: Simulator, mode: str, flavor: str
) -> None:
    sim.inject(Fault.reset_mid_body(), prefix="/openai", times=1)
    breaker = BreakerSettings(min_calls=2, failure_ratio=0.5, window=5.0, open_for=30.0)
    sdk = client(mode, flavor, gateway(settings(sim, breaker=breaker)), sim)
    with pytest.raises(openai.APIConnectionError) as caught:  # the SDK's word for a cut stream
        await streamed_text(sdk)
    assert isinstance(caught.value.__cause__, (httpx.TransportError, httpx2.TransportError))
    assert sdk.resilient_provider.breaker.state == "open"  # one success at headers, one failure
    with pytest.raises(openai.APIConnectionError):
        await streamed_text(sdk)
    assert len(sim.requests(prefix="/openai")) == 1


_FIRST_CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
)


class _StallingBody(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """One event, then nothing until the read timeout."""

    def __iter__(self) -> Iterator[bytes]:
        yield _FIRST_CHUNK
        raise httpx2.ReadTimeout("stalled")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _FIRST_CHUNK
        raise httpx2.ReadTimeout("stalled")


class _Stalling(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=_StallingBody(), request=request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.handle_request(request)


async def test_stream_that_stalls_counts_against_the_provider(sim: Simulator, mode: str) -> None:
    breaker = BreakerSettings(min_calls=2, failure_ratio=0.5, window=5.0, open_for=30.0)
    gw = gateway(settings(sim, breaker=breaker))
    http_client = httpx2.Client(transport=_Stalling())
    if mode == "async":
        http_client = httpx2.AsyncClient(transport=_Stalling())
    sdk = client(mode, "httpx2", gw, sim, http_client=http_client)
    with pytest.raises(openai.APITimeoutError):
        await streamed_text(sdk)
    assert sdk.resilient_provider.breaker.state == "open"


async def test_without_a_gateway_a_private_one_serves_the_client(sim: Simulator, mode: str) -> None:
    sim.inject(Fault.status(503), prefix="/openai", times=1)
    cls = OpenAI if mode == "sync" else AsyncOpenAI
    sdk = cls(api_key="sk-test", base_url=sim.url("/openai/v1"))
    assert sdk.max_retries == 0
    runtime = sdk.resilient_provider
    assert (runtime.name, runtime.settings.kind) == ("openai", "openai")
    assert runtime.settings.base_url == sim.url("/openai/v1")
    assert runtime.settings.retry.retry_ambiguous  # as openai-python, which repeats timeouts
    assert ("409", "retryable") in runtime.settings.classify
    assert (await chat(sdk)).choices[0].message.content == "echo: hello there"
    assert len(sim.requests(prefix="/openai")) == 2


async def test_config_provides_kind_key_and_base_url(sim: Simulator, mode: str) -> None:
    config = {
        "providers": {
            "llm-primary": {
                "kind": "openai",
                "api_key": "sk-from-config",
                "base_url": sim.url("/openai/v1"),
                "organization": "org-42",
            }
        }
    }
    gw = Gateway(settings_from_mapping(config))
    cls = OpenAI if mode == "sync" else AsyncOpenAI
    sdk = cls(gateway=gw, provider="llm-primary")
    await chat(sdk)
    (request,) = sim.requests(prefix="/openai")
    assert request.headers["authorization"] == "Bearer sk-from-config"
    assert request.headers["openai-organization"] == "org-42"


def test_a_plain_text_reply_can_be_scripted(simulator: Simulator) -> None:
    state: OpenAIState = mount(simulator, "openai", prefix="/llm")
    state.reply = lambda messages: f"{len(messages)} messages"
    sdk = OpenAI(api_key="sk-test", base_url=simulator.url("/llm/v1"))
    result = sdk.chat.completions.create(model="m", messages=MESSAGES * 2)
    assert result.choices[0].message.content == "2 messages"
    assert result.usage is not None and result.usage.total_tokens > 0
    assert json.loads(simulator.requests()[0].body)["model"] == "m"


@pytest.mark.parametrize(
    "name", ["ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "ReadError"]
)
def test_httpx2_errors_classify_as_httpx_errors(name: str) -> None:
    classifier = Classifier()
    ours, theirs = getattr(httpx, name)("x"), getattr(httpx2, name)("x")
    assert classifier.error(ours) == classifier.error(theirs) is not None
