"""9. Durability: parks and ledger claims per second, and what the durable ledger costs a call.

Parks and claims: 64 threads in flight, each write durable (fsync'd) before its caller goes
on. The subject is the SQLite store by group commit (one fsync for whatever arrived
meanwhile); the baseline is the same rows each in a transaction of its own with its own fsync,
as parking was written before, in the same run. A claim is counted with its outcome: one
claim plus one settle per operation. Targets: ≥ 5,000 per second each.

The healthy path: CPU per `gw.sync.email.send` (SendGrid) and `gw.sync.payments.charge`
(Stripe) to the loopback simulator (own process), one at a time and 64 in flight (threads:
where group commit shares the fsyncs), with the durable SQLite ledger
against the same gateway over an in-memory ledger (the same rules, nothing durable: what a call
cost before claims were durable). Target: within 1.15x.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import fixtures
from benchmarks.harness import Config, Row, RowSpec, Stats, Suite, Target
from providers import Charge, Email
from queues.deferred import DeferredRequest
from queues.spool import Spool
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.ledger import DELIVERED, Claim, Settle
from resilient.ledger.memory import MemoryLedger
from resilient.ledger.sqlite import SqliteLedger

ITEM = 9
IN_FLIGHT = 64
FLOOR = Target("value_min", 5000.0, "≥ 5,000 /s")
CPU_CEILING = Target("ratio_max", 1.15, "≤ 1.15x")
ALONE = "each write its own fsync'd commit"
SPECS = {
    "park": RowSpec("9.park.sqlite", "parks, SQLite spool, 64 in flight", "/s", ALONE, FLOOR),
    "ledger": RowSpec(
        "9.ledger.sqlite", "ledger claim + outcome, SQLite, 64 in flight", "/s", ALONE, FLOOR
    ),
    "email": RowSpec(
        "9.cpu.email", "CPU per email call, durable ledger", "µs", "in-memory ledger", CPU_CEILING
    ),
    "charge": RowSpec(
        "9.cpu.charge", "CPU per charge, durable ledger", "µs", "in-memory ledger", CPU_CEILING
    ),
    "email.64": RowSpec(
        "9.cpu.email.64",
        "CPU per email call, durable ledger, 64 in flight",
        "µs",
        "in-memory ledger",
        CPU_CEILING,
    ),
    "charge.64": RowSpec(
        "9.cpu.charge.64",
        "CPU per charge, durable ledger, 64 in flight",
        "µs",
        "in-memory ledger",
        CPU_CEILING,
    ),
}


def _per_second(work: Callable[[int], None], n: int) -> float:
    """`work(i)` for i in range(n) on IN_FLIGHT threads; completions per second."""
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        started = time.perf_counter()
        list(pool.map(work, range(n)))
        return n / (time.perf_counter() - started)


class _OneCommitEach:
    """The baseline store: every write in a transaction of its own, fsync'd (synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB)")
        self._lock = threading.Lock()

    def write(self, key: str, body: bytes) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key, body))
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def _request(i: int) -> DeferredRequest:
    now = time.time()
    payload = {"to": ["a@example.com"], "subject": f"hello {i}", "text": "x" * 200}
    return DeferredRequest("email", "email", payload, f"op-{i}", now, now + 3600)


def _park_round(tmp: Path, n: int) -> tuple[float, float]:
    """(parks per second by group commit, by one commit each)."""
    requests = [_request(i) for i in range(n)]
    spool = Spool(tmp / f"spool-{uuid.uuid4().hex}.db")
    grouped = _per_second(lambda i: spool.put(requests[i]), n)
    spool.close()
    alone = _OneCommitEach(tmp / f"alone-{uuid.uuid4().hex}.db")
    bodies = [repr(request).encode() for request in requests]
    each = _per_second(lambda i: alone.write(requests[i].id, bodies[i]), n)
    alone.close()
    return grouped, each


def _claim_round(tmp: Path, n: int) -> tuple[float, float]:
    """(claims with their outcome per second by group commit, by one commit each write)."""
    ledger = SqliteLedger(tmp / f"ledger-{uuid.uuid4().hex}.db")

    def claim_and_settle(i: int) -> None:
        granted = ledger.write(Claim(f"op-{i}", "sendgrid", 60.0))
        ledger.write(Settle(f"op-{i}", granted.entry.token, DELIVERED, "sendgrid"))

    grouped = _per_second(claim_and_settle, n)
    ledger.close()
    alone = _OneCommitEach(tmp / f"alone-{uuid.uuid4().hex}.db")

    def write_twice(i: int) -> None:
        alone.write(f"op-{i}", b"claimed")
        alone.write(f"op-{i}", b"delivered")

    each = _per_second(write_twice, n)
    alone.close()
    return grouped, each


