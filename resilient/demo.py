"""`resilient demo`: an outage of the primary provider under steady traffic, shown live.

Everything runs in-process on the embedded default: the provider simulator on 127.0.0.1, a
gateway built from a real config file, no Redis, no keys. The demo checks its own story and
exits non-zero if any call was lost or the breaker did not open and close again.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from resilient.gateway import Gateway
from resilient.telemetry import (
    AttemptFinished,
    BreakerChanged,
    CallFinished,
    Event,
    FailedOver,
    RetryScheduled,
)
from resilient.testing import Fault, SimRequest, SimResponse, Simulator

CONFIG = """\
# The demo's config: two interchangeable HTTP providers, primary first, for API calls; and
# notifications, which only the primary sends: they wait out its outage in the spool.
[gateway]
spool_path = "{spool}"

[providers.primary]
kind = "http"
base_url = "{base}/primary"
timeout = {{ connect = "500ms", attempt = "1s" }}
retry = {{ attempts = 2, backoff = "50ms..200ms" }}

[providers.primary.breaker]
failure_ratio = 0.5
window = "4s"
min_calls = 8
open_for = "1s"
open_for_max = "4s"
half_open_probes = 2

[providers.secondary]
kind = "http"
base_url = "{base}/secondary"
timeout = {{ connect = "500ms", attempt = "1s" }}
retry = {{ attempts = 2, backoff = "50ms..200ms" }}

[capabilities.http]
chain = ["primary", "secondary"]
timeout = "5s"

