"""Where a chat goes after its chain has spoken (providers.llm.routing): a prompt too long for
its model is asked again of the capability's configured larger-context model (on the same
provider, or along the chain; routes followed, never in a loop), else ContextLengthExceeded as
before; a content-policy refusal is final and carries the provider's reason (OpenAI), while a
refusal that is an answer (Anthropic's stop_reason "refusal") is delivered as content_filter."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from providers.llm import ContextLengthExceeded
from providers.llm.errors import ContentRejected
from resilient.config import settings_from_mapping
from resilient.errors import ConfigError
from resilient.gateway import Gateway

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
ASK = [{"role": "user", "content": "Summarize this long document"}]
TOO_LONG = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130001 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
RETRY = {"attempts": 2, "backoff": "10ms..20ms"}


def gateway(chain: list[str], **capability: Any) -> Gateway:
    providers = {
        "openai": {
            "kind": "openai",
            "api_key": "sk-test-Oa93canary",
            "models": {"fast": "gpt-4o-mini", "long": "gpt-4.1", "huge": "gpt-4.1-1m"},
            "retry": RETRY,
            "classify": {"400": "retryable"},  # a prompt too long or refused stays final
        },
        "anthropic": {
            "kind": "anthropic",
            "api_key": "sk-ant-test-An55canary",
            "models": {"fast": "claude-3-5-haiku-latest", "long": "claude-sonnet-4-5"},
            "retry": RETRY,
        },
    }
    return Gateway(
        settings_from_mapping(
            {
                "providers": {name: providers[name] for name in chain},
                "capabilities": {"llm": {"chain": chain, **capability}},
            }
        )
    )


def completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Done"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 130001, "completion_tokens": 1, "total_tokens": 130002},
    }


def openai_fits(*models: str) -> Any:
    """An OpenAI whose models in `models` take the prompt; the others say it is too long."""

    def answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model in models:
            return httpx.Response(200, json=completion(model))
        return httpx.Response(400, json=TOO_LONG)

    return answer


def asked_models(route: respx.Route) -> list[str]:
    return [json.loads(call.request.content)["model"] for call in route.calls]


async def test_too_long_goes_to_the_larger_model_on_the_same_provider() -> None:
    gw = gateway(["openai"], context_fallback={"fast": "long"})
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(side_effect=openai_fits("gpt-4.1"))
        result = await gw.llm.chat(ASK, model="fast")
    await gw.aclose()
    assert asked_models(route) == ["gpt-4o-mini", "gpt-4.1"]  # never twice the same model
    assert result.value is not None
    assert result.value.model == "gpt-4.1"
    assert [a.reason for a in result.attempts] == ["400 context_length_exceeded", "200"]


def test_too_long_follows_routes_along_the_chain() -> None:
    """fast -> long -> huge: each route asked along the whole chain (anthropic down here)."""
    gw = gateway(["openai", "anthropic"], context_fallback={"fast": "long", "long": "huge"})
    with respx.mock() as mock:
        openai = mock.post(OPENAI).mock(side_effect=openai_fits("gpt-4.1-1m"))
        result = gw.sync.llm.chat(ASK, model="fast")
    gw.close()
    assert asked_models(openai) == ["gpt-4o-mini", "gpt-4.1", "gpt-4.1-1m"]
    assert result.value is not None
    assert result.value.model == "gpt-4.1-1m"


def test_the_larger_model_may_be_served_by_the_next_provider() -> None:
    """OpenAI is too long for "fast" and down for "long": Anthropic serves "long"."""
    gw = gateway(["openai", "anthropic"], context_fallback={"fast": "long"})

    def openai_answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == "gpt-4o-mini":
            return httpx.Response(400, json=TOO_LONG)
        return httpx.Response(503)

    reply = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Done"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 130001, "output_tokens": 1},
    }
    with respx.mock() as mock:
        mock.post(OPENAI).mock(side_effect=openai_answer)
        anthropic = mock.post(ANTHROPIC).mock(return_value=httpx.Response(200, json=reply))
        result = gw.sync.llm.chat(ASK, model="fast")
    gw.close()
    assert result.provider == "anthropic"
    assert json.loads(anthropic.calls.last.request.content)["model"] == "claude-sonnet-4-5"


async def test_without_a_route_or_in_a_loop_the_error_stands() -> None:
    gw = gateway(["openai"], context_fallback={"fast": "long", "long": "fast"})
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(side_effect=openai_fits())
        with pytest.raises(ContextLengthExceeded, match="openai"):
            await gw.llm.chat(ASK, model="fast")
        with pytest.raises(ContextLengthExceeded):
            await gw.llm.chat(ASK, model="huge")  # no route for it
    await gw.aclose()
    assert asked_models(route) == ["gpt-4o-mini", "gpt-4.1", "gpt-4.1-1m"]


def test_a_route_to_itself_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="context_fallback"):
        gateway(["openai"], context_fallback={"fast": "fast"})


# -- content policy ----------------------------------------------------------------------------


async def test_openai_content_policy_refusal_is_final_with_its_reason() -> None:
    refused = {
        "error": {
            "message": "Your request was rejected as a result of our safety system.",
            "type": "invalid_request_error",
            "param": None,
            "code": "content_policy_violation",
        }
    }
    gw = gateway(["openai", "anthropic"])
    with respx.mock(assert_all_called=False) as mock:
        openai = mock.post(OPENAI).mock(return_value=httpx.Response(400, json=refused))
        anthropic = mock.post(ANTHROPIC)
        with pytest.raises(ContentRejected, match="safety system") as raised:
            await gw.llm.chat(ASK)
    await gw.aclose()
    assert openai.call_count == 1  # config retries 400s; a refusal is never retried
    assert anthropic.call_count == 0  # nor sent on: the prompt is the problem
    assert raised.value.reason == refused["error"]["message"]
    assert raised.value.attempts[-1].reason == "400 content_policy_violation"


def test_an_anthropic_refusal_is_an_answer_not_an_error() -> None:
    """Anthropic refuses with stop_reason "refusal" in a 200: delivered, finish content_filter,
    never retried or sent elsewhere."""
    refusal = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "I can't help with that."}],
        "stop_reason": "refusal",
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }
    gw = gateway(["anthropic", "openai"])
    with respx.mock(assert_all_called=False) as mock:
        anthropic = mock.post(ANTHROPIC).mock(return_value=httpx.Response(200, json=refusal))
        openai = mock.post(OPENAI)
        result = gw.sync.llm.chat(ASK)
    gw.close()
    assert (anthropic.call_count, openai.call_count) == (1, 0)
    assert result.status == "delivered"
    assert result.value is not None
    assert result.value.finish_reason == "content_filter"
