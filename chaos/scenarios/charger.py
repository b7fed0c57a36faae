"""The same-key charger, a process of its own (`processes.charger` starts `charger_main`): charges
every key on `same_key_schedule` through its gateway and prints one `CallRecord` line per call.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaos.scenarios.result import CallRecord
from providers import Charge
from resilient.config import load_settings
from resilient.errors import CallFailed
from resilient.gateway import Gateway

SAME_KEY_GAP = 0.05  # seconds between one key and the next, in each process
LATE_BY, SHORT_DEADLINE = 0.1, 0.3  # B's late double-click on every third key: see the schedule
CHARGE_TRIES, RETRY_PAUSE = 10, 0.3  # a caller told "not now" tries again, as a client would


def same_key_schedule(role: str, index: int) -> tuple[float, str, float | None]:
    """(delay after the start, mode, deadline or None for the capability's) of process `role`'s
    first call for key `index`. A and B charge each key at the same moment, one blocking and
    the other awaited; on every third key B comes `LATE_BY` later with a deadline shorter than
    PayPal's latency: it meets A's claim, and its deadline comes first while A is at PayPal."""
    a_mode = "sync" if index % 2 == 0 else "async"
    delay = index * SAME_KEY_GAP
    if role == "A":
        return delay, a_mode, None
    b_mode = "async" if a_mode == "sync" else "sync"
    if index % 3 == 2:
        return delay + LATE_BY, b_mode, SHORT_DEADLINE
    return delay, b_mode, None


def _charge_record(
    key: str, mode: str, started: float, result: Any, error: CallFailed | None
) -> CallRecord:
    done = result if error is None else error
    attempts = tuple((a.provider, a.outcome.value) for a in getattr(done, "attempts", ()))
    latency = time.monotonic() - started
    if error is not None:
        return CallRecord(key, mode, type(error).__name__, None, started, latency, attempts)
    receipt = result.value
    return CallRecord(
        key,
        mode,
        result.status,
        result.provider,
        started,
        latency,
        attempts,
        receipt=getattr(receipt, "message_id", None),
        deduplicated=bool(getattr(receipt, "deduplicated", False)),
    )


async def charge_same_keys(
    gw: Gateway, role: str, keys: list[str], start: float, emit: Callable[[CallRecord], None]
) -> None:
    """Charge every key on `same_key_schedule` from `start` (time.monotonic); a call that fails
    (OperationInProgress, or any CallFailed) is retried with the capability's deadline until
    one is delivered. Every call, retries included, goes to `emit` as it returns."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="charge")

    async def call(key: str, mode: str, deadline: float | None) -> Any:
        charge = Charge(
            amount=1999, currency="usd", payment_method="pm_card_visa", idempotency_key=key
        )
        if mode == "sync":
            blocking = functools.partial(gw.sync.payments.charge, charge, deadline=deadline)
            return await loop.run_in_executor(pool, blocking)
        return await gw.payments.charge(charge, deadline=deadline)

    async def charge_key(index: int, key: str) -> None:
        delay, mode, deadline = same_key_schedule(role, index)
        await asyncio.sleep(max(0.0, start + delay - time.monotonic()))
        for _ in range(CHARGE_TRIES):
            started = time.monotonic()
            try:
                result = await call(key, mode, deadline)
            except CallFailed as exc:
                emit(_charge_record(key, mode, started, None, exc))
                deadline = None
                await asyncio.sleep(RETRY_PAUSE)
                continue
            emit(_charge_record(key, mode, started, result, None))
            return

    try:
        await asyncio.gather(*(charge_key(n, key) for n, key in enumerate(keys)))
    finally:
        pool.shutdown()


def _print_record(record: CallRecord) -> None:
    """On the event loop's thread only: lines never interleave."""
    sys.stdout.write(record.to_line() + "\n")
    sys.stdout.flush()


def charger_main(argv: list[str] | None = None) -> int:
    """The same-key application (`processes.charger` starts it): `ready` once its gateway and
    ledger are open, then the start moment read from stdin, then its keys charged."""
    parser = argparse.ArgumentParser(prog="chaos-charger", description=charger_main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--role", choices=("A", "B"), required=True)
    parser.add_argument("--prefix", required=True, help="keys are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--keys", type=int, required=True)
    args = parser.parse_args(argv)
    keys = [f"{args.prefix}-{n}" for n in range(args.keys)]
    with Gateway(load_settings(args.config), ops=False) as gw:
        gw.ledger.get(keys[0])  # open the shared ledger now: the race is on claims, not setup
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        asyncio.run(charge_same_keys(gw, args.role, keys, start, _print_record))
    return 0
