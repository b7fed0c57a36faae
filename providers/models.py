"""The provider-neutral request models, one per capability (django-anymail style).

Each validates itself on construction: a request that can never succeed raises InvalidRequest
before anything is sent or parked. Each round-trips through a JSON-safe payload, which is
what a deferred request stores.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from resilient.errors import InvalidRequest

_ADDRESS = re.compile(r"^[^@\s<>\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_NAMED = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>]+)>\s*$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}\Z")  # \Z: `$` would let a trailing newline through
_CURRENCY = re.compile(r"^[a-z]{3}\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A lone surrogate (JSON's "\ud800", bytes decoded with errors="surrogateescape" as file names and
# argv are) is a valid str but no text UTF-8 can encode: a request holding one would fail later,
# mid-send or mid-park, with UnicodeEncodeError.
_SURROGATE = re.compile("[\ud800-\udfff]")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

MAX_EMAIL_BYTES = 25 * 1024 * 1024  # what the major email APIs accept, attachments included
MAX_SMS_CHARS = 1600  # ten concatenated segments
MAX_POST_CHARS = 5000
MAX_METADATA_ITEMS = 50

M = TypeVar("M", bound="_Model")


def _fail(model: str, field_name: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{model}.{field_name}: {problem}")


def _encodable(model: str, field_name: str, value: str) -> str:
    """Every text field's first check: text that UTF-8 can encode, as every wire format needs."""
    if _SURROGATE.search(value):
        raise _fail(model, field_name, "contains a lone surrogate, which UTF-8 cannot encode")
    return value


def _address(model: str, field_name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(model, field_name, f"expected an email address, got {type(value).__name__}")
    _encodable(model, field_name, value)
    named = _NAMED.match(value)
    bare = named.group("address") if named else value
    if _CONTROL.search(value) or "\n" in value or "\r" in value or not _ADDRESS.match(bare):
        raise _fail(model, field_name, f"not a valid email address: {value[:80]!r}")
    return value


def _sequence(model: str, field_name: str, value: object, items: str) -> tuple[object, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _fail(model, field_name, f"expected a list of {items}")
    return tuple(value)


def _addresses(model: str, field_name: str, value: object) -> tuple[str, ...]:
    items = _sequence(model, field_name, value, "email addresses")
    return tuple(_address(model, field_name, item) for item in items)


def _text(model: str, field_name: str, value: object, *, limit: int, single_line: bool) -> str:
    if not isinstance(value, str):
        raise _fail(model, field_name, f"expected text, got {type(value).__name__}")
    _encodable(model, field_name, value)
    if _CONTROL.search(value) or (single_line and ("\n" in value or "\r" in value)):
        raise _fail(model, field_name, "contains control characters")
    if len(value) > limit:
        raise _fail(model, field_name, f"longer than {limit} characters")
    return value


def _mapping(model: str, field_name: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _fail(model, field_name, "expected a mapping of text to text")
    if len(value) > MAX_METADATA_ITEMS:
        raise _fail(model, field_name, f"more than {MAX_METADATA_ITEMS} entries")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, (str, int, float, bool)):
            raise _fail(model, field_name, "expected a mapping of text to text")
        if _CONTROL.search(_encodable(model, field_name, str(item))):
            raise _fail(model, field_name, "a value contains control characters")
        out[_text(model, field_name, key, limit=200, single_line=True)] = str(item)
    return out


def _key(model: str, value: object) -> str | None:
    if value is None:
        return None
    return _text(model, "idempotency_key", value, limit=255, single_line=True) or None


class _Model:
    capability: ClassVar[str]

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_payload(cls: type[M], payload: Mapping[str, Any]) -> M:
        return cls(**payload)


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        _text("Attachment", "filename", self.filename, limit=255, single_line=True)
        if not isinstance(self.content, (bytes, bytearray)):
            raise _fail("Attachment", "content", "expected bytes")
        _text("Attachment", "content_type", self.content_type, limit=255, single_line=True)


@dataclass(frozen=True, slots=True)
class Email(_Model):
    """One message to send. At least one of `text` and `html`."""

    capability: ClassVar[str] = "email"
    sender: str
    to: Sequence[str]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None  # the logical operation's id; generated when absent

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "sender", _address("Email", "sender", self.sender))
        s(self, "to", _addresses("Email", "to", self.to))
        s(self, "cc", _addresses("Email", "cc", self.cc))
        s(self, "bcc", _addresses("Email", "bcc", self.bcc))
        if not self.to:
            raise _fail("Email", "to", "at least one recipient is required")
        if self.reply_to is not None:
            _address("Email", "reply_to", self.reply_to)
        _text("Email", "subject", self.subject, limit=998, single_line=True)
        if self.text is None and self.html is None:
            raise _fail("Email", "text", "give text, html, or both")
        for name in ("text", "html"):
            value = getattr(self, name)
            if value is not None:
                _text("Email", name, value, limit=MAX_EMAIL_BYTES, single_line=False)
        _sequence("Email", "attachments", self.attachments, "attachments")
        attachments = tuple(self.attachments)
        if any(not isinstance(a, Attachment) for a in attachments):
            raise _fail("Email", "attachments", "expected Attachment objects")
        s(self, "attachments", attachments)
        headers = _mapping("Email", "headers", self.headers)
        if any(not _HEADER_NAME.match(name) for name in headers):
            raise _fail("Email", "headers", "a header name has characters headers cannot carry")
        if any("\n" in v or "\r" in v for v in headers.values()):
            raise _fail("Email", "headers", "a header value spans lines")
        s(self, "headers", headers)
        s(
            self,
            "tags",
            tuple(
                _text("Email", "tags", t, limit=128, single_line=True)
                for t in _sequence("Email", "tags", self.tags, "tags")
            ),
        )
        s(self, "metadata", _mapping("Email", "metadata", self.metadata))
        s(self, "idempotency_key", _key("Email", self.idempotency_key))
        size = sum(len(a.content) for a in attachments) + sum(  # bytes on the wire, not chars
            len(part.encode()) for part in (self.text or "", self.html or "")
        )
        if size > MAX_EMAIL_BYTES:
            raise _fail("Email", "attachments", f"message larger than {MAX_EMAIL_BYTES} bytes")

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["attachments"] = [
            {
                "filename": a.filename,
                "content_b64": base64.b64encode(a.content).decode(),
                "content_type": a.content_type,
            }
            for a in self.attachments
        ]
        for name in ("to", "cc", "bcc", "tags"):
            payload[name] = list(payload[name])
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Email:
        data = dict(payload)
        data["attachments"] = [
            Attachment(a["filename"], base64.b64decode(a["content_b64"]), a["content_type"])
            for a in data.get("attachments", ())
        ]
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Sms(_Model):
    """A text message, by SMS or WhatsApp, to an E.164 number."""

    capability: ClassVar[str] = "sms"
    to: str
    body: str
    sender: str | None = None  # a number or sender id; the provider's default when None
    channel: Literal["sms", "whatsapp"] = "sms"
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.to, str) or not _E164.match(self.to):
            raise _fail("Sms", "to", f"expected an E.164 number like +15550100, got {self.to!r}")
        body = _text("Sms", "body", self.body, limit=MAX_SMS_CHARS, single_line=False)
        if not body.strip():
            raise _fail("Sms", "body", "empty message")
        if self.sender is not None:
            _text("Sms", "sender", self.sender, limit=32, single_line=True)
        if self.channel not in ("sms", "whatsapp"):
            raise _fail("Sms", "channel", "expected 'sms' or 'whatsapp'")
        object.__setattr__(self, "idempotency_key", _key("Sms", self.idempotency_key))


