"""The measuring harness: configs, rows, repeated interleaved rounds, medians and p99.

Every figure is a pair measured in the same process and the same run: a subject (the gateway)
and its baseline (raw httpx, or whatever the row names). Rounds interleave the two, rotating
which goes first, so drift (other processes, CPU frequency) falls on both. A row reports the
median over rounds of each round's median, the median over rounds of each round's p99, and the
ratio subject / baseline computed from those two medians. Nothing is pinned to absolute times.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

Status = Literal["measured", "skipped", "not yet measured", "error"]


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How much work each row does. `quick` is the seconds-long smoke CI runs."""

    quick: bool
    rounds: int  # interleaved rounds per comparison
    warmup: int  # calls per subject before the first round
    calls: int  # calls per round for in-memory (µs-scale) rows
    loopback_calls: int  # calls per round for loopback round trips
    concurrency: tuple[int, ...]
    concurrency_rounds: int
    concurrency_seconds: float  # per round and side, at each level (time-bounded rounds)
    memory_rounds: int
    inflight_calls: int  # calls parked at once for the per-in-flight-call memory rows


FULL = Config(
    quick=False,
    rounds=40,  # many short rounds: a burst of other work lands on one round, not one subject
    warmup=300,
    calls=600,
    loopback_calls=120,
    concurrency=(1, 10, 100, 1000),
    concurrency_rounds=5,
    concurrency_seconds=1.5,
    memory_rounds=3,
    inflight_calls=1000,
)

QUICK = Config(
    quick=True,
    rounds=3,
    warmup=20,
    calls=60,
    loopback_calls=15,
    concurrency=(1, 10, 100, 1000),
    concurrency_rounds=1,
    concurrency_seconds=0.2,
    memory_rounds=1,
    inflight_calls=200,
)


