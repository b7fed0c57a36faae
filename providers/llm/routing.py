"""Where a chat goes after its chain has spoken: to a larger model, to the cache, or to the caller.

- A prompt too long for its model (ContextLengthExceeded) is asked again, along the whole chain,
  with the larger-context model the capability names for it: `context_fallback = { fast =
  "long" }` (logical names, mapped per provider by its `models` or `deployments`; a route goes
  on, from "long" to "longest", never back to a model already tried); the result lists the
  attempts of every model asked. Without a route, the error stands.
- A prompt refused on content policy becomes ContentRejected, carrying the provider's reason.
- A cacheable chat (`cacheable=True`) that was answered is stored; one that no provider could
  answer (chain exhausted, deadline passed) is answered from the cache, stale, if it can be.

The facade asks the chain (`ask`, one call of the gateway); what follows a failed ask is decided
once, in plain code (`_Route.ask_again`), and the blocking and async loops only do the I/O. The
deadline bounds the whole chat: a second ask gets what is left of it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from providers.llm.cache import answer_cache
from providers.llm.errors import refused
from providers.llm.models import ChatRequest, ChatResponse, ContextLengthExceeded
from resilient.errors import CallFailed, ChainExhausted, DeadlineExceeded, FatalError
from resilient.result import Attempt, Result

if TYPE_CHECKING:
    from resilient.gateway import Gateway

Ask = Callable[[ChatRequest, float | None], Result[ChatResponse]]
AsyncAsk = Callable[[ChatRequest, float | None], Awaitable[Result[ChatResponse]]]
_DOWN = (ChainExhausted, DeadlineExceeded)  # no provider could answer: the cache may


def chat(
    gateway: Gateway,
    capability: str,
    request: ChatRequest,
    ask: Ask,
    deadline: float | None,
    cacheable: bool,
) -> Result[ChatResponse]:
    """`request` answered along the chain, routed as the module says (blocking)."""
    cache = answer_cache(gateway, capability) if cacheable else None
    route = _Route(gateway, capability, request, deadline)
    while True:
        try:
            result = ask(route.request, route.remaining())
        except CallFailed as error:
            if route.ask_again(error, cache is not None):
                continue
            assert cache is not None
            return route.answered(cache.stale(request, error))
        if cache is not None:
            cache.store(request, result)
        return route.answered(result)


async def achat(
    gateway: Gateway,
    capability: str,
    request: ChatRequest,
    ask: AsyncAsk,
    deadline: float | None,
    cacheable: bool,
) -> Result[ChatResponse]:
    """`chat` on the running event loop."""
    cache = answer_cache(gateway, capability) if cacheable else None
    route = _Route(gateway, capability, request, deadline)
    while True:
        try:
            result = await ask(route.request, route.remaining())
        except CallFailed as error:
            if route.ask_again(error, cache is not None):
                continue
            assert cache is not None
            return route.answered(await cache.astale(request, error))
        if cache is not None:
            await cache.astore(request, result)
        return route.answered(result)


class _Route:
    """The model a chat is asked of, and the models it was already too long for."""

    def __init__(
        self, gateway: Gateway, capability: str, request: ChatRequest, deadline: float | None
    ) -> None:
        self.request = request
        self._capability = capability
        self._routes = gateway.settings.capabilities[capability].context_fallback
        self._tried = {request.model}
        self._earlier: tuple[Attempt, ...] = ()  # the attempts of the models it was too long for
        self._until = None if deadline is None else time.monotonic() + deadline

    def remaining(self) -> float | None:
        if self._until is None:
            return None
        return max(0.0, self._until - time.monotonic())

    def ask_again(self, error: CallFailed, cacheable: bool) -> bool:
        """What follows a failed ask, the same for blocking and async calls: True, ask again
        (of the larger model configured for one the prompt was too long for); False, answer
        from the cache (the chain is down); else the error is raised, a refusal as the
        clearer ContextLengthExceeded or ContentRejected."""
        if isinstance(error, FatalError):
            refusal = refused(self._capability, error)
            if isinstance(refusal, ContextLengthExceeded) and self._larger(refusal):
                return True
            if refusal is None:
                raise error
            raise refusal from error
        if isinstance(error, _DOWN) and cacheable:
            return False
        raise error

    def _larger(self, error: ContextLengthExceeded) -> bool:
        """Move to the larger model configured for this one; False when there is none (or
        only one already tried)."""
        larger = self._routes.get(self.request.model)
        if larger is None or larger in self._tried:
            return False
        self._tried.add(larger)
        self._earlier += error.attempts
        self.request = dataclasses.replace(self.request, model=larger)
        return True

    def answered(self, result: Result[ChatResponse]) -> Result[ChatResponse]:
        """`result` with the attempts of every model asked, in order."""
        if not self._earlier:
            return result
        return dataclasses.replace(result, attempts=(*self._earlier, *result.attempts))
