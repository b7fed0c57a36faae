"""The human units ops write in config: durations ("200ms", "1h30m"), rates ("600/min") and
sizes ("16MiB")."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
_PERIODS = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (already seconds) or a string like "250ms", "10s", "1m30s"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos == 0 or pos != len(text):
            raise ValueError(
                f"expected a duration like '250ms', '10s', '5m' or '1h', got {value!r}"
            )
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
    return seconds


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib|gib|kb|mb|gb)?\s*$")
_SIZE_BYTES = {
    None: 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
}  # fmt: skip


def parse_size(value: str | int) -> int:
    """Bytes from a whole number (already bytes) or a string like "512KiB", "16MiB", "1GB"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '16MiB', got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(value.lower())
    if match is None:
        raise ValueError(f"expected a size like '512KiB', '16MiB' or '1GB', got {value!r}")
    return int(match.group(1)) * _SIZE_BYTES[match.group(2)]


def parse_duration_range(value: str) -> tuple[float, float]:
    """A backoff range "200ms..5s" as (base, cap) seconds, base <= cap."""
    low, sep, high = value.partition("..")
    if not sep:
        raise ValueError(f"expected a range like '200ms..5s', got {value!r}")
    base, cap = parse_duration(low), parse_duration(high)
    if base <= 0 or cap < base:
        raise ValueError(f"expected 0 < start <= end in a range like '200ms..5s', got {value!r}")
    return base, cap


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` events per `period` seconds."""

    count: float
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


def parse_rate(value: str) -> Rate:
    """A rate such as "600/min", "10/s", "5/10s" or "1000/hour"."""
    match = _RATE.match(value.lower()) if isinstance(value, str) else None
    if match is None or match.group(3) not in _PERIODS:
        raise ValueError(f"expected a rate like '600/min', '10/s' or '5/10s', got {value!r}")
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _PERIODS[match.group(3)]
    if count <= 0 or period <= 0:
        raise ValueError(f"expected a positive rate, got {value!r}")
    return Rate(count, period)
