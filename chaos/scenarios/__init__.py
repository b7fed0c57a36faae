"""Chaos scenarios: sustained mixed sync/async traffic through a Gateway while the simulator
(or the environment: Redis, a worker, the application itself) misbehaves, with outcomes counted
at the simulator (effects by idempotency key), not only from what callers saw.

Every scenario uses the "http" capability with a primary provider `p` (where the fault is
injected) and a fallback `f`, each under its own path prefix on a private simulator; the reset
scenario adds payments over the simulated Stripe and PayPal. Every call carries a unique
idempotency key, so the simulator's records say exactly which calls took effect, where, and how
many times. The crash scenarios run a real redis-server and kill real processes with SIGKILL.
Two scenarios test the operation ledger ("exactly once") across processes: two applications
charging the same keys over Stripe and PayPal (payments), and paced SMS replays through the
simulated Twilio, which takes no idempotency key (counted there by message body).

One scenario per module (primary_down, rate_limit_storm, silent_provider, connection_reset,
flapping, redis_outage, worker_kill, app_kill, slow_provider, same_key, worker_kill_paced);
the machinery they share in `result` (CallRecord, ScenarioResult, the table), `harness`
(traffic, effects, gateways, tally, profiles) and `charger` (the same-key process); the
registry of them all in `registry`. This package re-exports what the rest of `chaos` and the
tests import.
"""

from chaos.scenarios.charger import charger_main, same_key_schedule
from chaos.scenarios.harness import PROFILES, Load, Profile, drive
from chaos.scenarios.registry import SCENARIOS, run
from chaos.scenarios.result import CallRecord, ScenarioResult, max_per_second, table

__all__ = [
    "PROFILES",
    "SCENARIOS",
    "CallRecord",
    "Load",
    "Profile",
    "ScenarioResult",
    "charger_main",
    "drive",
    "max_per_second",
    "run",
    "same_key_schedule",
    "table",
]
