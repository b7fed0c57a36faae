"""The ledger's state machine, without I/O: what one operation id may do next.

    (none) | FAILED ──claim──▶ CLAIMED(owner, token, provider, lease)
    CLAIMED ──move(token)──▶ CLAIMED(next provider)      durable before its first byte
    CLAIMED ──settle(token)──▶ DELIVERED | FAILED | AMBIGUOUS | DEFERRED(deferral id)
    CLAIMED, lease over or owner dead  =  AMBIGUOUS on its provider (never free to go elsewhere)
    AMBIGUOUS ──claim(expect=token)──▶ CLAIMED           a caller that may resolve it
    DEFERRED ──claim(replay_of=id)──▶ CLAIMED             only the replay of that parked request

A claim moves to provider None just before its request is parked: if its holder dies then, the
request may be in the queue, so only a replay may take the claim over.
    DELIVERED: final.

A claim is a fencing token: a holder whose claim was taken over can no longer write. Both
stores (SQLite, Redis) apply these functions inside one transaction; neither has rules of its
own.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

CLAIMED: Final = "claimed"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
AMBIGUOUS: Final = "ambiguous"
DEFERRED: Final = "deferred"
State = Literal["claimed", "delivered", "failed", "ambiguous", "deferred"]

DEFAULT_TTL = 7 * 86400.0  # longer than any deferral deadline a sane config sets
OWNER: Final = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""This process, as a claim names it: a restarted process (even with the same pid) is another."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    state: State
    provider: str | None  # who has (or may have) acted; None before any provider was named
    at: float  # wall-clock time the claim named its provider: a lookup searches from there
    token: str = ""  # the claim's fencing token, kept by its outcome
    owner: str = ""  # the process holding a claim
    lease_until: float = 0.0  # wall-clock end of a claim's lease
    message_id: str | None = None  # the provider's id for what it did (delivered)
    deferral_id: str | None = None  # the parked request (deferred)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEntry:
        return cls(**data)


@dataclass(slots=True)
class Claim:
    """Ask for operation `operation_id`, first on `provider`, for `lease` seconds.

    `expect`: the token of an AMBIGUOUS entry (or a stale claim) the caller takes over.
    `replay_of`: the deferral id of the parked request being replayed."""

    operation_id: str
    provider: str | None
    lease: float
    expect: str | None = None
    replay_of: str | None = None


@dataclass(slots=True)
class Settle:
    """Write what became of a claim (or, with state CLAIMED, the provider it moves on to)."""

    operation_id: str
    token: str
    state: State
    provider: str | None
    message_id: str | None = None
    deferral_id: str | None = None


@dataclass(frozen=True, slots=True)
class Granted:
    """A claim's answer: `owned` with its token, or the entry that stands in the way."""

    owned: bool
    entry: LedgerEntry


LedgerCommand = Claim | Settle


def owner_gone(owner: str) -> bool:
    """Whether the process named by a claim is known to be dead (a process on this host only:
    on another host, its lease says when)."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or owner == OWNER:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # our pid, another nonce: this is a restart of that process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def visible(
    entry: LedgerEntry, now: float, gone: Callable[[str], bool] = owner_gone
) -> LedgerEntry:
    """The entry as callers must read it: a claim whose holder is gone is AMBIGUOUS on its
    provider (on None: it may have been parked)."""
    if entry.state == CLAIMED and (entry.lease_until <= now or gone(entry.owner)):
        return replace(entry, state=AMBIGUOUS)
    return entry


def claim(
    current: LedgerEntry | None,
    want: Claim,
    now: float,
    gone: Callable[[str], bool] = owner_gone,
) -> Granted:
    """The claim `want` against `current`: a new CLAIMED entry to write when granted."""
    seen = None if current is None else visible(current, now, gone)
    if seen is not None:
        free = seen.state == FAILED
        taken_over = (
            want.expect is not None and want.expect == seen.token and (seen.state == AMBIGUOUS)
        )
        replayed = want.replay_of is not None and (
            (seen.state == DEFERRED and seen.deferral_id == want.replay_of)
            or (seen.state == AMBIGUOUS and seen.provider is None)
        )
        if not (free or taken_over or replayed):
            return Granted(False, seen)
    entry = LedgerEntry(
        CLAIMED,
        want.provider,
        now,
        token=uuid.uuid4().hex,
        owner=OWNER,
        lease_until=now + want.lease,
    )
    return Granted(True, entry)


def settle(current: LedgerEntry | None, write: Settle, now: float) -> LedgerEntry | None:
    """The entry after `write`, or None when the writer no longer holds the claim (fenced)."""
    if current is None or current.state != CLAIMED or current.token != write.token:
        return None
    return replace(
        current,
        state=write.state,
        provider=write.provider,
        at=now if write.state == CLAIMED else current.at,  # an outcome keeps the send's time
        message_id=write.message_id,
        deferral_id=write.deferral_id,
    )


def apply(
    current: LedgerEntry | None, command: LedgerCommand, now: float
) -> tuple[LedgerEntry | None, Granted | LedgerEntry | None]:
    """(the entry to store, or None to leave it as it is; the answer for the caller: a Claim's
    Granted, a Settle's written entry or None when fenced off)."""
    if isinstance(command, Claim):
        granted = claim(current, command, now)
        return (granted.entry if granted.owned else None), granted
    after = settle(current, command, now)
    return after, after
