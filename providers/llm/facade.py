"""`gw.llm.chat(...)` and `gw.sync.llm.chat(...)`: one chat along the capability's chain.

A chat has no side effect: it is not ledgered, never parked, repeated freely on one provider
(`idempotent_on` is True) and sent to the next provider after any outcome, a silent one
included: the pipeline fails a timed-out attempt over at once, since retrying a provider that
says nothing only multiplies the wait.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from providers.llm import routing
from providers.llm.models import ChatCall, ChatRequest, ChatResponse
from providers.llm.stream_run import ChatStream, StreamRun, SyncChatStream
from providers.llm.streaming import StreamStats, stream_stats
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.registry import FacadeKinds, register_facade
from resilient.result import Result
from resilient.runtime import ProviderRuntime

if TYPE_CHECKING:
    from resilient.gateway import Gateway

CAPABILITY_KIND = "llm"


class ChatAdapter(Protocol):
    def build(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request: ...

    def parse(self, response: httpx.Response, provider: str, model: str) -> ChatResponse: ...

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict: ...


class ChatOperation(ChatCall):
    """One chat, answered by whichever provider of the chain can."""

    def __init__(self, chat: ChatRequest) -> None:
        super().__init__(chat)
        self.answer: ChatResponse | None = None  # parsed from the answer that was accepted

    def _adapter(self, provider: ProviderRuntime) -> ChatAdapter:
        adapter: ChatAdapter = self.adapter(provider, "parse", "chat")
        return adapter

    def _request(self, provider: ProviderRuntime, timeout: float) -> httpx.Request:
        request = self._adapter(provider).build(self.chat, provider)
        request.extensions["timeout"] = provider.attempt_timeout(timeout).as_dict()
        return request

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        return provider.client.send(self._request(provider, timeout))

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        return await provider.aclient.send(self._request(provider, timeout))

    def verdict(
        self, provider: ProviderRuntime, response: httpx.Response, default: Verdict
    ) -> Verdict:
        """The adapter's reading (a prompt too long is final), and a success only when the
        answer is a chat answer: a 200 without one is retried, then failed over."""
        adapter = self._adapter(provider)
        verdict = adapter.verdict(response, default)
        if verdict.outcome is not Outcome.OK:
            return verdict
        try:
            self.answer = adapter.parse(response, provider.name, self.chat.model)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return Verdict(Outcome.RETRYABLE, response.status_code, "malformed chat answer")
        return verdict


def _answered(op: ChatOperation, result: Result[httpx.Response]) -> Result[ChatResponse]:
    """The chat answer in place of the HTTP one (whose body was read within its attempt)."""
    return Result(result.status, result.provider, result.attempts, op.answer)


class _Facade:
    """What `gw.llm` and `gw.sync.llm` share: the capability, and the gateway's stream counts."""

    def __init__(self, gateway: Gateway, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    @property
    def stream_stats(self) -> StreamStats:
        return stream_stats(self._gateway)


class LlmFacade(_Facade):
    """`gw.llm`."""

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str = "fast",
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        deadline: float | None = None,
        cacheable: bool = False,
    ) -> Result[ChatResponse]:
        """One chat answer, from the first provider of the chain that gives one; a prompt too
        long goes to the configured larger model, and a `cacheable` chat is answered from the
        degraded-mode cache when the chain is down (see providers.llm.routing)."""
        request = ChatRequest.of(messages, model, temperature, max_tokens, tools)
        return await routing.achat(
            self._gateway, self.capability, request, self._ask, deadline, cacheable
        )

    async def _ask(self, chat: ChatRequest, deadline: float | None) -> Result[ChatResponse]:
        op = ChatOperation(chat)
        result = await self._gateway.acall(self.capability, op, defer=False, deadline=deadline)
        return _answered(op, result)

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str = "fast",
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        deadline: float | None = None,
        restart: bool | None = None,
    ) -> ChatStream:
        """The answer chunk by chunk, as an async iterator (see providers.llm.stream_run)."""
        run = _stream_run(
            self._gateway, self.capability, messages, model, temperature, max_tokens, tools
        )
        return ChatStream(run(deadline, restart))


class SyncLlmFacade(_Facade):
    """`gw.sync.llm`."""

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str = "fast",
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        deadline: float | None = None,
        cacheable: bool = False,
    ) -> Result[ChatResponse]:
        request = ChatRequest.of(messages, model, temperature, max_tokens, tools)
        return routing.chat(self._gateway, self.capability, request, self._ask, deadline, cacheable)

    def _ask(self, chat: ChatRequest, deadline: float | None) -> Result[ChatResponse]:
        op = ChatOperation(chat)
        result = self._gateway.call(self.capability, op, defer=False, deadline=deadline)
        return _answered(op, result)

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str = "fast",
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        deadline: float | None = None,
        restart: bool | None = None,
    ) -> SyncChatStream:
        """The answer chunk by chunk, as a plain iterator (see providers.llm.stream_run)."""
        run = _stream_run(
            self._gateway, self.capability, messages, model, temperature, max_tokens, tools
        )
        return SyncChatStream(run(deadline, restart))


def _stream_run(
    gateway: Gateway,
    capability: str,
    messages: Sequence[Mapping[str, Any]],
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    tools: Sequence[Mapping[str, Any]] | None,
) -> Callable[[float | None, bool | None], StreamRun]:
    """A stream's run, its request checked now (bad input raises before anything is sent).

    Nothing reaches the caller before a chunk has: the request, its status and the wait for
    the first chunk are one attempt. A stream cut or stalled after that starts over on the
    providers after the one that failed (its first chunk then says `restarted`), or, with
    `restart=False` (or the provider's `restart = false`), ends in StreamInterrupted.
    `deadline` bounds each start, up to its first chunk. Streams are never parked.
    """
    chat = ChatRequest.of(messages, model, temperature, max_tokens, tools)
    return functools.partial(StreamRun, gateway, capability, chat)


register_facade(CAPABILITY_KIND, FacadeKinds(LlmFacade, SyncLlmFacade))
