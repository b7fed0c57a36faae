"""What the email adapters share: address handling and the status rules of sending mail.

An email API gives no idempotency key, so a message the provider may have queued must never go
to a second provider: only answers that say it was *not* taken are failed over.
"""

from __future__ import annotations

import re

EMAIL_RULES: tuple[tuple[str, str], ...] = (
    # A 5xx may come after the provider queued the mail (Mailgun users report sends behind 500s
    # and 502s): maybe sent, so never repeated elsewhere...
    ("5xx", "ambiguous"),
    # ...except the two that say nothing was done: unavailable (retry, then fail over) and an
    # endpoint this provider does not serve (a configuration matter: the next one may).
    ("503", "retryable"),
    ("501", "failover"),
)
"""Status rules of every email kind, on top of the default table (429 retried, 401/403 failed
over, other 4xx fatal)."""

_NAMED = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>]+)>\s*$")  # as the model checks it
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def split_address(address: str) -> tuple[str, str]:
    """(display name, bare address) of `Name <a@x.io>` or `a@x.io`; the name may be empty.

    Parsed the way the model validated it: email.utils.parseaddr reads an unquoted
    `Doe, John <j@x.io>` as the address "Doe"."""
    named = _NAMED.match(address)
    if named is None:
        return "", address.strip()
    name = named.group("name")
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name, named.group("address").strip()


def formatted(address: str) -> str:
    """`address` as one RFC 5322 mailbox, the name quoted when it holds specials (a comma would
    otherwise split it in the comma-separated lists the APIs take). Non-ASCII stays as is: the
    JSON and form APIs encode headers themselves."""
    name, bare = split_address(address)
    if not name:
        return bare
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{bare}>"
