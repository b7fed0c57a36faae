"""The capability facades: `gw.email`, `gw.sms`, `gw.payments`, `gw.social` (and `gw.sync.*`).

Each call wraps its request model in a ModelOperation and runs it along the capability's
chain. The operation is ledgered (a retry or replay of the same operation id never acts twice,
even across providers), deferrable (its model is its payload), and never sent to another
provider after an outcome that may have acted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx

from providers import cross_channel
from providers.adapter import LookupAdapter
from providers.models import Charge, Email, Post, Sms
from resilient.deferral import register_operation
from resilient.errors import ChainExhausted, DeadlineExceeded, InvalidRequest, ResilientError
from resilient.lookup import UNKNOWN, Found
from resilient.policy.classify import Verdict
from resilient.registry import FacadeKinds, register_facade
from resilient.result import Result
from resilient.runtime import ProviderRuntime

if TYPE_CHECKING:
    from resilient.gateway import Gateway

MODELS: dict[str, Any] = {m.capability: m for m in (Email, Sms, Charge, Post)}


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a delivered call returns as `result.value`."""

    provider: str | None
    message_id: str | None  # the provider's id (message, payment intent, post)
    deduplicated: bool = False  # served from the ledger: this operation had been delivered


class ModelOperation:
    """One request model, carried out by whichever provider of the chain can."""

    ledger = True
    failover_when_ambiguous = False  # never let a maybe-done message or charge run twice
    credential: str | None = None

    def __init__(self, model: Any) -> None:
        self.model = model
        self.kind = model.capability
        self.operation_id: str = model.idempotency_key or uuid.uuid4().hex
        # A post belongs to one account on one network: it never runs elsewhere, replays included.
        self.providers: tuple[str, ...] | None = (
            (model.account,) if isinstance(model, Post) else None
        )
        self._adapters: dict[str, Any] = {}

    def _adapter(self, provider: ProviderRuntime) -> Any:
        adapter = provider.adapter
        if adapter is None:
            raise ResilientError(
                f"provider {provider.name!r} (kind {provider.settings.kind!r}) has no adapter "
                f"for {self.kind}"
            )
        self._adapters[provider.name] = adapter
        return adapter

    def idempotent_on(self, provider: ProviderRuntime) -> bool:
        return bool(self._adapter(provider).honours_idempotency_key)

    def _exchange(
        self, provider: ProviderRuntime
    ) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        """One attempt's requests: the adapter's preparation (a session, a token) if it has one,
        then the call. A preparation that fails ends the attempt with its answer."""
        adapter = self._adapter(provider)
        prepare = getattr(adapter, "prepare", None)
        if prepare is not None:
            refused: httpx.Response | None = yield from prepare(provider)
            if refused is not None:
                return refused
        request: httpx.Request = adapter.build(self.model, provider, self.operation_id)
        response = yield request
        return response

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        exchange = self._exchange(provider)
        try:
            request = next(exchange)
            while True:
                request.extensions["timeout"] = provider.attempt_timeout(timeout).as_dict()
                request = exchange.send(provider.client.send(request, auth=self._auth(provider)))
        except StopIteration as done:
            response: httpx.Response = done.value
            return response

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        exchange = self._exchange(provider)
        try:
            request = next(exchange)
            while True:
                request.extensions["timeout"] = provider.attempt_timeout(timeout).as_dict()
                answer = await provider.aclient.send(request, auth=self._auth(provider))
                request = exchange.send(answer)
        except StopIteration as done:
            response: httpx.Response = done.value
            return response

    def _auth(self, provider: ProviderRuntime) -> httpx.Auth | None:
        """The adapter's auth flow, when its credentials take I/O of their own (an OAuth token
        fetched and cached): httpx runs it inside the attempt, sync or async, so `build` stays
        free of I/O and a token request that fails is the attempt's failure."""
        auth: httpx.Auth | None = getattr(self._adapter(provider), "auth", None)
        return auth

    def verdict(
        self, provider: ProviderRuntime, response: httpx.Response, default: Verdict
    ) -> Verdict:
        """The adapter's reading of an answer that its status misjudges (a 200 that refused the
        message, a decline and its code), else the status table's."""
        refine = getattr(self._adapter(provider), "verdict", None)
        if refine is None:
            return default
        verdict: Verdict = refine(response, default)
        return verdict

    def can_look_up(self, provider: ProviderRuntime) -> bool:
        return isinstance(self._adapter(provider), LookupAdapter)

    def _lookup_request(
        self, provider: ProviderRuntime, since: float, timeout: float
    ) -> httpx.Request:
        adapter = cast(LookupAdapter, self._adapter(provider))
        request = adapter.lookup(self.model, provider, self.operation_id, since)
        request.extensions["timeout"] = provider.attempt_timeout(timeout).as_dict()
        return request

    def look_up(self, provider: ProviderRuntime, since: float, timeout: float) -> httpx.Response:
        request = self._lookup_request(provider, since, timeout)
        return provider.client.send(request, auth=self._auth(provider))

    async def alook_up(
        self, provider: ProviderRuntime, since: float, timeout: float
    ) -> httpx.Response:
        request = self._lookup_request(provider, since, timeout)
        return await provider.aclient.send(request, auth=self._auth(provider))

    def found(
        self, provider: ProviderRuntime, answer: httpx.Response | BaseException, since: float
    ) -> Found:
        if isinstance(answer, BaseException):
            return Found(UNKNOWN, detail=f"the lookup failed: {type(answer).__name__}")
        if answer.status_code != 200:  # read whole by `send`: nothing to close
            return Found(UNKNOWN, detail=f"the lookup was answered {answer.status_code}")
        adapter = cast(LookupAdapter, self._adapter(provider))
        return adapter.found(answer, self.model, self.operation_id, since)

    def message_id(self, provider: str, response: httpx.Response | None) -> str | None:
        adapter = self._adapters.get(provider)
        if adapter is None or response is None:
            return None
        result: str | None = adapter.message_id(response)
        return result

    def payload(self) -> dict[str, Any]:
        """The model, with the operation id it runs under (so a replay is the same operation)."""
        return {**self.model.to_payload(), "idempotency_key": self.operation_id}

    @classmethod
    def from_payload(cls, kind: str, payload: Mapping[str, Any]) -> ModelOperation:
        return cls(MODELS[kind].from_payload(payload))


