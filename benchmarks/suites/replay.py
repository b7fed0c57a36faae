"""7. Replay throughput of deferred requests (SQLite spool, RQ): not yet.

When it is measured: parked requests drained per second through the chain, against the same
requests sent directly.
"""

from __future__ import annotations

from benchmarks.harness import RowSpec, Suite

SUITE = Suite(
    7,
    "replay throughput of deferred requests",
    (RowSpec("7.replay.spool", "replay from the SQLite spool", "req/s", "direct sends"),),
    run=None,
    pending_reason="not yet measured: comes later (issue #8, item 7)",
)
