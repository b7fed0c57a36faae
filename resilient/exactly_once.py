"""A ledgered call as a plan: claim the operation id, walk the chain under the claim, settle.

The rule: nothing is sent for an operation id without a live claim on it, durable first, naming
the provider about to be tried. A second call with the same id waits for the first's outcome
(bounded by its own deadline) or takes it; it never starts a chain of its own. An operation
that may have been done on provider X goes nowhere but X, and there only when X honours its
idempotency key, until X says it was not done (a lookup, `resilient.lookup`). Like the chain
and provider plans, this yields its I/O as commands and does no I/O itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from resilient.chain import ChainOutcome, Holding, chain_plan
from resilient.ledger import AMBIGUOUS, CLAIMED, DELIVERED, FAILED, Claim, LedgerEntry, Settle
from resilient.ledger.rules import State
from resilient.lookup import ASKED, DONE, NOT_DONE, UNKNOWN, Found, Lookup
from resilient.pipeline import Command, Discard, Operation, Sleep
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt
from resilient.runtime import ProviderRuntime
from resilient.telemetry import EventBus

LEASE_MARGIN = 5.0  # a claim outlives its call's deadline by this much
POLL_FIRST, POLL_MAX = 0.02, 0.25  # seconds between looks at another call's live claim
LOOKUP_PAUSE = 1.0  # seconds a live call lets a maybe-sent request land before asking


class LedgeredOperation(Operation, Protocol):
    """An operation with an effect: deduplicated by `operation_id` across calls."""

    operation_id: str

    def message_id(self, provider: str, response: httpx.Response | None) -> str | None:
        """The provider's id for what it did, read from its answer."""
        ...

    def can_look_up(self, provider: ProviderRuntime) -> bool:
        """Whether `provider` can be asked what became of this operation."""
        ...

    def look_up(
        self, provider: ProviderRuntime, since: float, timeout: float
    ) -> httpx.Response: ...

    async def alook_up(
        self, provider: ProviderRuntime, since: float, timeout: float
    ) -> httpx.Response: ...

    def found(
        self, provider: ProviderRuntime, answer: httpx.Response | BaseException, since: float
    ) -> Found:
        """The lookup's answer read: done (and the provider's id), not done, or unknown."""
        ...


@dataclass(slots=True)
class Known:
    """The ledger already had this operation (delivered, deferred, in flight elsewhere, or
    maybe done where it cannot be repeated nor looked up): nothing was sent. `attempts` holds
    the lookup made to find out, if any."""

    entry: LedgerEntry
    attempts: tuple[Attempt, ...] = ()


@dataclass(slots=True)
class Walked:
    """The chain ran under `held`; the outcome is settled unless `parking` (then the caller
    parks the request and settles it DEFERRED)."""

    end: ChainOutcome
    held: Holding
    parking: bool


def once_plan(
    capability: str,
    chain: Sequence[ProviderRuntime],
    providers: Mapping[str, ProviderRuntime],
    op: LedgeredOperation,
    deadline: float,
    bus: EventBus,
    *,
    parkable: bool,
    replay_of: str | None = None,
) -> Generator[Command | Claim | Settle | Lookup, Any, Known | Walked]:
    clock = chain[0].clock
    operation_id = op.operation_id
    first = next((rt.name for rt in chain if rt.enabled), chain[0].name)
    granted = yield Claim(operation_id, first, _lease(deadline, clock()), replay_of=replay_of)
    poll = POLL_FIRST
    while not granted.owned:
        entry: LedgerEntry = granted.entry
        lease = _lease(deadline, clock())
        if entry.state == CLAIMED:  # another call is on it: its outcome will be ours
            if clock() + poll >= deadline:
                return Known(entry)
            yield Sleep(poll)
            poll = min(poll * 2, POLL_MAX)
            granted = yield Claim(operation_id, first, lease, replay_of=replay_of)
            continue
        maybe_on = providers.get(entry.provider or "")
        if entry.state != AMBIGUOUS or maybe_on is None:
            return Known(entry)
        if op.idempotent_on(maybe_on):
            chain = (maybe_on,)  # a repeat there is absorbed by its idempotency key
            granted = yield Claim(operation_id, maybe_on.name, lease, entry.token)
            continue
        if not op.can_look_up(maybe_on):
            return Known(entry)
        granted = yield Claim(operation_id, maybe_on.name, lease, entry.token)
        if not granted.owned:
            continue
        found, looked = yield from _look_up(op, maybe_on, entry.at, deadline, clock)
        if found.state != NOT_DONE:
            settled = yield _found_settlement(op, granted.entry, maybe_on.name, found)
            return Known(settled, (looked,))
    held = Holding(operation_id, granted.entry.token, granted.entry.provider)
    end = yield from chain_plan(capability, chain, op, deadline, bus, held)
    end = yield from _reconciled(capability, chain, op, deadline, bus, held, granted.entry, end)
    parking = parkable and end.outcome is Outcome.FAILOVER
    if parking:
        yield Settle(operation_id, held.token, CLAIMED, None)  # see rules: may be parked
    else:
        yield _settlement(op, end, held)
    return Walked(end, held, parking)


