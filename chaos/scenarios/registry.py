"""Every scenario by name (`SCENARIOS`), and `run` for one of them on its own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from chaos.scenarios.app_kill import app_killed
from chaos.scenarios.connection_reset import connection_reset
from chaos.scenarios.flapping import flapping_provider
from chaos.scenarios.harness import Profile
from chaos.scenarios.primary_down import primary_down
from chaos.scenarios.rate_limit_storm import rate_limit_storm_bare, rate_limit_storm_retry_after
from chaos.scenarios.redis_outage import redis_outage
from chaos.scenarios.result import ScenarioResult
from chaos.scenarios.same_key import same_key_two_processes
from chaos.scenarios.silent_provider import silent_provider
from chaos.scenarios.slow_provider import slow_provider
from chaos.scenarios.worker_kill import worker_killed
from chaos.scenarios.worker_kill_paced import worker_killed_paced

SCENARIOS: dict[str, Callable[[Profile], Coroutine[Any, Any, ScenarioResult]]] = {
    "primary-down": primary_down,
    "429-retry-after": rate_limit_storm_retry_after,
    "429-no-hint": rate_limit_storm_bare,
    "silent-provider": silent_provider,
    "connection-reset": connection_reset,
    "flapping": flapping_provider,
    "redis-outage": redis_outage,
    "worker-kill": worker_killed,
    "app-kill": app_killed,
    "slow-provider": slow_provider,
    "same-key": same_key_two_processes,
    "worker-kill-paced": worker_killed_paced,
}


def run(name: str, profile: Profile = "short") -> ScenarioResult:
    """Run one scenario on its own event loop."""
    return asyncio.run(SCENARIOS[name](profile))
