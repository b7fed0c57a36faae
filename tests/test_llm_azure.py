"""gw.llm on Azure OpenAI: the deployments URL, api-version and api-key header pinned with
respx (the body OpenAI's, less the model the deployment names), the logical model mapped to a
deployment, a prompt its content filter refused final and reported with Azure's reason, and
fail-over end to end on the simulator, sync and async, for a chat and for a stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx

from providers.llm import ChatResponse, Usage
from providers.llm.errors import ContentRejected
from resilient.config import settings_from_mapping
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.result import Result
from resilient.testing import Fault, Simulator
from resilient.testing.routes import azure_openai as azure_routes
from resilient.testing.routes import openai as openai_routes

KEY = "az-test-Kq72canary"
ENDPOINT = "https://contoso.openai.azure.com"
URL = f"{ENDPOINT}/openai/deployments/prod-4o-mini/chat/completions"


def azure(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "azure_openai",
        "api_key": KEY,
        "base_url": ENDPOINT,
        "deployments": {"fast": "prod-4o-mini"},
        "retry": {"attempts": 3, "backoff": "10ms..20ms"},
        **extra,
    }


def gateway(chain: list[str], **providers: dict[str, Any]) -> Gateway:
    return Gateway(
        settings_from_mapping({"providers": providers, "capabilities": {"llm": {"chain": chain}}})
    )


def completion(finish: str = "stop", content: str | None = "Hi there") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]


async def test_wire_format() -> None:
    gw = gateway(["azure"], azure=azure())
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL, params={"api-version": "2024-10-21"}).mock(
            return_value=httpx.Response(200, json=completion())
        )
        result = await gw.llm.chat(CONVERSATION, model="fast", temperature=0.2, max_tokens=50)
    await gw.aclose()

    request = route.calls.last.request
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {  # OpenAI's body; the deployment names the model
        "messages": CONVERSATION,
        "temperature": 0.2,
        "max_tokens": 50,
    }
    assert result.value == ChatResponse(
        text="Hi there",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(11, 2),
        provider="azure",
        model="gpt-4o-mini-2024-07-18",
    )


def test_api_version_option_and_an_unmapped_model_as_the_deployment() -> None:
    gw = gateway(["azure"], azure=azure(api_version="2025-01-01-preview"))
    url = f"{ENDPOINT}/openai/deployments/my-gpt-4o/chat/completions"
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(url, params={"api-version": "2025-01-01-preview"}).mock(
            return_value=httpx.Response(200, json=completion())
        )
        gw.sync.llm.chat([{"role": "user", "content": "Hi"}], model="my-gpt-4o")
    gw.close()
    assert route.call_count == 1


def test_an_endpoint_is_required() -> None:
    gw = gateway(["azure"], azure={**azure(), "base_url": None})
    with pytest.raises(ResilientError, match="base_url"):
        gw.sync.llm.chat([{"role": "user", "content": "Hi"}])
    gw.close()


async def test_a_prompt_the_content_filter_refused_is_final_with_azures_reason() -> None:
    """Not retried (even where config retries 400s), not sent to the next provider, and the
    caller reads Azure's own words."""
    refused = azure_routes.content_filter_error()
    gw = gateway(
        ["azure", "openai"],
        azure=azure(classify={"400": "retryable"}),
        openai={"kind": "openai", "api_key": "sk-test-Oa93canary"},
    )
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(400, json=refused))
        fallback = mock.post("https://api.openai.com/v1/chat/completions")
        with pytest.raises(ContentRejected, match="content management policy") as raised:
            await gw.llm.chat([{"role": "user", "content": "something"}])
    await gw.aclose()
    assert route.call_count == 1
    assert fallback.call_count == 0
    assert raised.value.reason == refused["error"]["message"]
    assert [a.reason for a in raised.value.attempts] == ["400 content_filter"]


def test_a_filtered_answer_is_delivered_as_content_filter() -> None:
    gw = gateway(["azure"], azure=azure())
    with respx.mock() as mock:
        route = mock.post(URL).mock(
            return_value=httpx.Response(200, json=completion("content_filter", None))
        )
        result = gw.sync.llm.chat([{"role": "user", "content": "Hi"}])
    gw.close()
    assert route.call_count == 1
    assert result.value is not None
    assert (result.value.finish_reason, result.value.text) == ("content_filter", "")


async def test_fails_over_from_openai_to_azure_on_the_simulator(
    simulator: Simulator, mode: str
) -> None:
    openai_routes.mount(simulator, "/openai")
    state = azure_routes.mount(simulator, "/azure")
    state.models["prod-4o-mini"] = "gpt-4o-mini-2024-07-18"
    simulator.inject(Fault.status(503), prefix="/openai")
    common = {"retry": {"attempts": 2, "backoff": "10ms..20ms"}, "timeout": "500ms"}
    gw = gateway(
        ["openai", "azure"],
        openai={
            "kind": "openai",
            "api_key": "sk-test-Oa93canary",
            "base_url": simulator.url("/openai/v1"),
            **common,
        },
        azure={**azure(), "base_url": simulator.url("/azure"), **common},
    )
    try:
        if mode == "sync":
            result: Result[ChatResponse] = await asyncio.to_thread(gw.sync.llm.chat, CONVERSATION)
        else:
            result = await gw.llm.chat(CONVERSATION)
    finally:
        await gw.aclose()
    assert [a.provider for a in result.attempts] == ["openai", "openai", "azure"]
    assert result.provider == "azure"
    assert result.value is not None
    assert result.value.text == "echo: Hello"
    assert result.value.model == "gpt-4o-mini-2024-07-18"
    assert state.api_versions == ["2024-10-21"]
    [asked] = simulator.requests(prefix="/azure")
    assert asked.path == "/azure/openai/deployments/prod-4o-mini/chat/completions"


async def test_streams_as_openai_does_on_the_simulator(simulator: Simulator, mode: str) -> None:
    azure_routes.mount(simulator, "/azure")
    gw = gateway(["azure"], azure={**azure(), "base_url": simulator.url("/azure")})
    try:
        if mode == "sync":
            chunks = await asyncio.to_thread(lambda: list(gw.sync.llm.stream(CONVERSATION)))
        else:
            chunks = [chunk async for chunk in gw.llm.stream(CONVERSATION)]
    finally:
        await gw.aclose()
    assert "".join(c.text for c in chunks) == "echo: Hello"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 2
    [asked] = simulator.requests(prefix="/azure")
    assert json.loads(asked.body)["stream_options"] == {"include_usage": True}