def _reconciled(
    capability: str,
    chain: Sequence[ProviderRuntime],
    op: LedgeredOperation,
    deadline: float,
    bus: EventBus,
    held: Holding,
    claim: LedgerEntry,
    end: ChainOutcome,
) -> Generator[Command | Settle | Lookup, Any, ChainOutcome]:
    """A live call that ended maybe-done on a provider that can be asked: ask (after a pause
    that lets a request still in flight there land), and end delivered, or go on along the
    chain if it provably was not done, or stay ambiguous."""
    rt = next((r for r in chain if r.name == end.provider), None)
    if end.outcome is not Outcome.AMBIGUOUS or rt is None or not op.can_look_up(rt):
        return end
    clock = rt.clock
    if clock() + LOOKUP_PAUSE + rt.settings.timeouts.attempt > deadline:
        return end  # no time to find out: ambiguous, as it is
    yield Sleep(LOOKUP_PAUSE)
    found, looked = yield from _look_up(op, rt, claim.at, deadline, clock)
    attempts = (*end.attempts, looked)
    if found.state == DONE:
        return ChainOutcome(Outcome.OK, rt.name, attempts, message_id=found.message_id)
    if found.state == UNKNOWN:
        return ChainOutcome(Outcome.AMBIGUOUS, rt.name, attempts, end.response, end.error)
    if end.response is not None:
        yield Discard(end.response)
    rest = chain[[r.name for r in chain].index(rt.name) + 1 :]
    if not rest:
        return ChainOutcome(Outcome.FAILOVER, rt.name, attempts)
    after = yield from chain_plan(capability, rest, op, deadline, bus, held)
    return dataclasses.replace(after, attempts=attempts + after.attempts)


def reconcile_plan(
    op: LedgeredOperation, rt: ProviderRuntime, entry: LedgerEntry, deadline: float
) -> Generator[Claim | Settle | Lookup, Any, tuple[LedgerEntry, tuple[Attempt, ...]]]:
    """Ask `rt`, on which `entry` says the operation may have been done, and settle what it
    says: delivered, failed (provably not done: free to send again), or still ambiguous. An
    operator's reconciliation; a call does the same before it sends anything again."""
    lease = _lease(deadline, rt.clock())
    granted = yield Claim(op.operation_id, rt.name, lease, entry.token)
    if not granted.owned:
        return granted.entry, ()
    found, looked = yield from _look_up(op, rt, entry.at, deadline, rt.clock)
    if found.state == NOT_DONE:
        settled = yield Settle(op.operation_id, granted.entry.token, FAILED, rt.name)
    else:
        settled = yield _found_settlement(op, granted.entry, rt.name, found)
    return settled, (looked,)


def _look_up(
    op: LedgeredOperation,
    rt: ProviderRuntime,
    since: float,
    deadline: float,
    clock: Callable[[], float],
) -> Generator[Lookup, Any, tuple[Found, Attempt]]:
    started = clock()
    timeout = max(0.0, min(rt.settings.timeouts.attempt, deadline - started))
    status = None
    if timeout <= 0:
        found = Found(UNKNOWN, detail="no time left to ask")
    else:
        answer = yield Lookup(rt, since, timeout)
        status = None if isinstance(answer, BaseException) else answer.status_code
        try:
            found = op.found(rt, answer, since)
        except Exception as exc:  # a hostile answer to the lookup tells nothing
            found = Found(UNKNOWN, detail=f"unreadable answer: {exc!r:.80}")
    outcome = _LOOKUP_OUTCOMES[found.state]
    reason = ASKED + (found.detail or found.state)
    return found, Attempt(rt.name, outcome, status, clock() - started, reason)


_LOOKUP_OUTCOMES = {DONE: Outcome.OK, NOT_DONE: Outcome.FAILOVER, UNKNOWN: Outcome.AMBIGUOUS}


def _found_settlement(
    op: LedgeredOperation, claim: LedgerEntry, provider: str, found: Found
) -> Settle:
    state: State = DELIVERED if found.state == DONE else AMBIGUOUS
    return Settle(op.operation_id, claim.token, state, provider, found.message_id)


def _lease(deadline: float, now: float) -> float:
    return max(0.0, deadline - now) + LEASE_MARGIN


def _settlement(op: LedgeredOperation, end: ChainOutcome, held: Holding) -> Settle:
    if end.outcome is Outcome.OK:
        return Settle(op.operation_id, held.token, DELIVERED, end.provider, _message_id(op, end))
    if end.outcome is Outcome.AMBIGUOUS:
        return Settle(op.operation_id, held.token, AMBIGUOUS, end.provider)
    return Settle(op.operation_id, held.token, FAILED, end.provider)


def _message_id(op: LedgeredOperation, end: ChainOutcome) -> str | None:
    """The provider's id for what it did; an answer too odd to read it from is still a
    delivery (the id is for the receipt, the delivery is the fact)."""
    if end.message_id is not None:
        return end.message_id
    try:
        return op.message_id(end.provider or "", end.response)
    except Exception:
        return None
