"""`resilient providers ...`, `resilient chain ...` and `resilient status`: ops, live."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from resilient.config import load_settings
from resilient.errors import ResilientError
from resilient.gateway import Gateway
from resilient.ops import stores_for
from resilient.overrides import ProviderOverride, set_chain, set_provider
from resilient.units import parse_duration, parse_rate


def register(commands: Any) -> None:
    providers = commands.add_parser("providers", help="list providers, or change one live")
    _common(providers)
    verbs = providers.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every provider: config, overrides, live state")
    for verb, text in (
        ("enable", "put a provider back in rotation"),
        ("disable", "take a provider out of rotation"),
        ("open", "hold its breaker open: no calls reach it"),
        ("close", "hold its breaker closed: calls reach it whatever its health"),
        ("release", "let its breaker follow its health again"),
    ):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("provider")
        parser.add_argument("--reason", help="recorded with the change")
        if verb in ("enable", "disable"):
            parser.add_argument("--for", dest="duration", help="only for this long, e.g. 30m")
    limit = verbs.add_parser("limit", help="change its rate limit, e.g. 100/min (or 'config')")
    limit.add_argument("provider")
    limit.add_argument("rate")
    limit.add_argument("--reason")
    providers.set_defaults(handler=_providers)

    chain = commands.add_parser("chain", help="reorder a capability's chain live")
    _common(chain)
    chain.add_argument("capability")
    chain.add_argument("providers", nargs="*", help="the new order; none with --reset")
    chain.add_argument("--reset", action="store_true", help="back to the configured order")
    chain.add_argument("--reason")
    chain.set_defaults(handler=_chain)

    status = commands.add_parser("status", help="what every running process sees now")
    _common(status)
    status.set_defaults(handler=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the gateway config (default: $RESILIENT_CONFIG)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _gateway(args: argparse.Namespace) -> Gateway:
    """A gateway for its config and stores only: no ops loop, no replay of its own."""
    return Gateway(load_settings(args.config), ops=False, background_replay=False)


def _providers(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    store, _ = stores_for(gateway.settings)
    try:
        if args.verb == "list":
            state = store.load()
            rows = {
                name: {
                    "kind": rt.settings.kind,
                    "configured": {
                        "enabled": rt.settings.enabled,
                        "rate_limit": str(rt.settings.rate_limit or "none"),
                    },
                    "override": vars(state.providers.get(name, ProviderOverride())),
                }
                for name, rt in gateway.providers.items()
            }
            return _print(args, rows)
        gateway.provider(args.provider)  # an unknown name is an error, not a silent no-op
        reason = getattr(args, "reason", None)
        if args.verb in ("enable", "disable"):
            until = None
            if args.duration:
                until = time.time() + parse_duration(args.duration)
            change = set_provider(
                args.provider, args.verb, reason, enabled=args.verb == "enable", until=until
            )
        elif args.verb in ("open", "close", "release"):
            held = {"open": "open", "close": "closed", "release": None}[args.verb]
            change = set_provider(args.provider, f"breaker {args.verb}", reason, breaker=held)
        else:
            rate = None if args.rate == "config" else args.rate
            if rate is not None:
                parse_rate(rate)  # a malformed rate is refused here, not in every process
            change = set_provider(args.provider, "limit", reason, rate_limit=rate)
        state = store.update(change)
        return _print(args, {"version": state.version, "change": state.log[-1]})
    except ValueError as exc:
        raise ResilientError(str(exc)) from exc
    finally:
        gateway.close()


def _chain(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    store, _ = stores_for(gateway.settings)
    try:
        gateway.chain(args.capability)  # unknown capability: a clear error
        if args.reset:
            change = set_chain(args.capability, None, args.reason)
        else:
            if not gateway.chain_fits(args.capability, args.providers):
                raise ResilientError(
                    f"{args.capability}: a chain needs distinct, configured providers of its "
                    f"kind; got {', '.join(args.providers) or 'none'}"
                )
            change = set_chain(args.capability, list(args.providers), args.reason)
        state = store.update(change)
        return _print(args, {"version": state.version, "change": state.log[-1]})
    finally:
        gateway.close()


def _status(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    store, board = stores_for(gateway.settings)
    try:
        state = store.load()
        report = {
            "processes": board.read(),
            "overrides": {
                "version": state.version,
                "providers": {k: vars(v) for k, v in state.providers.items()},
                "chains": state.chains,
                "recent_changes": state.log[-10:],
            },
            "queue": gateway.status()["queue"] if gateway.settings.capabilities else None,
        }
        if args.json:
            return _print(args, report)
        _print_status(report)
        return 0
    finally:
        gateway.close()


def _print_status(report: dict[str, Any]) -> None:
    processes = report["processes"]
    if not processes:
        print("no running process has published its status in the last 10 s")
    for process, status in processes.items():
        print(f"{process}  ({status.get('source')})")
        for name, p in status.get("providers", {}).items():
            p95 = p.get("latency_p95")
            print(
                f"  {name:<14} {'on ' if p['enabled'] else 'OFF'} breaker={p['breaker']:<9} "
                f"fail={p['failure_rate']:.1%} slow={p['slow_call_rate']:.1%} "
                f"p95={'-' if p95 is None else f'{p95 * 1000:.0f}ms'} "
                f"in_flight={p['in_flight']} limiter_wait={p['limiter_wait']}s"
            )
        queue = status.get("queue")
        if queue:
            print(f"  queue: {queue}")
    for change in report["overrides"]["recent_changes"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change["at"]))
        details = {k: v for k, v in change.items() if k not in ("at", "who", "what", "reason")}
        print(f"{when}  {change['who']}: {change['what']} {details} ({change['reason'] or '-'})")


def _print(args: argparse.Namespace, data: Any) -> int:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else data)
    return 0
