"""One call to one provider through the policies, as a sans-I/O plan.

`provider_plan` is a generator: it decides (breaker, bulkhead, limiter, classification, retry
schedule, budget) and yields the I/O it needs as commands — `Send` one attempt, `Sleep`,
`Discard` a response — which the sync or async executor (resilient.executors) performs and sends
back. The decisions exist once; the executors only do I/O. The chain composes these plans with
`yield from`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx

from resilient.ledger.rules import LedgerCommand
from resilient.lookup import Lookup
from resilient.policy.breaker import OPEN
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.policy.retry import jittered_backoff
from resilient.result import Attempt
from resilient.runtime import ProviderRuntime
from resilient.telemetry import AttemptFinished, Rejected, RetryScheduled


class Operation(Protocol):
    """What a call asks of each provider it tries: how to send one attempt, and its semantics."""

    failover_when_ambiguous: bool  # another provider may try after "maybe done" (an LLM chat)
    ledger: bool  # has an effect, claimed per `operation_id` in the ledger (exactly_once)
    credential: str | None  # groups calls for per-credential rate limits

    def idempotent_on(self, provider: ProviderRuntime) -> bool:
        """Repeating it on `provider` cannot do it twice (a safe method, or a key it honours)."""
        ...

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response: ...

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response: ...


# The commands and steps are built on every call: plain slotted dataclasses, as a frozen one
# costs about four times as much to construct. Nothing mutates them once made.


@dataclass(slots=True)
class Send:
    provider: ProviderRuntime
    timeout: float  # the attempt must end within this many seconds


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class Discard:
    response: httpx.Response  # not returned to anyone: close it, release its connection


Command = Send | Sleep | Discard
Plan = Generator[Command | LedgerCommand | Lookup, Any, Any]  # a ledgered call's plan adds these


@dataclass(slots=True)
class Step:
    """How a provider plan ended. `response`/`error` are the last attempt's, for the caller."""

    outcome: Outcome  # OK, FATAL, AMBIGUOUS, or FAILOVER (move on)
    response: httpx.Response | None = None
    error: BaseException | None = None
    out_of_time: bool = False
    rejected_by: str | None = None  # set when no attempt was made on this round


_NOT_TRIED = Step(Outcome.FAILOVER, out_of_time=True)  # shared by every call, never changed


