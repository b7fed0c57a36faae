"""Fallback across the providers of one capability, as a plan composed of provider plans."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from resilient.ledger import CLAIMED, Settle
from resilient.pipeline import Command, Discard, Operation, Step, provider_plan
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt
from resilient.runtime import ProviderRuntime
from resilient.telemetry import EventBus, FailedOver, Rejected


@dataclass(slots=True)  # not frozen: built per call, and frozen ones cost 4x to construct
class ChainOutcome:
    """How the walk ended: OK (served by `provider`), FATAL, AMBIGUOUS, or FAILOVER (exhausted)."""

    outcome: Outcome
    provider: str | None
    attempts: tuple[Attempt, ...]
    response: httpx.Response | None = None
    error: BaseException | None = None
    out_of_time: bool = False
    message_id: str | None = None  # the provider's id, when a lookup found it rather than an answer


@dataclass(slots=True)
class Holding:
    """The ledger claim a walk runs under, and the provider it names now."""

    operation_id: str
    token: str
    provider: str | None


def chain_plan(
    capability: str,
    providers: Sequence[ProviderRuntime],
    op: Operation,
    deadline: float,
    bus: EventBus,
    held: Holding | None = None,
) -> Generator[Command | Settle, Any, ChainOutcome]:
    """Walks `providers` in order, skipping disabled ones, until one serves or none can.

    Stops early, without trying the next provider, on FATAL (any provider would refuse the
    request) and on AMBIGUOUS unless the operation allows it (it may already have happened).
    Under a ledger claim (`held`), the claim names each provider before it is tried.
    """
    attempts: list[Attempt] = []
    last: Step | None = None
    for rt in providers:
        if not rt.enabled:
            attempts.append(Attempt(rt.name, Outcome.FAILOVER, None, 0.0, "disabled"))
            if bus.active:
                bus.emit(Rejected(rt.name, "disabled"))
            continue
        if last is not None and last.response is not None:
            yield Discard(last.response)
        if held is not None and held.provider != rt.name:
            if not (yield Settle(held.operation_id, held.token, CLAIMED, rt.name)):
                attempts.append(Attempt(rt.name, Outcome.AMBIGUOUS, None, 0.0, "claim lost"))
                return ChainOutcome(Outcome.AMBIGUOUS, held.provider, tuple(attempts))
            held.provider = rt.name
        step = yield from provider_plan(rt, op, deadline, attempts)
        outcome = step.outcome
        if outcome is Outcome.OK or outcome is Outcome.FATAL:
            return ChainOutcome(outcome, rt.name, tuple(attempts), step.response, step.error)
        if outcome is Outcome.AMBIGUOUS and not op.failover_when_ambiguous:
            return ChainOutcome(outcome, rt.name, tuple(attempts), step.response, step.error)
        last = step
        if step.out_of_time:
            break
        if bus.active:
            bus.emit(FailedOver(capability, rt.name, attempts[-1].reason))
    return ChainOutcome(
        Outcome.FAILOVER,
        None,
        tuple(attempts),
        last.response if last else None,
        last.error if last else None,
        out_of_time=bool(last and last.out_of_time),
    )
