"""What a scenario reports: one `CallRecord` per call (also the line an application process
prints for it), one `ScenarioResult` per scenario, and the summary table over them; plus the
counting helpers they share (`max_per_second`, the p99).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ScenarioResult:
    """What one scenario did, counted at the simulator. `violations` lists broken invariants."""

    name: str
    calls: int = 0
    served: int = 0  # delivered to the caller (by any provider)
    deferred: int = 0  # parked and returned `deferred` to the caller
    replayed: int = 0  # deferred calls that later took effect at the simulator
    lost: int = 0  # delivered or deferred, yet never took effect at the simulator
    duplicated: int = 0  # keys that took effect more than once (on any provider)
    max_attempts_per_s_at_provider: int = 0  # at the faulted provider, per 1 s bucket
    p99_latency: float = 0.0  # seconds, as callers saw it
    failed: int = 0  # calls that raised CallFailed to the caller
    details: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class CallRecord:
    key: str
    mode: str  # "sync" or "async"
    status: str  # "delivered", "deferred" or the exception class name
    provider: str | None
    started: float  # time.monotonic(), the simulator's clock too (system-wide on Linux)
    latency: float
    attempts: tuple[tuple[str, str], ...] = ()  # (provider, outcome class) per attempt
    receipt: str | None = None  # the provider's id for what was done (a Receipt's message_id)
    deduplicated: bool = False  # answered from the ledger: this call sent nothing

    def to_line(self) -> str:
        """One JSON line: how the application process reports a call to the scenario."""
        return json.dumps(asdict(self))

    @classmethod
    def from_line(cls, line: str) -> CallRecord:
        data = json.loads(line)
        data["attempts"] = tuple((provider, outcome) for provider, outcome in data["attempts"])
        return cls(**data)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def max_per_second(times: list[float]) -> int:
    """The most requests in any 1 s sliding window."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


COLUMNS = (
    ("scenario", "name"),
    ("calls", "calls"),
    ("served", "served"),
    ("deferred", "deferred"),
    ("replayed", "replayed"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("max att/s", "max_attempts_per_s_at_provider"),
    ("p99 ms", "p99_latency"),
    ("ok", "ok"),
)


def table(results: list[ScenarioResult]) -> str:
    """The summary table, one row per scenario."""
    rows = [[title for title, _ in COLUMNS]]
    for result in results:
        row = []
        for _, attr in COLUMNS:
            value = getattr(result, attr)
            if attr == "p99_latency":
                value = f"{value * 1000:.0f}"
            elif attr == "ok":
                value = "ok" if value else "FAIL"
            row.append(str(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
