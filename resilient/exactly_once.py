"""A ledgered call as a plan: claim the operation id, walk the chain under the claim, settle.

The rule: nothing is sent for an operation id without a live claim on it, durable first, naming
the provider about to be tried. A second call with the same id waits for the first's outcome
(bounded by its own deadline) or takes it; it never starts a chain of its own. An operation
that may have been done on provider X is only ever tried again on X, and only when X honours
its idempotency key. Like the chain and provider plans, this yields its I/O as commands (ledger
writes among them) and decides nothing by doing I/O itself.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from resilient.chain import ChainOutcome, Holding, chain_plan
from resilient.ledger import AMBIGUOUS, CLAIMED, DELIVERED, FAILED, Claim, LedgerEntry, Settle
from resilient.pipeline import Command, Operation, Sleep
from resilient.policy.outcome_class import Outcome
from resilient.runtime import ProviderRuntime
from resilient.telemetry import EventBus

LEASE_MARGIN = 5.0  # a claim outlives its call's deadline by this much
POLL_FIRST, POLL_MAX = 0.02, 0.25  # seconds between looks at another call's live claim


class LedgeredOperation(Operation, Protocol):
    """An operation with an effect: deduplicated by `operation_id` across calls."""

    operation_id: str

    def message_id(self, provider: str, response: httpx.Response | None) -> str | None:
        """The provider's id for what it did, read from its answer."""
        ...


@dataclass(slots=True)
class Known:
    """The ledger already had this operation (delivered, deferred, in flight elsewhere, or
    maybe done where it cannot be repeated): nothing was sent."""

    entry: LedgerEntry


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
) -> Generator[Command | Claim | Settle, Any, Known | Walked]:
    clock = chain[0].clock
    first = next((rt.name for rt in chain if rt.enabled), chain[0].name)
    want = Claim(op.operation_id, first, _lease(deadline, clock()), replay_of=replay_of)
    poll = POLL_FIRST
    while True:
        granted = yield want
        if granted.owned:
            break
        entry: LedgerEntry = granted.entry
        if entry.state == CLAIMED:  # another call is on it: its outcome will be ours
            if clock() + poll >= deadline:
                return Known(entry)
            yield Sleep(poll)
            poll = min(poll * 2, POLL_MAX)
            want.lease = _lease(deadline, clock())
            continue
        maybe_on = providers.get(entry.provider or "")
        if entry.state == AMBIGUOUS and maybe_on is not None and op.idempotent_on(maybe_on):
            chain = (maybe_on,)  # a repeat there is absorbed by its idempotency key
            want = Claim(op.operation_id, maybe_on.name, _lease(deadline, clock()), entry.token)
            continue
        return Known(entry)
    held = Holding(op.operation_id, granted.entry.token, first)
    end = yield from chain_plan(capability, chain, op, deadline, bus, held)
    parking = parkable and end.outcome is Outcome.FAILOVER
    if parking:
        yield Settle(op.operation_id, held.token, CLAIMED, None)  # see rules: may be parked
    else:
        yield _settlement(op, end, held)
    return Walked(end, held, parking)


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
    try:
        return op.message_id(end.provider or "", end.response)
    except Exception:
        return None
