"""Test doubles for providers: a fault-injecting HTTP simulator and a real redis-server.

Names load on first use, so the pytest plugin (imported in every pytest run) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resilient.testing.faults import Fault
    from resilient.testing.redis_server import RedisServer
    from resilient.testing.simulator import (
        FaultHandle,
        RecordedRequest,
        SimRequest,
        SimResponse,
        Simulator,
    )

__all__ = [
    "Fault",
    "FaultHandle",
    "RecordedRequest",
    "RedisServer",
    "SimRequest",
    "SimResponse",
    "Simulator",
]

_HOMES = {
    "Fault": "resilient.testing.faults",
    "FaultHandle": "resilient.testing.simulator",
    "RecordedRequest": "resilient.testing.simulator",
    "RedisServer": "resilient.testing.redis_server",
    "SimRequest": "resilient.testing.simulator",
    "SimResponse": "resilient.testing.simulator",
    "Simulator": "resilient.testing.simulator",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
