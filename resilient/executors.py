"""The two thin drivers of a plan: one blocking, one asyncio. They do I/O and nothing else."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from resilient.deadlines import watches
from resilient.exactly_once import LedgeredOperation
from resilient.ledger import Claim, Ledger, Settle
from resilient.lookup import Lookup
from resilient.pipeline import Discard, Operation, Plan, Send, Sleep
from resilient.transport_deadline import attempt_deadline


def run_sync(plan: Plan, op: Operation, ledger: Ledger | None = None) -> Any:
    """Drive `plan` with blocking I/O; returns what the plan returns. `ledger` answers the
    plan's Claim and Settle commands (a ledgered operation's plan yields them)."""
    try:
        command = next(plan)
        while True:
            if isinstance(command, Send):
                try:
                    with attempt_deadline(command.timeout):
                        value: object = op.send(command.provider, command.timeout)
                except Exception as exc:  # the plan classifies it
                    value = exc
            elif isinstance(command, Sleep):
                time.sleep(command.seconds)
                value = None
            elif isinstance(command, Discard):
                command.response.close()
                value = None
            elif isinstance(command, (Claim, Settle)) and ledger is not None:
                value = ledger.write(command)
            elif isinstance(command, Lookup):
                try:
                    with attempt_deadline(command.timeout):
                        value = cast(LedgeredOperation, op).look_up(
                            command.provider, command.since, command.timeout
                        )
                except Exception as exc:  # the plan reads it as "unknown"
                    value = exc
            else:
                raise TypeError(f"unknown command {command!r}")
            command = plan.send(value)
    except StopIteration as done:
        return done.value
    finally:
        plan.close()  # on any exit (an interrupt, a bug), the plan gives back what it holds


async def run_async(plan: Plan, op: Operation, ledger: Ledger | None = None) -> Any:
    """Drive `plan` on the running event loop; each attempt is cut at its timeout."""
    task = asyncio.current_task()
    assert task is not None, "run_async runs in a task"
    watch = watches.get(asyncio.get_running_loop())
    try:
        command = next(plan)
        while True:
            if isinstance(command, Send):
                watched = watch.start(command.timeout, task)
                try:
                    value: object = await op.asend(command.provider, command.timeout)
                except Exception as exc:  # the plan classifies it
                    value = exc
                except asyncio.CancelledError:
                    if not watch.end(watched):
                        raise  # cancelled from outside, not by the deadline
                    value = TimeoutError(f"attempt cut at its {command.timeout:g}s timeout")
                finally:
                    watch.end(watched)
            elif isinstance(command, Sleep):
                await asyncio.sleep(command.seconds)
                value = None
            elif isinstance(command, Discard):
                await command.response.aclose()
                value = None
            elif isinstance(command, (Claim, Settle)) and ledger is not None:
                value = await asyncio.wrap_future(ledger.submit(command))
            elif isinstance(command, Lookup):
                watched = watch.start(command.timeout, task)
                try:
                    value = await cast(LedgeredOperation, op).alook_up(
                        command.provider, command.since, command.timeout
                    )
                except Exception as exc:
                    value = exc
                except asyncio.CancelledError:
                    if not watch.end(watched):
                        raise
                    value = TimeoutError(f"lookup cut at its {command.timeout:g}s timeout")
                finally:
                    watch.end(watched)
            else:
                raise TypeError(f"unknown command {command!r}")
            command = plan.send(value)
    except StopIteration as done:
        return done.value
    finally:
        plan.close()
