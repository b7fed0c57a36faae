"""Where a chat goes after its chain has spoken: to a larger model, to the cache, or to the caller.

- A prompt too long for its model (ContextLengthExceeded) is asked again, along the whole chain,
  with the larger-context model the capability names for it: `context_fallback = { fast =
  "long" }` (logical names, mapped per provider by its `models` or `deployments`; a route goes
  on, from "long" to "longest", never back to a model already tried); the result lists the
  attempts of every model asked. Without a route, the error stands.
- A prompt refused on content policy becomes ContentRejected, carrying the provider's reason.
- A cacheable chat (`cacheable=True`) that was answered is stored; one that no provider could
  answer (chain exhausted, deadline passed) is answered from the cache, stale, if it can be.

The facade asks the chain (`ask`, one call of the gateway); the loops here decide what follows,
in the same way for blocking and async calls. The deadline bounds the whole chat: a second ask
gets what is left of it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from providers.llm.cache import AnswerCache, answer_cache
from providers.llm.errors import rejected
from providers.llm.models import ChatRequest, ChatResponse, ContextLengthExceeded
from resilient.errors import ChainExhausted, DeadlineExceeded, FatalError
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
        except ContextLengthExceeded as error:
            route.larger(error)
            continue
        except FatalError as error:
            rejection = rejected(capability, error)
            if rejection is None:
                raise
            raise rejection from error
        except _DOWN as error:
            if cache is None:
                raise
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
    cache: AnswerCache | None = answer_cache(gateway, capability) if cacheable else None
    route = _Route(gateway, capability, request, deadline)
    while True:
        try:
            result = await ask(route.request, route.remaining())
        except ContextLengthExceeded as error:
            route.larger(error)
            continue
        except FatalError as error:
            rejection = rejected(capability, error)
            if rejection is None:
                raise
            raise rejection from error
        except _DOWN as error:
            if cache is None:
                raise
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
        self._routes = gateway.settings.capabilities[capability].context_fallback
        self._tried = {request.model}
        self._earlier: tuple[Attempt, ...] = ()  # the attempts of the models it was too long for
        self._until = None if deadline is None else time.monotonic() + deadline

    def remaining(self) -> float | None:
        if self._until is None:
            return None
        return max(0.0, self._until - time.monotonic())

    def larger(self, error: ContextLengthExceeded) -> None:
        """Move to the larger model configured for this one; none (or one tried): `error`."""
        larger = self._routes.get(self.request.model)
        if larger is None or larger in self._tried:
            raise error
        self._tried.add(larger)
        self._earlier += error.attempts
        self.request = dataclasses.replace(self.request, model=larger)

    def answered(self, result: Result[ChatResponse]) -> Result[ChatResponse]:
        """`result` with the attempts of every model asked, in order."""
        if not self._earlier:
            return result
        return dataclasses.replace(result, attempts=(*self._earlier, *result.attempts))