def provider_plan(
    rt: ProviderRuntime, op: Operation, deadline: float, attempts: list[Attempt]
) -> Generator[Command, Any, Step]:
    """Attempts on `rt` until it serves, the policies say move on, or the deadline comes."""
    settings, clock, bus = rt.settings, rt.clock, rt.bus
    retry = settings.retry
    slow_call = settings.breaker.slow_call
    start = clock()
    call_deadline = deadline
    if settings.timeouts.total is not None:
        deadline = min(deadline, start + settings.timeouts.total)
    rt.budget.record_call(start)
    limiter = rt.limiter_for(op.credential)
    last = _NOT_TRIED
    maybe_done = False  # an attempt may have acted: another provider could do it twice

    for number in range(1, retry.attempts + 1):
        now = clock()
        if now >= deadline:  # the call's deadline, or only this provider's `total`: move on
            return Step(last.outcome, last.response, last.error, out_of_time=now >= call_deadline)
        permit = rt.breaker.admit()
        if permit is None:
            return _rejected(rt, attempts, "breaker", last)
        if not rt.bulkhead.try_acquire():
            rt.breaker.release(permit)
            return _rejected(rt, attempts, "bulkhead", last)
        recorded = False
        try:
            wait = limiter.reserve(now, deadline - now)
            if wait is None:
                return _rejected(rt, attempts, "rate_limit", last)
            if wait > 0:
                yield Sleep(wait)
            sent_at = clock()
            result = yield Send(rt, max(0.0, min(settings.timeouts.attempt, deadline - sent_at)))
            ended = clock()
            latency = ended - sent_at
            verdict = _classify(rt, op, result)
            health = verdict.health
            slow = slow_call is not None and latency > slow_call
            if health and slow:
                health = False
            rt.breaker.record(permit, health, ended)
            recorded = True
            rt.stats.observe(latency, slow, ended)
        finally:
            rt.bulkhead.release()
            if not recorded:
                rt.breaker.release(permit)

        attempt = Attempt(rt.name, verdict.outcome, verdict.status, latency, verdict.reason)
        attempts.append(attempt)
        if bus.routine:
            bus.emit(AttemptFinished(rt.name, number, attempt))
        failed = isinstance(result, BaseException)
        response = None if failed else result
        error = result if failed else None
        if verdict.outcome is Outcome.OK:
            return Step(Outcome.OK, response)

        outcome = verdict.outcome
        hint = verdict.server_delay
        if hint is not None and (verdict.status == 429 or hint > retry.max_server_delay):
            limiter.pause_until(clock() + hint)  # every caller of this provider waits, not just us
            if hint > retry.max_server_delay:
                outcome = Outcome.FAILOVER  # down for longer than we will wait
        if outcome is Outcome.AMBIGUOUS:
            if verdict.timed_out and op.failover_when_ambiguous:
                outcome = Outcome.FAILOVER  # silent: retrying it only multiplies the wait
            elif not (op.idempotent_on(rt) or retry.retry_ambiguous):
                return Step(Outcome.AMBIGUOUS, response, error)
        maybe_done = maybe_done or outcome is Outcome.AMBIGUOUS
        last = Step(Outcome.AMBIGUOUS if maybe_done else Outcome.FAILOVER, response, error)
        if outcome is Outcome.FATAL:
            return Step(outcome, response, error)
        if outcome is not Outcome.RETRYABLE and outcome is not Outcome.AMBIGUOUS:
            return last  # FAILOVER (AMBIGUOUS if an earlier attempt may have acted): no retry
        if number == retry.attempts or rt.breaker.state == OPEN:
            break  # out of attempts, or this failure opened the breaker: no wait for nothing
        if not rt.budget.try_spend(clock()):
            if bus.active:
                bus.emit(Rejected(rt.name, "retry_budget"))
            break
        delay = jittered_backoff(retry, number, hint)
        if clock() + delay >= deadline:
            break
        if response is not None:
            yield Discard(response)
            last = Step(last.outcome, None, error)
        if bus.active:
            bus.emit(RetryScheduled(rt.name, number + 1, delay, verdict.reason))
        yield Sleep(delay)
    return last


def _classify(rt: ProviderRuntime, op: Operation, result: object) -> Verdict:
    """An answer is read by its status and headers alone (`status_code`, `headers.get`), so an
    httpx2 response travels through as it is."""
    if isinstance(result, BaseException):
        verdict = rt.classifier.error(result)
        if verdict is None:
            raise result  # not a transport failure: a bug, never retried or hidden
        return verdict
    answer = cast(httpx.Response, result)
    by_status = rt.classifier.response(answer.status_code, answer.headers)
    refine = getattr(op, "verdict", None)  # an operation that also reads the answer's body
    if refine is None:
        return by_status
    try:
        refined: Verdict = refine(rt, answer, by_status)
    except Exception as exc:  # a hostile or broken answer: it came after a send, so maybe done
        return Verdict(Outcome.AMBIGUOUS, by_status.status, f"unreadable answer: {exc!r:.80}")
    return refined


_REJECTION_REASONS = {
    "breaker": "breaker open",
    "bulkhead": "bulkhead full",
    "rate_limit": "rate limited",
}


def _rejected(rt: ProviderRuntime, attempts: list[Attempt], by: str, last: Step) -> Step:
    attempts.append(Attempt(rt.name, Outcome.FAILOVER, None, 0.0, _REJECTION_REASONS[by]))
    if rt.bus.active:
        rt.bus.emit(Rejected(rt.name, by))
    return Step(last.outcome, last.response, last.error, rejected_by=by)  # AMBIGUOUS stays