# -- rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a row should reach. `kind`: which number is compared with `value`.

    "delta_max": subject - baseline <= value; "ratio_max": ratio <= value;
    "ratio_min": ratio >= value (throughput: higher is better); "value_min": the subject's own
    median >= value (an absolute floor, such as replays per second).
    """

    kind: Literal["delta_max", "ratio_max", "ratio_min", "value_min"]
    value: float
    text: str

    def met(self, ratio: float, delta: float, subject: float) -> bool:
        if self.kind == "delta_max":
            return delta <= self.value
        if self.kind == "ratio_max":
            return ratio <= self.value
        if self.kind == "value_min":
            return subject >= self.value
        return ratio >= self.value


@dataclass(frozen=True)
class RowSpec:
    """A row a suite promises to print, measured or not."""

    id: str
    title: str
    unit: str
    baseline: str  # what the ratio divides by
    target: Target | None = None


@dataclass(frozen=True)
class Stats:
    """One subject's figures over all rounds, in the row's unit."""

    median: float
    p99: float | None
    rounds: tuple[float, ...]  # each round's median, for the JSON

    @classmethod
    def of_rounds(
        cls, medians: Sequence[float], p99s: Sequence[float] | None = None, scale: float = 1.0
    ) -> Stats:
        return cls(
            median=statistics.median(medians) * scale,
            p99=statistics.median(p99s) * scale if p99s else None,
            rounds=tuple(m * scale for m in medians),
        )


@dataclass
class Row:
    spec: RowSpec
    item: int
    status: Status = "measured"
    subject: Stats | None = None
    baseline: Stats | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.subject is None or self.baseline is None or self.baseline.median == 0:
            return None
        return self.subject.median / self.baseline.median

    @property
    def delta(self) -> float | None:
        if self.subject is None or self.baseline is None:
            return None
        return self.subject.median - self.baseline.median

    @property
    def met(self) -> bool | None:
        target, ratio, delta = self.spec.target, self.ratio, self.delta
        if target is None or ratio is None or delta is None or self.subject is None:
            return None
        return target.met(ratio, delta, self.subject.median)

    def to_json(self) -> dict[str, Any]:
        s, b = self.subject, self.baseline
        return {
            "id": self.spec.id,
            "item": self.item,
            "title": self.spec.title,
            "unit": self.spec.unit,
            "status": self.status,
            "baseline_label": self.spec.baseline,
            "median": s.median if s else None,
            "p99": s.p99 if s else None,
            "round_medians": list(s.rounds) if s else [],
            "baseline_median": b.median if b else None,
            "baseline_p99": b.p99 if b else None,
            "baseline_round_medians": list(b.rounds) if b else [],
            "ratio": self.ratio,
            "delta": self.delta,
            "target": self.spec.target.text if self.spec.target else None,
            "met": self.met,
            "notes": self.notes,
            "extra": self.extra,
        }


# -- suites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """One numbered item of the benchmark: the rows it prints and how to measure them.

    `run` returns the rows it measured (any declared row it leaves out is reported as an
    error); `run=None` marks an item not measured yet: its rows print as "not yet measured".
    `needs` names optional modules; when one is missing, rows in `needs_rows` are skipped.
    """

    item: int
    title: str
    rows: tuple[RowSpec, ...]
    run: Callable[[Config], list[Row]] | None = None
    pending_reason: str = ""


def skipped(spec: RowSpec, item: int, missing: Sequence[str]) -> Row:
    """A row that needs optional (bench-only) packages this interpreter lacks."""
    names = " ".join(missing)
    note = f"skipped: needs {', '.join(missing)} (pip install {names})"
    return Row(spec, item, status="skipped", notes=[note], extra={"missing": list(missing)})


# -- timing -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `samples`, nearest-rank: no interpolation past the data."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def time_sync(fn: Callable[[], object], n: int) -> list[int]:
    """Nanoseconds per call, one sample per call."""
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


async def time_async(fn: Callable[[], Awaitable[object]], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        await fn()
        out[i] = clock() - t0
    return out


def _order(names: Sequence[str], round_no: int) -> list[str]:
    """Rotate, and reverse every other full rotation, so no subject always runs first or last
    nor always after the same one. (Reversing every other round instead undid the rotation for
    two subjects: the first one ran first in every round.)"""
    k = round_no % len(names)
    rotated = [*names[k:], *names[:k]]
    return rotated[::-1] if (round_no // len(names)) % 2 else rotated


def compare_sync(
    subjects: Mapping[str, Callable[[], object]], calls: int, rounds: int, warmup: int
) -> dict[str, Stats]:
    """Per-call latency of each subject in µs, over interleaved rounds."""
    for fn in subjects.values():
        time_sync(fn, warmup)
    medians: dict[str, list[float]] = {name: [] for name in subjects}
    p99s: dict[str, list[float]] = {name: [] for name in subjects}
    for r in range(rounds):
        for name in _order(list(subjects), r):
            gc.collect()
            samples = time_sync(subjects[name], calls)
            medians[name].append(statistics.median(samples))
            p99s[name].append(percentile(samples, 0.99))
    return {n: Stats.of_rounds(medians[n], p99s[n], scale=1e-3) for n in subjects}


async def compare_async(
    subjects: Mapping[str, Callable[[], Awaitable[object]]],
    calls: int,
    rounds: int,
    warmup: int,
) -> dict[str, Stats]:
    for fn in subjects.values():
        await time_async(fn, warmup)
    medians: dict[str, list[float]] = {name: [] for name in subjects}
    p99s: dict[str, list[float]] = {name: [] for name in subjects}
    for r in range(rounds):
        for name in _order(list(subjects), r):
            gc.collect()
            samples = await time_async(subjects[name], calls)
            medians[name].append(statistics.median(samples))
            p99s[name].append(percentile(samples, 0.99))
    return {n: Stats.of_rounds(medians[n], p99s[n], scale=1e-3) for n in subjects}


F = TypeVar("F")


class _PairedRounds(Generic[F]):
    """The bookkeeping of compare_paired_*: each round's call schedule (the subjects
    alternating, their order rotated by round) and samples, and the stats at the end."""

    def __init__(self, subjects: Mapping[str, F], calls: int) -> None:
        self._subjects = subjects
        self._calls = calls
        self._medians: dict[str, list[float]] = {name: [] for name in subjects}
        self._p99s: dict[str, list[float]] = {name: [] for name in subjects}

    def start(self, round_no: int) -> tuple[list[tuple[str, F]], dict[str, list[int]]]:
        gc.collect()
        order = [(name, self._subjects[name]) for name in _order(list(self._subjects), round_no)]
        return order * self._calls, {name: [] for name in self._subjects}

    def add(self, samples: Mapping[str, list[int]]) -> None:
        for name, taken in samples.items():
            self._medians[name].append(statistics.median(taken))
            self._p99s[name].append(percentile(taken, 0.99))

    def stats(self) -> dict[str, Stats]:
        return {
            n: Stats.of_rounds(self._medians[n], self._p99s[n], scale=1e-3) for n in self._subjects
        }


def compare_paired_sync(
    subjects: Mapping[str, Callable[[], object]], calls: int, rounds: int, warmup: int
) -> dict[str, Stats]:
    """compare_sync with the subjects alternating call by call within each round: paired
    samples, for calls that cross a network. The loopback server shares two cores with us,
    and its pace drifts within the tens of milliseconds a block of calls takes, which moved
    block-interleaved ratios by ±5 %; alternating, both sides see the same moments."""
    clock = time.perf_counter_ns
    for fn in subjects.values():
        time_sync(fn, warmup)
    paired = _PairedRounds(subjects, calls)
    for r in range(rounds):
        schedule, samples = paired.start(r)
        for name, fn in schedule:
            t0 = clock()
            fn()
            samples[name].append(clock() - t0)
        paired.add(samples)
    return paired.stats()


async def compare_paired_async(
    subjects: Mapping[str, Callable[[], Awaitable[object]]],
    calls: int,
    rounds: int,
    warmup: int,
) -> dict[str, Stats]:
    """compare_paired_sync on the event loop."""
    clock = time.perf_counter_ns
    for fn in subjects.values():
        await time_async(fn, warmup)
    paired = _PairedRounds(subjects, calls)
    for r in range(rounds):
        schedule, samples = paired.start(r)
        for name, fn in schedule:
            t0 = clock()
            await fn()
            samples[name].append(clock() - t0)
        paired.add(samples)
    return paired.stats()


@dataclass(frozen=True)
class LoadRound:
    """One closed-loop round at a fixed number of calls in flight."""

    throughput: float  # successful calls per second, wall clock
    latencies_ns: list[int]  # of the successful calls
    cpu_per_call_us: float  # this process's CPU time per call
    peak_in_flight: int
    errors: int = 0  # calls that raised (counted, never fatal to the run)
    first_error: str = ""


async def closed_loop(
    fn: Callable[[], Awaitable[object]],
    in_flight: int,
    duration: float,
    peak: Callable[[], int] | None = None,
) -> LoadRound:
    """`in_flight` workers call `fn` back to back for `duration` seconds; every call started
    is waited for, and counts. Time-bounded, so a slow level cannot stretch the run."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    errors: list[str] = []
    gc.collect()
    cpu0, t0 = time.process_time(), clock()
    stop_at = t0 + int(duration * 1e9)

    async def worker() -> None:
        while True:
            started = clock()
            try:
                await fn()
            except Exception as exc:  # a loaded machine can time calls out: count, go on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            else:
                latencies.append(clock() - started)
            if started >= stop_at:
                return

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall = (clock() - t0) / 1e9
    cpu = time.process_time() - cpu0
    calls = max(1, len(latencies) + len(errors))
    return LoadRound(
        len(latencies) / wall,
        latencies or [0],
        cpu / calls * 1e6,
        peak() if peak else 0,
        len(errors),
        errors[0] if errors else "",
    )


# -- output ---------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + (f" {unit}" if unit else "")


COLUMNS = ("#", "benchmark", "unit", "baseline", "baseline median", "median", "p99", "ratio",
           "Δ vs baseline", "target", "met?")  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    """One Markdown table: paste-able into an issue, readable in a terminal."""
    lines: list[list[str]] = []
    for row in rows:
        spec = row.spec
        if row.status == "measured":
            ratio = row.ratio
            met = row.met
            cells = [
                str(row.item),
                spec.title,
                spec.unit,
                spec.baseline,
                fmt(row.baseline.median if row.baseline else None),
                fmt(row.subject.median if row.subject else None),
                fmt(row.subject.p99 if row.subject else None),
                "—" if ratio is None else f"{ratio:.3f}x",
                fmt(row.delta),
                spec.target.text if spec.target else "—",
                "—" if met is None else ("yes" if met else "**NO**"),
            ]
        else:
            cells = [str(row.item), spec.title, spec.unit, spec.baseline, row.status]
            cells += ["", "", "", "", spec.target.text if spec.target else "—", "—"]
        lines.append(cells)
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [render(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [render(line) for line in lines]
    return "\n".join(out)