[capabilities.notify]
chain = ["primary"]
defer = true
deadline = "10m"
"""

NOTE_EVERY = 4  # one notification for every four API calls
DRAIN_WAIT = 30.0  # seconds the demo waits, after the traffic, for parked notifications

BREAKER_STYLE = {"closed": "green", "open": "bold red", "half-open": "yellow"}


@dataclass(frozen=True)
class Timeline:
    """Seconds: healthy until `outage_start`, primary down until `outage_end`, then recovery."""

    outage_start: float
    outage_end: float
    total: float
    rate: float  # calls per second

    @classmethod
    def scaled(cls, quick: bool) -> Timeline:
        return cls(2.0, 5.0, 9.0, 20.0) if quick else cls(5.0, 13.0, 22.0, 25.0)


@dataclass
class ProviderStats:
    served: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    retries: int = 0
    failovers: int = 0
    breaker: str = "closed"


@dataclass
class Story:
    """Everything the display and the summary show, fed by gateway events."""

    started: float = field(default_factory=time.monotonic)
    providers: dict[str, ProviderStats] = field(default_factory=dict)
    calls: int = 0
    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    notes_sent: int = 0
    replayed: int = 0
    latencies: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    notes_effects: collections.Counter[str | None] = field(default_factory=collections.Counter)

    @property
    def notes_lost(self) -> int:
        return self.notes_sent - len(self.notes_effects)

    @property
    def notes_duplicated(self) -> int:
        return sum(1 for count in self.notes_effects.values() if count > 1)

    def at(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def stats(self, provider: str) -> ProviderStats:
        return self.providers.setdefault(provider, ProviderStats())

    def note(self, line: str) -> None:
        self.log.append(f"{self.at()}  {line}")

    def on_event(self, event: Event) -> None:
        if isinstance(event, AttemptFinished):
            stats = self.stats(event.provider)
            stats.attempts += 1
            stats.failed_attempts += event.attempt.outcome.value != "ok"
        elif isinstance(event, RetryScheduled):
            self.stats(event.provider).retries += 1
        elif isinstance(event, FailedOver):
            self.stats(event.provider).failovers += 1
        elif isinstance(event, BreakerChanged):
            self.stats(event.provider).breaker = event.new
            what = {
                "open": f"breaker OPEN for {event.open_for:g}s: calls go straight to the fallback",
                "half-open": "breaker half-open: probing with a bounded number of calls",
                "closed": "breaker closed: back in rotation",
            }[event.new]
            self.note(f"{event.provider}: {what}")
        elif isinstance(event, CallFinished):
            if event.replay_of is not None:
                self.replayed += event.status == "delivered"
                return
            self.calls += 1
            self.latencies.append(event.latency)
            if event.status == "delivered" and event.provider:
                self.delivered += 1
                self.stats(event.provider).served += 1
            elif event.status == "deferred":
                self.deferred += 1
            else:
                self.failed += 1


def _render(story: Story, phase: str, order: list[str]) -> Group:
    table = Table(title="resilient demo: primary outage under steady traffic", expand=False)
    for column in ("provider", "served", "attempts", "failed attempts", "retries", "fail-overs"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    table.add_column("breaker", justify="center")
    for name in order:
        s = story.stats(name)
        table.add_row(
            name,
            str(s.served),
            str(s.attempts),
            str(s.failed_attempts),
            str(s.retries),
            str(s.failovers),
            Text(s.breaker, style=BREAKER_STYLE.get(s.breaker, "")),
        )
    header = Text(
        f"{story.at()}  {phase}   calls {story.calls}  delivered {story.delivered}  "
        f"parked {story.deferred}  failed {story.failed}"
    )
    return Group(header, table, Text("\n".join(story.log[-8:]), style="dim"))


async def _traffic(gw: Gateway, timeline: Timeline, story: Story) -> None:
    """Open-loop traffic: calls start on a fixed schedule whatever the latency (like users)."""
    interval = 1.0 / timeline.rate
    tasks: set[asyncio.Task[object]] = set()
    for n in itertools.count():
        due = story.started + n * interval
        if due - story.started >= timeline.total:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        calls = [gw.http.request("POST", "/v1/messages", json={"n": n})]
        if n % NOTE_EVERY == 0:
            key = {"Idempotency-Key": f"note-{n}"}
            calls.append(gw.notify.request("POST", "/v1/notify", json={"n": n}, headers=key))
            story.notes_sent += 1
        for call in calls:
            task = asyncio.create_task(call)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run(console: Console, timeline: Timeline, live_display: bool) -> Story:
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        for prefix in ("/primary", "/secondary"):
            sim.route("POST", f"{prefix}/v1/messages", _accepting(prefix[1:]))
        sim.route("POST", "/primary/v1/notify", _accepting("note"))
        config = Path(tmp) / "resilient.toml"
        config.write_text(CONFIG.format(base=sim.base_url, spool=Path(tmp) / "spool.db"))
        story = Story()
        async with Gateway.from_config(config) as gw:
            gw.events.subscribe(story.on_event)
            sim.inject(
                Fault.status(503),
                prefix="/primary",
                after=timeline.outage_start,
                duration=timeline.outage_end - timeline.outage_start,
            )
            story.note(f"traffic starts: {timeline.rate:g} calls/s through [primary, secondary]")
            traffic = asyncio.create_task(_traffic(gw, timeline, story))
            order = ["primary", "secondary"]
            phase_notes = {"outage": False, "recovered": False}
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while not traffic.done():
                    elapsed = time.monotonic() - story.started
                    phase = "healthy"
                    if timeline.outage_start <= elapsed < timeline.outage_end:
                        phase = "OUTAGE: primary answers 503"
                        if not phase_notes["outage"]:
                            phase_notes["outage"] = True
                            story.note("primary starts failing (503 on every request)")
                    elif elapsed >= timeline.outage_end:
                        phase = "primary recovered"
                        if not phase_notes["recovered"]:
                            phase_notes["recovered"] = True
                            story.note("primary recovers")
                    if live_display:
                        live.update(_render(story, phase, order), refresh=True)
                    await asyncio.wait({traffic}, timeout=0.125)
                await traffic
                drain_until = time.monotonic() + DRAIN_WAIT
                while _notes_delivered(sim) < story.notes_sent < 10**9:
                    if time.monotonic() > drain_until:
                        break
                    if live_display:
                        live.update(_render(story, "replaying parked notifications", order))
                        live.refresh()
                    await asyncio.sleep(0.125)
                story.note(
                    f"{story.deferred} notifications parked during the outage, "
                    f"{story.replayed} replayed after recovery"
                )
                live.update(_render(story, "done", order), refresh=True)
        story.stats("primary")  # present in the summary even if it never served
        for prefix in ("primary", "secondary"):
            received = len(sim.requests(prefix=f"/{prefix}"))
            story.note(f"simulator: {prefix} received {received} requests")
        story.notes_effects = collections.Counter(
            r.idempotency_key for r in sim.effects(path="/primary/v1/notify")
        )
    return story


def _notes_delivered(sim: Simulator) -> int:
    """Distinct notifications that took effect at the provider (duplicates counted once)."""
    return len({r.idempotency_key for r in sim.effects(path="/primary/v1/notify")})


def _accepting(provider: str) -> Callable[[SimRequest], SimResponse]:
    """A simulated provider endpoint that accepts every message with a fresh id."""
    ids = itertools.count(1)

    def accept(request: SimRequest) -> SimResponse:
        return SimResponse.json({"id": f"{provider}-{next(ids)}", "accepted": True}, status=202)

    return accept


def _summary(console: Console, story: Story) -> None:
    table = Table(title="summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    ordered = sorted(story.latencies)
    p50 = statistics.median(ordered) if ordered else 0.0
    p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else 0.0
    rows = [
        ("calls", story.calls),
        ("delivered", story.delivered),
        ("parked", story.deferred),
        ("replayed after recovery", story.replayed),
        ("failed", story.failed),
        ("served by primary", story.stats("primary").served),
        ("served by secondary", story.stats("secondary").served),
        ("retries", sum(s.retries for s in story.providers.values())),
        ("fail-overs", sum(s.failovers for s in story.providers.values())),
        ("latency p50", f"{p50 * 1000:.1f} ms"),
        ("latency p99", f"{p99 * 1000:.1f} ms"),
        ("notifications sent", story.notes_sent),
        ("lost (counted at the simulator)", story.notes_lost),
        ("duplicates (counted at the simulator)", story.notes_duplicated),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    console.print(Text("\n".join(story.log)))


def run(*, quick: bool = False, console: Console | None = None) -> int:
    """Run the demo; 0 when every call was delivered and the breaker opened and closed again."""
    console = console or Console()
    story = asyncio.run(_run(console, Timeline.scaled(quick), console.is_terminal))
    _summary(console, story)
    opened = any("breaker OPEN" in line for line in story.log)
    closed_after = any("breaker closed" in line for line in story.log)
    ok = (
        story.failed == 0
        and story.calls > 0
        and opened
        and closed_after
        and story.deferred > 0
        and story.notes_lost == 0
        and story.notes_duplicated == 0
    )
    console.print(
        "[green]story complete: no call lost, breaker opened and closed again, "
        "parked notifications replayed exactly once[/green]"
        if ok
        else "[red]the demo did not go as expected (see above)[/red]"
    )
    return 0 if ok else 1