@dataclass(frozen=True, slots=True)
class Charge(_Model):
    """A payment: `amount` in the currency's minor units (cents)."""

    capability: ClassVar[str] = "payments"
    amount: int
    currency: str
    payment_method: str
    idempotency_key: str | None = None  # generated when absent; the same on every retry
    customer: str | None = None
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise _fail(
                "Charge",
                "amount",
                f"expected a positive whole number of minor units, got {self.amount!r}",
            )
        if self.amount > 99_999_999_99:
            raise _fail("Charge", "amount", "larger than any processor accepts")
        if not isinstance(self.currency, str) or not _CURRENCY.match(self.currency.lower()):
            raise _fail(
                "Charge",
                "currency",
                f"expected a 3-letter ISO code like 'usd', got {self.currency!r}",
            )
        object.__setattr__(self, "currency", self.currency.lower())
        _text("Charge", "payment_method", self.payment_method, limit=255, single_line=True)
        if not self.payment_method:
            raise _fail("Charge", "payment_method", "required")
        for name in ("customer", "description"):
            value = getattr(self, name)
            if value is not None:
                _text("Charge", name, value, limit=1000, single_line=name == "customer")
        object.__setattr__(self, "metadata", _mapping("Charge", "metadata", self.metadata))
        object.__setattr__(self, "idempotency_key", _key("Charge", self.idempotency_key))


@dataclass(frozen=True, slots=True)
class Post(_Model):
    """A social post on the account named `account` in config."""

    capability: ClassVar[str] = "social"
    account: str
    text: str
    link: str | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _text("Post", "account", self.account, limit=100, single_line=True)
        text = _text("Post", "text", self.text, limit=MAX_POST_CHARS, single_line=False)
        if not text.strip():
            raise _fail("Post", "text", "empty post")
        if self.link is not None and (
            not isinstance(self.link, str)
            or not re.match(r"^https?://\S+\Z", _encodable("Post", "link", self.link))
            or _CONTROL.search(self.link)
        ):
            raise _fail("Post", "link", f"expected an http(s) URL, got {self.link!r}")
        object.__setattr__(self, "idempotency_key", _key("Post", self.idempotency_key))