def _decoder(kind: str) -> Callable[[Mapping[str, Any]], ModelOperation]:
    return lambda payload: ModelOperation.from_payload(kind, payload)


for _kind in MODELS:
    register_operation(_kind, _decoder(_kind))


def _operation(facade: Any, model: Any) -> ModelOperation:
    """The operation for `model`, once it is the facade's model: anything else would fail
    inside an adapter, or run on the wrong capability's providers."""
    expected = MODELS[facade.kind]
    if not isinstance(model, expected):
        raise InvalidRequest(
            f"{facade.capability}: expected a {expected.__name__}, got {type(model).__name__}"
        )
    return ModelOperation(model)


def _receipt(
    gateway: Gateway, op: ModelOperation, result: Result[httpx.Response]
) -> Result[Receipt]:
    if result.status != "delivered":
        return Result(result.status, result.provider, result.attempts, None, result.deferral_id)
    if result.value is None:  # from the ledger, or found out by a lookup: nothing sent now
        entry = gateway.ledger.get(op.operation_id)
        message_id = entry.message_id if entry else None
        receipt = Receipt(result.provider, message_id, deduplicated=True)
        return Result("delivered", result.provider, result.attempts, receipt)
    message_id = op.message_id(result.provider or "", result.value)
    return Result(
        "delivered", result.provider, result.attempts, Receipt(result.provider, message_id)
    )


