"""6. Redis shared state (CircuitRedisStorage breaker, GCRA limiter): not yet.

When it is measured: the loopback round trip through a gateway sharing breaker
and limiter state in a real redis-server, against the embedded (in-memory) gateway.
"""

from __future__ import annotations

from benchmarks.harness import RowSpec, Suite

SUITE = Suite(
    6,
    "Redis shared breaker / limiter state",
    (RowSpec("6.redis.async", "gateway with Redis state, async", "µs/call", "embedded gateway"),),
    run=None,
    pending_reason="not yet measured: comes later (issue #8, item 6)",
)
