"""The two thin drivers of a plan: one blocking, one asyncio. They do I/O and nothing else."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TypeVar

from resilient.pipeline import Discard, Operation, Plan, Send, Sleep

T = TypeVar("T")

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # pragma: no cover - Python 3.10
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def _deadline(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError as exc:
            raise TimeoutError from exc
        finally:
            handle.cancel()


def run_sync(plan: Plan, op: Operation) -> Any:
    """Drive `plan` with blocking I/O; returns what the plan returns."""
    try:
        command = next(plan)
        while True:
            if isinstance(command, Send):
                try:
                    value: object = op.send(command.provider, command.timeout)
                except Exception as exc:  # the plan classifies it
                    value = exc
            elif isinstance(command, Sleep):
                time.sleep(command.seconds)
                value = None
            elif isinstance(command, Discard):
                command.response.close()
                value = None
            else:
                raise TypeError(f"unknown command {command!r}")
            command = plan.send(value)
    except StopIteration as done:
        return done.value
    finally:
        plan.close()  # on any exit (an interrupt, a bug), the plan gives back what it holds


async def run_async(plan: Plan, op: Operation) -> Any:
    """Drive `plan` on the running event loop; each attempt is cut at its timeout."""
    try:
        command = next(plan)
        while True:
            if isinstance(command, Send):
                try:
                    async with _deadline(command.timeout):
                        value: object = await op.asend(command.provider, command.timeout)
                except Exception as exc:  # TimeoutError from the deadline included
                    value = exc
            elif isinstance(command, Sleep):
                await asyncio.sleep(command.seconds)
                value = None
            elif isinstance(command, Discard):
                await command.response.aclose()
                value = None
            else:
                raise TypeError(f"unknown command {command!r}")
            command = plan.send(value)
    except StopIteration as done:
        return done.value
    finally:
        plan.close()
