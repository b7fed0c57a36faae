"""`resilient worker` and `resilient queue ...`: run replays, and look after parked requests."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from queues.backend import EmbeddedBackend, RedisBackend
from queues.deferred import DeferredRequest
from queues.replayer import worker_settings
from queues.store import AMBIGUOUS_LETTER, DEAD, Entry, Store
from resilient.config import load_settings
from resilient.deferral import decode_operation
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.ledger import DELIVERED, FAILED, LedgerEntry
from resilient.units import parse_duration


def register(commands: Any) -> None:
    worker = commands.add_parser("worker", help="replay parked requests until stopped")
    _config_argument(worker)
    worker.add_argument("--burst", action="store_true", help="drain what is due now, then exit")
    worker.set_defaults(handler=_worker)

    queue = commands.add_parser("queue", help="inspect and manage parked requests")
    _config_argument(queue)
    queue.add_argument("--json", action="store_true", help="machine-readable output")
    verbs = queue.add_subparsers(dest="verb", required=True)
    verbs.add_parser("stats", help="depth, dead letters, age of the oldest request")
    listing = verbs.add_parser("list", help="parked requests")
    listing.add_argument("--state", choices=["ready", "leased", "dead"])
    listing.add_argument("--limit", type=int, default=100)
    show = verbs.add_parser("show", help="one request with its attempt history")
    show.add_argument("id")
    replay = verbs.add_parser("replay", help="make waiting requests due now")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--provider", help="every request whose chain includes this provider")
    dead = verbs.add_parser("dead", help="the dead letters")
    dead.add_argument("--limit", type=int, default=100)
    redrive = verbs.add_parser("redrive", help="put a dead letter back in line")
    redrive.add_argument("id")
    redrive.add_argument(
        "--extend",
        metavar="DURATION",
        help="a new deadline, DURATION from now, for a letter whose deadline passed (e.g. 1h)",
    )
    redrive.add_argument(
        "--force",
        action="store_true",
        help="send an ambiguous letter once more: only after you found it was not done",
    )
    reconcile = verbs.add_parser(
        "reconcile", help="ask providers what became of ambiguous dead letters"
    )
    which = reconcile.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--all", action="store_true", help="every ambiguous dead letter")
    purge = verbs.add_parser("purge", help="delete one dead letter, or all of them")
    purge.add_argument("id", nargs="?")
    queue.set_defaults(handler=_queue)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="the gateway config file (default: $RESILIENT_CONFIG)", default=None
    )


def _gateway(args: argparse.Namespace) -> tuple[Gateway, EmbeddedBackend | RedisBackend]:
    gateway = Gateway(worker_settings(load_settings(args.config)), background_replay=False)
    backend = gateway.deferral
    if not isinstance(backend, (EmbeddedBackend, RedisBackend)):  # pragma: no cover
        raise ResilientError("this command needs one of the queues package's backends")
    return gateway, backend


@contextmanager
def _redis_said(gateway: Gateway) -> Iterator[None]:
    """A Redis error (refused, wrong password, no TLS) as one clear line: where, and what Redis
    said; never the URL itself, which may carry the password."""
    try:
        import redis
    except ImportError:  # no Redis client installed, so no Redis errors to word
        yield
        return
    try:
        yield
    except redis.RedisError as exc:
        url = urlsplit(gateway.settings.redis_url or "")
        raise ResilientError(f"Redis at {url.hostname}:{url.port}: {exc}") from None


def _worker(args: argparse.Namespace) -> int:
    gateway, backend = _gateway(args)
    with _redis_said(gateway):
        return _work(args, gateway, backend)


def _work(
    args: argparse.Namespace, gateway: Gateway, backend: EmbeddedBackend | RedisBackend
) -> int:
    if isinstance(backend, RedisBackend) and not args.burst:
        return _rq_worker(args, gateway, backend)
    replayer = backend.replayer

    async def run() -> None:
        if args.burst:
            while await replayer.drain_once():
                pass
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await replayer.run(stop)

    started = time.monotonic()
    try:
        asyncio.run(run())
    finally:
        gateway.close()
    stats = asdict(replayer.stats)
    stats["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(stats))
    return 0


def _rq_worker(args: argparse.Namespace, gateway: Gateway, backend: RedisBackend) -> int:
    """RQ workers with the scheduler; each deferring capability gets its drain job going."""
    from rq import SimpleWorker

    from queues import rq_jobs

    config = str(Path(args.config).resolve()) if args.config else None
    connection = backend.redis._redis
    capabilities = backend.replayer.capabilities
    for capability in capabilities:
        rq_jobs.schedule(connection, config, capability)
    stop = threading.Event()
    rearm = threading.Thread(
        target=rq_jobs.keep_scheduled,
        args=(connection, config, capabilities, stop),
        name="resilient-rearm",
        daemon=True,
    )
    rearm.start()
    worker = SimpleWorker([rq_jobs.QUEUE], connection=connection)
    try:
        worker.work(with_scheduler=True, logging_level="WARNING")
    finally:
        stop.set()
        gateway.close()
    return 0


def _queue(args: argparse.Namespace) -> int:
    gateway, backend = _gateway(args)
    try:
        with _redis_said(gateway):
            return _queue_verb(args, gateway, backend.store)
    finally:
        gateway.close()


def _queue_verb(args: argparse.Namespace, gateway: Gateway, spool: Store) -> int:
    verb = args.verb
    if verb == "stats":
        return _out(args, spool.stats())
    if verb in ("list", "dead"):
        state = DEAD if verb == "dead" else args.state
        rows = [asdict(e) for e in spool.entries(state, args.limit)]
        return _out(args, rows)
    if verb == "show":
        found = spool.get(args.id)
        if found is None:
            raise ResilientError(f"no parked request {args.id!r}")
        entry, request = found
        shown: dict[str, Any] = asdict(entry)
        shown["request"] = request.to_dict() if request is not None else None
        return _out(args, shown)
    if verb == "replay":
        if args.id:
            changed = spool.make_due(request_id=args.id)
        else:
            gateway.provider(args.provider)  # an unknown name is an error, not "0 changed"
            caps = [
                name
                for name, cap in gateway.settings.capabilities.items()
                if args.provider in cap.chain
            ]
            changed = spool.make_due(capabilities=caps)
        return _out(args, {"due_now": changed})
    if verb == "redrive":
        return _out(args, _redrive(args, gateway, spool))
    if verb == "reconcile":
        return _out(args, _reconcile(args, gateway, spool))
    purged = spool.purge(args.id)
    return _out(args, {"purged": purged})


def _dead_letter(spool: Store, request_id: str) -> tuple[Entry, DeferredRequest]:
    found = spool.get(request_id)
    if found is None or found[0].state != DEAD:
        raise ResilientError(f"no dead letter {request_id!r}")
    entry, request = found
    if request is None:
        raise ResilientError(f"dead letter {request_id!r} does not decode: purge it")
    return entry, request


def _redrive(args: argparse.Namespace, gateway: Gateway, spool: Store) -> dict[str, Any]:
    """A dead letter back in line, refused where it would only be buried again (its deadline
    passed: --extend) or could act twice (an ambiguous outcome: reconcile, or --force)."""
    entry, request = _dead_letter(spool, args.id)
    deadline = None
    if args.extend is not None:
        deadline = time.time() + parse_duration(args.extend)
    elif entry.deadline <= time.time():
        raise ResilientError(
            f"dead letter {args.id!r}: its deadline passed at {_when(entry.deadline)}, so it "
            "would be buried again at once; give it a new one with --extend DURATION"
        )
    if (entry.reason or "").startswith(AMBIGUOUS_LETTER):
        if not args.force:
            raise ResilientError(
                f"dead letter {args.id!r} may already have been delivered; run `resilient "
                f"queue reconcile {args.id}` to ask the provider, or --force to send it once "
                "more if you found it was not done"
            )
        failed = LedgerEntry(FAILED, None, time.time())  # the operator's word: not done
        gateway.ledger.record(request.operation_id, failed)
    spool.redrive(args.id, deadline=deadline)
    return {"redriven": args.id} | ({"deadline": _when(deadline)} if deadline else {})


def _reconcile(args: argparse.Namespace, gateway: Gateway, spool: Store) -> list[dict[str, Any]]:
    """Each ambiguous dead letter asked after: delivered ones leave the queue, ones provably
    not done go back in line, the rest stay with what was asked and answered."""
    if args.all:
        ids = [
            e.id
            for e in spool.entries(DEAD, limit=10**9)
            if (e.reason or "").startswith(AMBIGUOUS_LETTER)
        ]
    else:
        ids = [args.id]
    report = []
    for request_id in ids:
        entry, request = _dead_letter(spool, request_id)
        op = decode_operation(request.operation, request.payload)
        after, looked = gateway.reconcile(op)
        asked = "; ".join(a.reason for a in looked) or "nothing could be asked"
        if after is not None and after.state == DELIVERED:
            spool.settle(delivered=[request_id])
            outcome = f"delivered by {after.provider} ({after.message_id}): removed"
        elif after is not None and after.state == FAILED and entry.deadline <= time.time():
            outcome = "not done, and its deadline passed: redrive it with --extend DURATION"
        elif after is not None and after.state == FAILED:
            spool.redrive(request_id)
            outcome = "not done: back in line"
        else:
            state = after.state if after is not None else "no ledger entry"
            outcome = f"still {state}: left as a dead letter"
        report.append({"id": request_id, "outcome": outcome, "asked": asked})
    return report


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _out(args: argparse.Namespace, data: Any) -> int:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        if not data:
            print("(none)")
    else:
        for key, value in data.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    sys.stdout.flush()
    return 0