def _throughput(cfg: Config, tmp: Path, key: str, measure: Any, what: str) -> Row:
    n = 500 if cfg.quick else 5000
    pairs = [measure(tmp, n) for _ in range(1 if cfg.quick else 3)]
    return Row(
        SPECS[key],
        ITEM,
        subject=Stats.of_rounds([grouped for grouped, _ in pairs]),
        baseline=Stats.of_rounds([each for _, each in pairs]),
        notes=[f"{n} {what} per round"],
    )


def _gateway(base_url: str, spool: Path, durable: bool) -> Gateway:
    settings = settings_from_mapping(
        {
            "gateway": {"spool_path": str(spool)},
            "providers": {
                "sendgrid": {
                    "kind": "sendgrid",
                    "api_key": "SG.bench",
                    "base_url": base_url + "/sendgrid",
                },
                "stripe": {
                    "kind": "stripe",
                    "api_key": "sk_test_bench",
                    "base_url": base_url + "/stripe",
                },
            },
            "capabilities": {"email": {"chain": ["sendgrid"]}, "payments": {"chain": ["stripe"]}},
        }
    )
    return Gateway(settings, ops=False, ledger=None if durable else MemoryLedger())


def _cpu_per_call(call: Callable[[int], Any], n: int, in_flight: int) -> float:
    """The process's CPU per call (µs), `in_flight` calls at a time (on threads when > 1)."""
    started = time.process_time()
    if in_flight == 1:
        for i in range(n):
            call(i)
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(call, range(n)))
    return (time.process_time() - started) / n * 1e6


def _healthy_path(cfg: Config, tmp: Path, base_url: str) -> list[Row]:
    n = 40 if cfg.quick else 400
    rounds = 1 if cfg.quick else 5
    durable = _gateway(base_url, tmp / "durable.db", durable=True)
    memory = _gateway(base_url, tmp / "memory.db", durable=False)
    tag = uuid.uuid4().hex

    def email(gw: Gateway, side: str) -> Callable[[int], Any]:
        def send(i: int) -> Any:
            message = Email(
                sender="bench@example.com",
                to=["a@example.com"],
                subject="hello",
                text="hi",
                idempotency_key=f"{tag}-{side}-{i}-{time.perf_counter_ns()}",
            )
            return gw.sync.email.send(message)

        return send

    def charge(gw: Gateway, side: str) -> Callable[[int], Any]:
        def pay(i: int) -> Any:
            key = f"{tag}-{side}-{i}-{time.perf_counter_ns()}"
            return gw.sync.payments.charge(
                Charge(
                    amount=100, currency="usd", payment_method="pm_card_visa", idempotency_key=key
                )
            )

        return pay

    rows = []
    try:
        for key, make in (("email", email), ("charge", charge)):
            for gw, side in ((durable, "d"), (memory, "m")):  # warm both
                _cpu_per_call(make(gw, side + "w"), 20, 1)
            for in_flight, suffix in ((1, ""), (IN_FLIGHT, ".64")):
                ours: list[float] = []
                base: list[float] = []
                for r in range(rounds):
                    sides = [(durable, "d", ours), (memory, "m", base)]
                    for gw, side, into in sides if r % 2 == 0 else sides[::-1]:
                        calls = make(gw, f"{side}{r}{suffix}")
                        into.append(_cpu_per_call(calls, n, in_flight))
                how = "sequential calls" if in_flight == 1 else f"calls, {in_flight} in flight"
                rows.append(
                    Row(
                        SPECS[key + suffix],
                        ITEM,
                        subject=Stats.of_rounds(ours),
                        baseline=Stats.of_rounds(base),
                        notes=[f"{n} {how} per round, {rounds} rounds alternating"],
                    )
                )
    finally:
        durable.close()
        memory.close()
    return rows


def run(cfg: Config) -> list[Row]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows = [
            _throughput(cfg, tmp, "park", _park_round, "parks"),
            _throughput(cfg, tmp, "ledger", _claim_round, "operations (a claim and its outcome)"),
        ]
        with fixtures.simulator_process() as sim:
            rows += _healthy_path(cfg, tmp, sim.base_url)
    return rows


SUITE = Suite(
    9,
    "durability: parks, ledger claims, the durable ledger's cost per call",
    tuple(SPECS.values()),
    run=run,
)
