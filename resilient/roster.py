"""Which providers a gateway has and in what order each capability tries them, live.

The config says it first; ops' overrides then switch providers off and on, hold breakers, change
rate limits and reorder chains, and a reload swaps in new providers. One object owns that state,
so a change is made in one place, under one lock, and calls read it without one: `chains` and
`providers` are replaced whole, never changed in place.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from resilient import registry
from resilient.overrides import OverrideState, ProviderOverride
from resilient.runtime import ProviderRuntime
from resilient.secrets import redact
from resilient.settings import GatewaySettings, ProviderSettings
from resilient.units import parse_rate

logger = logging.getLogger("resilient")

BuildRuntime = Callable[[ProviderSettings], ProviderRuntime]


class Roster:
    """The providers (`providers`), each capability's chain (`chains`) and the overrides in
    force (`overrides`), for `settings`."""

    def __init__(self, settings: GatewaySettings, build: BuildRuntime) -> None:
        self.settings = settings
        self._build = build
        self._lock = threading.Lock()
        self.providers: Mapping[str, ProviderRuntime] = {
            name: build(ps) for name, ps in settings.providers.items()
        }
        self.chains: Mapping[str, tuple[ProviderRuntime, ...]] = {
            name: tuple(self.providers[p] for p in cap.chain)
            for name, cap in settings.capabilities.items()
        }
        self.overrides = OverrideState()
        self._next_lapse = float("inf")

    def capability_kind(self, capability: str) -> str:
        """The kind of a capability's facade: its providers' ("http" providers fit any)."""
        kinds = {registry.get(rt.settings.kind).capability for rt in self.chains[capability]}
        return next(iter(kinds - {"http"}), "http")

    def chain_fits(self, capability: str, names: Sequence[str]) -> bool:
        """A chain override may only name known providers whose kind serves the capability."""
        if not names or len(set(names)) != len(names):
            return False
        wanted = self.capability_kind(capability)
        return all(
            n in self.providers
            and registry.get(self.providers[n].settings.kind).capability in (wanted, "http")
            for n in names
        )

    def overrides_lapse(self) -> bool:
        """Whether a time-limited override has run out since the overrides were applied."""
        return time.time() >= self._next_lapse

    def apply(self, state: OverrideState) -> None:
        """Each provider's enabled flag, breaker hold and rate limit, then every chain, as
        `state` says (as configured where it says nothing); a chain override that does not fit
        is ignored."""
        with self._lock:
            self._apply(state)

    def _apply(self, state: OverrideState) -> None:
        now = time.time()
        for name, rt in self.providers.items():
            override = state.providers.get(name, ProviderOverride())
            enabled = override.enabled_now(now)
            rt.enabled = rt.settings.enabled if enabled is None else enabled
            rt.breaker.hold(override.breaker)
            rate = (
                parse_rate(override.rate_limit) if override.rate_limit else rt.settings.rate_limit
            )
            if rt.limiter.rate != rate:
                rt.limiter = rt.make_limiter(rate)
        chains = {}
        for capability, configured in self.settings.capabilities.items():
            names = state.chains.get(capability)
            if names is not None and not self.chain_fits(capability, names):
                logger.warning("ops: ignoring chain override %s for %s", names, capability)
                names = None
            chains[capability] = tuple(self.providers[n] for n in names or configured.chain)
        self.chains = chains
        if state.version != self.overrides.version:
            for change in state.log[len(self.overrides.log) :][-20:]:
                logger.info("ops: %s", redact(json.dumps(change, sort_keys=True)))
        self.overrides = state
        self._next_lapse = min(
            (o.until for o in state.providers.values() if o.until is not None and o.until > now),
            default=float("inf"),
        )

    def reload(self, settings: GatewaySettings) -> tuple[list[str], list[ProviderRuntime]]:
        """Keep the runtimes whose settings are unchanged, build the others and swap them in
        with the overrides applied again. Returns the names built and the runtimes retired
        (for the caller to close once no call can pick them up)."""
        kept = {
            n: rt for n, rt in self.providers.items() if settings.providers.get(n) == rt.settings
        }
        providers = {
            name: kept.get(name) or self._build(ps) for name, ps in settings.providers.items()
        }
        with self._lock:
            retired = [rt for n, rt in self.providers.items() if kept.get(n) is not rt]
            self.providers = providers
            self.settings = settings
            self._apply(self.overrides)  # rebuilds the chains on the new config
        return sorted(set(providers) - set(kept)), retired