class _Facade:
    kind: str  # the model's capability: "email", "sms", "payments" or "social"

    def __init__(self, gateway: Gateway, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    async def _run(
        self, model: Any, defer: bool | None, deadline: float | None, only: list[str] | None = None
    ) -> Result[Receipt]:
        op = _operation(self, model)
        result = await self._gateway.acall(
            self.capability, op, defer=defer, deadline=deadline, providers=only
        )
        return _receipt(self._gateway, op, result)


class _SyncFacade:
    kind: str

    def __init__(self, gateway: Gateway, capability: str) -> None:
        self._gateway = gateway
        self.capability = capability

    def _run(
        self, model: Any, defer: bool | None, deadline: float | None, only: list[str] | None = None
    ) -> Result[Receipt]:
        op = _operation(self, model)
        result = self._gateway.call(
            self.capability, op, defer=defer, deadline=deadline, providers=only
        )
        return _receipt(self._gateway, op, result)


class _Messaging(_Facade):
    """Email and SMS: either may fall back to the other channel (providers.cross_channel)."""

    async def send(
        self,
        message: Any,
        *,
        defer: bool | None = None,
        deadline: float | None = None,
        fallback_to: str | None = None,
    ) -> Result[Receipt]:
        """Send through the first provider of the chain that can; park it if none can. With
        `fallback_to` (an address or number on the configured fallback channel), a message no
        provider of this channel could deliver goes out on the other channel instead."""
        if fallback_to is None:
            return await self._run(message, defer, deadline)
        settings = self._gateway.settings.capabilities[self.capability]
        message, target, other = cross_channel.planned(message, settings, fallback_to)
        try:
            return await self._run(message, False, deadline)
        except (ChainExhausted, DeadlineExceeded) as exhausted:
            result = await self._gateway.capability(target)._run(other, defer, deadline)
            return cross_channel.settled(message, result, self._gateway.ledger, exhausted.attempts)


class _SyncMessaging(_SyncFacade):
    def send(
        self,
        message: Any,
        *,
        defer: bool | None = None,
        deadline: float | None = None,
        fallback_to: str | None = None,
    ) -> Result[Receipt]:
        if fallback_to is None:
            return self._run(message, defer, deadline)
        settings = self._gateway.settings.capabilities[self.capability]
        message, target, other = cross_channel.planned(message, settings, fallback_to)
        try:
            return self._run(message, False, deadline)
        except (ChainExhausted, DeadlineExceeded) as exhausted:
            result = self._gateway.sync.capability(target)._run(other, defer, deadline)
            return cross_channel.settled(message, result, self._gateway.ledger, exhausted.attempts)


class EmailFacade(_Messaging):
    """`gw.email.send(Email(...), fallback_to="+15550100")`."""

    kind = "email"


class SyncEmailFacade(_SyncMessaging):
    kind = "email"


class SmsFacade(_Messaging):
    """`gw.sms.send(Sms(...), fallback_to="ada@example.com")`."""

    kind = "sms"


class SyncSmsFacade(_SyncMessaging):
    kind = "sms"


class PaymentsFacade(_Facade):
    kind = "payments"

    async def charge(
        self, charge: Charge, *, defer: bool | None = None, deadline: float | None = None
    ) -> Result[Receipt]:
        """Charge once: a second processor only ever sees it when the first provably did not."""
        return await self._run(charge, defer, deadline)


class SyncPaymentsFacade(_SyncFacade):
    kind = "payments"

    def charge(
        self, charge: Charge, *, defer: bool | None = None, deadline: float | None = None
    ) -> Result[Receipt]:
        return self._run(charge, defer, deadline)


class SocialFacade(_Facade):
    kind = "social"

    async def post(
        self, post: Post, *, defer: bool | None = None, deadline: float | None = None
    ) -> Result[Receipt]:
        """Post on `post.account` only (a post never moves to another network)."""
        return await self._run(post, defer, deadline, [post.account])


class SyncSocialFacade(_SyncFacade):
    kind = "social"

    def post(
        self, post: Post, *, defer: bool | None = None, deadline: float | None = None
    ) -> Result[Receipt]:
        return self._run(post, defer, deadline, [post.account])


register_facade("email", FacadeKinds(EmailFacade, SyncEmailFacade))
register_facade("sms", FacadeKinds(SmsFacade, SyncSmsFacade))
register_facade("payments", FacadeKinds(PaymentsFacade, SyncPaymentsFacade))
register_facade("social", FacadeKinds(SocialFacade, SyncSocialFacade))
