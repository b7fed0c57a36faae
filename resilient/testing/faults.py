"""Fault descriptions for the simulator: immutable values, built only through the constructors."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal[
    "status",
    "latency",
    "hang",
    "reset",
    "reset_mid_body",
    "flapping",
    "stream_stall",
    "stream_cut",
    "stream_malformed",
    "stream_no_end",
    "stream_slow_start",
]
STREAM_KINDS = frozenset(
    {"stream_stall", "stream_cut", "stream_malformed", "stream_no_end", "stream_slow_start"}
)
MALFORMED_EVENT = b"data: {this is not json\n\n"


@dataclass(frozen=True)
class Fault:
    """What the simulator does instead of (or around) the route for a matching request.

    Build one with the class methods (`Fault.status(503)`, `Fault.hang()`, ...); the fields are
    the simulator's reading of it. `label` is what request records carry in `fault`.
    """

    kind: FaultKind
    label: str
    code: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    after_effect: bool = False
    up: float = 0.0
    down: float = 0.0
    inner: Fault | None = None
    events: int = 0  # stream faults: the number of parts (events) it concerns

    @classmethod
    def status(
        cls,
        code: int,
        *,
        json: Any = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with this status instead of running the route (the provider did nothing)."""
        if not 100 <= code <= 599:
            raise ValueError(f"status code must be within 100..599, got {code}")
        merged = {name.lower(): value for name, value in (headers or {}).items()}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            merged.setdefault("content-type", "application/json")
        return cls("status", f"status:{code}", code=code, body=body, headers=tuple(merged.items()))

    @classmethod
    def rate_limited(
        cls, retry_after: float | str | None = None, *, retry_after_ms: int | None = None
    ) -> Fault:
        """429 with the hints real providers send: Retry-After (seconds or HTTP-date as given)
        and OpenAI-style retry-after-ms."""
        headers: dict[str, str] = {"content-type": "application/json"}
        if retry_after is not None:
            headers["retry-after"] = _seconds_text(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        body = jsonlib.dumps({"error": "rate limited"}).encode()
        return cls("status", "rate_limited", code=429, body=body, headers=tuple(headers.items()))

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait, then serve normally: a slow provider, not a broken one."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {seconds}")
        return cls("latency", "latency", seconds=seconds)

    @classmethod
    def hang(cls, *, after_effect: bool = False) -> Fault:
        """Read the request and never answer, so only the client's timeout ends the call."""
        return cls("hang", "hang", after_effect=after_effect)

    @classmethod
    def reset(cls, *, after_effect: bool = False) -> Fault:
        """Read the request, then drop the connection with a TCP RST before any response byte."""
        return cls("reset", "reset", after_effect=after_effect)

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """Run the route, send the status line, headers and part of the body, then RST: the
        provider did the work but the client cannot know the result."""
        return cls("reset_mid_body", "reset_mid_body", after_effect=True)

    @classmethod
    def flapping(cls, *, up: float, down: float, fault: Fault) -> Fault:
        """Alternate `up` healthy seconds with `down` seconds of `fault`, starting healthy."""
        if up <= 0 or down <= 0:
            raise ValueError(f"flapping needs up > 0 and down > 0, got up={up} down={down}")
        return cls("flapping", fault.label, up=up, down=down, inner=fault)

    # Stream faults run the route, then change how its streamed answer
    # (`SimResponse.stream`) is sent; a plain answer counts as a stream of one part.

    @classmethod
    def stall_stream(cls, after: int) -> Fault:
        """Send the first `after` parts, then go silent with the connection open: only the
        client's idle timeout ends the stream."""
        return cls("stream_stall", "stream_stall", events=_count(after), after_effect=True)

    @classmethod
    def cut_stream(cls, after: int) -> Fault:
        """Send the first `after` parts, then drop the connection with a TCP RST mid-body."""
        return cls("stream_cut", "stream_cut", events=_count(after), after_effect=True)

    @classmethod
    def malformed_event(cls, at: int, data: bytes = MALFORMED_EVENT) -> Fault:
        """Insert `data` (an unreadable event) before part `at`; the rest streams normally."""
        return cls(
            "stream_malformed", "stream_malformed", body=data, events=_count(at), after_effect=True
        )

    @classmethod
    def no_end_marker(cls, drop: int = 1) -> Fault:
        """Leave out the last `drop` parts (the provider's end marker) and end the body cleanly."""
        return cls("stream_no_end", "stream_no_end", events=_count(drop), after_effect=True)

    @classmethod
    def slow_first_token(cls, seconds: float) -> Fault:
        """Send the status line and headers at once, then wait `seconds` before the first part."""
        if seconds < 0:
            raise ValueError(f"slow_first_token must be >= 0 seconds, got {seconds}")
        return cls("stream_slow_start", "stream_slow_start", seconds=seconds, after_effect=True)

    def resolve(self, elapsed: float) -> Fault | None:
        """The fault in force `elapsed` seconds after injection, or None while healthy."""
        if self.inner is None:
            return self
        if elapsed % (self.up + self.down) < self.up:
            return None
        return self.inner.resolve(elapsed)


def _count(value: int) -> int:
    if value < 0:
        raise ValueError(f"a stream fault counts parts from 0, got {value}")
    return value


def _seconds_text(value: float | str) -> str:
    """Retry-After text: strings pass through (HTTP-dates), whole numbers lose the '.0'."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
