"""Azure OpenAI: `POST {endpoint}/openai/deployments/{deployment}/chat/completions
?api-version={version}` with an `api-key` header
(https://learn.microsoft.com/en-us/azure/ai-services/openai/reference).

Its own kind, "azure_openai", since only the address and the auth differ from OpenAI's: the
body (less `model`: the deployment names it), the answer and the stream are OpenAI's, read by
openai.py's own `body`, adapter and stream decoder. The provider's `base_url` is the resource
endpoint (`https://{resource}.openai.azure.com`); the logical model maps to a deployment through
the `deployments` option (an unmapped name is taken as the deployment's); `api_version` defaults
to the latest GA data-plane version. A 400 whose `error.code` is `content_filter` (the prompt
tripped the deployment's content filter) is a content-policy rejection; an answer filtered on
the way out is a 200 with `finish_reason: "content_filter"`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field

from providers.adapter import api_key
from providers.llm.errors import ContentRejected
from providers.llm.models import ChatRequest, ChatResponse
from providers.llm.openai import STREAM, OpenAIChatAdapter, OpenAIStreamDecoder, body
from providers.llm.streaming import StreamOptions
from resilient import registry
from resilient.errors import ResilientError
from resilient.policy.classify import Verdict
from resilient.runtime import ProviderRuntime

__all__ = ["AzureOpenAIAdapter", "AzureOpenAIOptions", "ContentRejected"]

API_VERSION = "2024-10-21"


class AzureOpenAIOptions(StreamOptions):
    """Config keys of an "azure_openai" provider (and how its streams may run)."""

    api_version: str = Field(default=API_VERSION, min_length=1)
    deployments: dict[str, str] = {}  # logical model name -> deployment name


class AzureOpenAIAdapter:
    """Azure's address and auth around OpenAI's body, answer and error codes."""

    honours_idempotency_key = False

    def __init__(self, options: AzureOpenAIOptions) -> None:
        self._options = options
        self._openai = OpenAIChatAdapter()

    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, {})

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request:
        return self._request(chat, provider, STREAM)

    def decoder(self, provider: str, model: str) -> OpenAIStreamDecoder:
        return self._openai.decoder(provider, model)

    def _request(
        self, chat: ChatRequest, provider: ProviderRuntime, extra: dict[str, Any]
    ) -> httpx.Request:
        endpoint = provider.settings.base_url
        if not endpoint:
            raise ResilientError(
                f"provider {provider.name!r} (kind 'azure_openai') needs its endpoint as "
                "base_url, like https://<resource>.openai.azure.com"
            )
        deployment = self._options.deployments.get(chat.model, chat.model)
        payload = {**body(chat, deployment), **extra}
        del payload["model"]  # the deployment in the URL names the model
        return httpx.Request(
            "POST",
            f"{endpoint.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}"
            "/chat/completions",
            params={"api-version": self._options.api_version},
            headers={"api-key": api_key(provider)},
            json=payload,
        )

    def parse(self, response: httpx.Response, provider: str, model: str) -> ChatResponse:
        return self._openai.parse(response, provider, model)

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict:
        return self._openai.verdict(response, default)


registry.register(
    registry.ProviderKind(
        "azure_openai",
        "llm",
        AzureOpenAIOptions,
        factory=lambda settings: AzureOpenAIAdapter(AzureOpenAIOptions(**settings.options)),
    )
)
