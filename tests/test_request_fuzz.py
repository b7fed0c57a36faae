"""Request payloads fuzzed in both directions, through a gateway with every capability.

Bad input (wrong types, oversized bodies, invalid addresses and numbers, control characters,
lone surrogates, NaN or negative amounts, bad currencies, malformed chats) raises InvalidRequest
naming the field, before anything is sent or parked: every provider is down meanwhile, so a
payload that slipped through would reach the simulator and, for deferring capabilities, park in
the spool.
Valid non-ASCII input is accepted and arrives intact at the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import Charge, Email, Post, Sms
from providers.llm.models import ChatRequest
from providers.models import MAX_EMAIL_BYTES, MAX_POST_CHARS, MAX_SMS_CHARS, Attachment
from queues.backend import EmbeddedBackend
from resilient.config import settings_from_mapping
from resilient.errors import InvalidRequest
from resilient.gateway import Gateway
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount

PREFIXES = ("/sendgrid", "/twilio", "/stripe", "/mastodon", "/openai")
VALID: dict[str, dict[str, Any]] = {
    "email": {
        "sender": "no-reply@example.com",
        "to": ["ada@example.com"],
        "subject": "Hi",
        "text": "hi",
    },
    "sms": {"to": "+15550100", "body": "code 1234"},
    "payments": {"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"},
    "social": {"account": "brand-mastodon", "text": "We're back"},
    "llm": {"messages": [{"role": "user", "content": "hi"}], "model": "fast"},
}
MODELS: dict[str, Any] = {"email": Email, "sms": Sms, "payments": Charge, "social": Post}


@dataclass
class Rig:
    gw: Gateway
    sim: Simulator

    def footprint(self) -> tuple[int, dict[str, float | int]]:
        """What the gateway has done so far: requests at the simulator, the spool's counts."""
        backend = self.gw.deferral
        assert isinstance(backend, EmbeddedBackend)
        stats = backend.spool.stats()
        return len(self.sim.requests()), {k: stats[k] for k in ("ready", "leased", "dead")}

    @contextlib.contextmanager
    def all_down(self) -> Iterator[None]:
        """Every provider answers 503: a payload that passed validation would be sent, and
        (email, SMS, posts) parked."""
        faults = [self.sim.inject(Fault.status(503), prefix=prefix) for prefix in PREFIXES]
        try:
            yield
        finally:
            for fault in faults:
                fault.clear()


@pytest.fixture(scope="module")
def rig(simulator_server: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One gateway for the module (hypothesis runs many examples per test): the session
    simulator with each capability's provider mounted; no background replay, so a request
    parked by mistake stays in the spool to be seen."""
    sim = simulator_server
    sim.reset()
    for kind in ("sendgrid", "twilio", "stripe", "mastodon", "openai"):
        untyped: Any = mount  # its overloads name only some providers
        untyped(sim, kind, prefix=f"/{kind}")
    fast = {"attempts": 1}

    def provider(kind: str, name: str, **options: Any) -> dict[str, Any]:
        return {"kind": kind, "base_url": sim.url(f"/{name}"), "retry": fast, **options}

    folder: Path = tmp_path_factory.mktemp("fuzz")
    settings_ = settings_from_mapping(
        {
            "gateway": {"spool_path": str(folder / "spool.db")},
            "providers": {
                "sendgrid": provider("sendgrid", "sendgrid", api_key="sg-fuzz-Zq81canary"),
                "twilio": provider(
                    "twilio",
                    "twilio",
                    api_key="tw-fuzz-Zq81canary",
                    account_sid="AC123",
                    sender="+15550001",
                ),
                "stripe": provider("stripe", "stripe", api_key="sk_test_fuzz_Zq81canary"),
                "brand-mastodon": provider("mastodon", "mastodon", api_key="ma-fuzz-Zq81canary"),
                "openai": {
                    **provider("openai", "openai", api_key="sk-fuzz-Zq81canary"),
                    "base_url": sim.url("/openai/v1"),
                    "models": {"fast": "gpt-4o-mini"},
                },
            },
            "capabilities": {
                "email": {"chain": ["sendgrid"], "defer": True},
                "sms": {"chain": ["twilio"], "defer": True},
                "payments": {"chain": ["stripe"]},
                "social": {"chain": ["brand-mastodon"], "defer": True},
                "llm": {"chain": ["openai"]},
            },
        }
    )
    with Gateway(settings_, background_replay=False, ops=False) as gw:
        yield Rig(gw, sim)
    sim.reset()


def submit(gw: Gateway, capability: str, fields: dict[str, Any], mode: str) -> Any:
    """The call a caller makes, its request built from `fields` inside it: blocking, or
    awaited on an event loop."""

    def call(facade: Any) -> Any:
        if capability == "llm":
            return facade.chat(**fields)
        model = MODELS[capability](**fields)
        if capability == "payments":
            return facade.charge(model)
        if capability == "social":
            return facade.post(model)
        return facade.send(model)

    if mode == "sync":
        return call(gw.sync.capability(capability))

    async def run() -> Any:
        return await call(gw.capability(capability))

    return asyncio.run(run())


def assert_rejected(rig: Rig, capability: str, fields: dict[str, Any], mode: str) -> str:
    """InvalidRequest (never another exception from inside the library), with nothing sent
    and nothing parked; returns the message."""
    before = rig.footprint()
    with rig.all_down(), pytest.raises(InvalidRequest) as raised:
        submit(rig.gw, capability, fields, mode)
    assert rig.footprint() == before
    return str(raised.value)


# -- bad values, by kind -------------------------------------------------------------------

CONTROL = st.sampled_from(["\x00", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f"])
# A lone surrogate is a str that UTF-8 cannot encode: it used to pass validation and fail later
# with UnicodeEncodeError, mid-send or mid-park. (st.text() never draws one unless asked.)
SURROGATE = st.characters(categories=["Cs"])
BAD_CHAR = st.one_of(CONTROL, SURROGATE)
NOT_TEXT = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


def with_bad_char(
    text: str = "hello", chars: st.SearchStrategy[str] = BAD_CHAR
) -> st.SearchStrategy[str]:
    """`text` with a control character or a lone surrogate (or one of `chars`) somewhere in it."""
    return st.tuples(st.integers(0, len(text)), chars).map(
        lambda pair: text[: pair[0]] + pair[1] + text[pair[0] :]
    )


BAD_ADDRESSES = st.one_of(
    NOT_TEXT,
    st.sampled_from(
        [
            "",
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@example",
            "ada @example.com",
            "ada@exa mple.com",
            "ada@-example.com",
            "a<b@example.com",
            "ada@example.com\n",
            "ada@example.com\r\nBcc: eve@example.com",
            "Ada <ada@example.com",
            "Ada <>",
        ]
    ),
    with_bad_char("ada@example.com"),
)
BAD_NUMBERS = st.one_of(
    NOT_TEXT,
    st.sampled_from(
        [
            "",
            "15550100",
            "+",
            "+0155501000",
            "+1555",
            "+1234567890123456",
            "+1 555 0100",
            "+1-555-0100",
            "+1555010O",
            "+15550100\n",
            "+1\u0665\u0665\u0665\u0660\u0661\u0660\u0660",  # Arabic-Indic digits: \d takes them
            "tel:+15550100",
        ]
    ),
    with_bad_char("+15550100"),
)
BAD_AMOUNTS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=99_999_999_99 + 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(math.nan),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.decimals(allow_nan=True, places=2),
)
BAD_CURRENCIES = st.one_of(
    NOT_TEXT,
    st.text(max_size=2),
    st.text(min_size=4, max_size=6),
    st.sampled_from(["us1", "u$d", "üsd", "usd\n", " usd", "US D", "€€€"]),
    with_bad_char("usd"),
)

EMAIL_BAD: dict[str, st.SearchStrategy[Any]] = {
    "sender": BAD_ADDRESSES,
    "to": st.one_of(
        st.just([]),
        st.just("ada@example.com"),  # one address, not a list of them
        st.lists(BAD_ADDRESSES, min_size=1, max_size=2),
        st.integers(),
        st.none(),
    ),
    "cc": st.lists(BAD_ADDRESSES, min_size=1, max_size=2),
    "reply_to": BAD_ADDRESSES.filter(lambda value: value is not None),
    "subject": st.one_of(
        NOT_TEXT,
        with_bad_char("Hello"),
        st.sampled_from(["Hi\nBcc: eve@example.com", "Hi\r", "x" * 999]),
    ),
    "text": st.one_of(NOT_TEXT.filter(lambda value: value is not None), with_bad_char("body")),
    "html": st.one_of(NOT_TEXT.filter(lambda value: value is not None), with_bad_char("<p>hi</p>")),
    "headers": st.one_of(
        NOT_TEXT.filter(lambda value: not isinstance(value, dict)),
        st.sampled_from([{"X Bad": "1"}, {"X-Ok": "a\r\nBcc: eve@example.com"}, {"": "1"}]),
        st.dictionaries(st.just("X-Tag"), with_bad_char("v"), min_size=1),
        st.dictionaries(with_bad_char("X-Tag", SURROGATE), st.just("1"), min_size=1),
    ),
    "tags": st.one_of(
        st.just("newsletter"), st.integers(), st.lists(with_bad_char("t"), min_size=1)
    ),
    "metadata": st.one_of(
        NOT_TEXT.filter(lambda value: value is not None and not isinstance(value, dict)),
        st.dictionaries(st.just("k"), with_bad_char("v"), min_size=1),
        st.dictionaries(with_bad_char("k"), st.just("v"), min_size=1),
        st.just({f"k{n}": "v" for n in range(51)}),
    ),
    "attachments": st.one_of(
        st.integers(),
        st.just("report.pdf"),
        st.just([b"raw bytes"]),
        st.builds(lambda: [Attachment("big.bin", bytes(MAX_EMAIL_BYTES + 1))]),  # oversized
    ),
    "idempotency_key": st.one_of(st.integers(), with_bad_char("op-1"), st.just("k" * 256)),
}
SMS_BAD: dict[str, st.SearchStrategy[Any]] = {
    "to": BAD_NUMBERS,
    "body": st.one_of(
        NOT_TEXT,
        st.sampled_from(["", "   ", "\n\t", "x" * (MAX_SMS_CHARS + 1)]),
        with_bad_char("code 1234"),
    ),
    "sender": st.one_of(
        NOT_TEXT.filter(lambda value: value is not None), with_bad_char("Brand"), st.just("B" * 33)
    ),
    "channel": st.one_of(st.sampled_from(["SMS", "mms", "", "whatsapp "]), st.integers()),
    "idempotency_key": with_bad_char("op-1"),
}
CHARGE_BAD: dict[str, st.SearchStrategy[Any]] = {
    "amount": BAD_AMOUNTS,
    "currency": BAD_CURRENCIES,
    "payment_method": st.one_of(NOT_TEXT, st.just(""), with_bad_char("pm_card_visa")),
    "idempotency_key": with_bad_char("op-1"),
    "customer": st.one_of(
        NOT_TEXT.filter(lambda value: value is not None), st.just("cus_1\n"), with_bad_char("cus_1")
    ),
    "description": st.one_of(with_bad_char("Order 42"), st.just("d" * 1001)),
    "metadata": st.one_of(
        st.just([("order", "42")]),
        st.dictionaries(st.just("order"), with_bad_char("42"), min_size=1),
        st.dictionaries(with_bad_char("order"), st.just("42"), min_size=1),
        st.dictionaries(st.just("order"), st.lists(st.integers(), max_size=1), min_size=1),
    ),
}
POST_BAD: dict[str, st.SearchStrategy[Any]] = {
    "account": st.one_of(NOT_TEXT, with_bad_char("brand-mastodon"), st.just("a" * 101)),
    "text": st.one_of(
        NOT_TEXT,
        st.sampled_from(["", "  \n ", "x" * (MAX_POST_CHARS + 1)]),
        with_bad_char("We're back"),
    ),
    "link": st.one_of(
        NOT_TEXT.filter(lambda value: value is not None),
        st.sampled_from(
            [
                "",
                "example.com",
                "ftp://example.com",
                "javascript:alert(1)",
                "https://exa mple.com",
                "https://example.com\n",
            ]
        ),
        with_bad_char("https://example.com/news"),
    ),
    "idempotency_key": with_bad_char("op-1"),
}
CHAT_BAD: dict[str, st.SearchStrategy[Any]] = {
    "messages": st.one_of(
        st.just([]),
        st.none(),
        st.just("hi"),
        st.lists(st.one_of(st.integers(), st.text(max_size=3)), min_size=1, max_size=2),
        st.just([{"content": "hi"}]),
        st.just([{"role": "robot", "content": "hi"}]),
        st.just([{"role": "tool", "content": "42"}]),  # answers no tool call
        st.just([{"role": "user", "content": "hi", "tool_calls": []}]),
        st.just([{"role": "assistant", "tool_calls": [{"name": "lookup"}]}]),  # no id
        with_bad_char("hi").map(lambda text: [{"role": "user", "content": text}]),
        with_bad_char("call_1", SURROGATE).map(
            lambda text: [{"role": "tool", "tool_call_id": text, "content": "42"}]
        ),
        with_bad_char("lookup", SURROGATE).map(
            lambda text: [{"role": "assistant", "tool_calls": [{"id": "c1", "name": text}]}]
        ),
    ),
    "model": st.one_of(st.just(""), with_bad_char("fast", SURROGATE)),
    "temperature": st.one_of(
        st.floats(max_value=-0.001),
        st.floats(min_value=2.001),
        st.just(math.nan),
        st.just(math.inf),
    ),
    "max_tokens": st.integers(max_value=0),
    "tools": st.one_of(
        st.just([{"description": "no name"}]),
        st.just([{"name": "lookup", "parameters": "not a schema"}]),
        st.just(["lookup"]),
        with_bad_char("lookup", SURROGATE).map(lambda name: [{"name": name}]),
        with_bad_char("Looks it up", SURROGATE).map(
            lambda text: [{"name": "lookup", "description": text}]
        ),
    ),
}
BAD: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "email": EMAIL_BAD,
    "sms": SMS_BAD,
    "payments": CHARGE_BAD,
    "social": POST_BAD,
    "llm": CHAT_BAD,
}


def one_bad_field(capability: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A valid payload of `capability` with one field replaced by a bad value."""
    return st.sampled_from(sorted(BAD[capability])).flatmap(
        lambda name: BAD[capability][name].map(
            lambda value: (name, {**VALID[capability], name: value})
        )
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("capability", sorted(BAD))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_bad_field_is_rejected_by_name_before_anything_is_sent_or_parked(
    rig: Rig, capability: str, mode: str, data: st.DataObject
) -> None:
    field_name, fields = data.draw(one_bad_field(capability))
    message = assert_rejected(rig, capability, fields, mode)
    if capability == "llm":
        assert message.startswith("chat: ")
    else:  # "Email.to: expected a list of email addresses"
        assert message.startswith(f"{MODELS[capability].__name__}.{field_name}: "), message


# -- valid non-ASCII input -----------------------------------------------------------------

# Printable text in any script: no control characters (Cc), no lone surrogates (Cs).
UNICODE = st.characters(blacklist_categories=("Cc", "Cs"))


def words(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    """Non-ASCII-rich text with something besides whitespace in it."""
    return st.text(UNICODE, min_size=min_size, max_size=max_size).filter(
        lambda text: bool(text.strip()) and "<" not in text and ">" not in text
    )


@st.composite
def valid_payload(draw: st.DrawFn, capability: str) -> tuple[dict[str, Any], str]:
    """A valid payload carrying a drawn non-ASCII text, and that text."""
    text = draw(words())
    fields = dict(VALID[capability])
    if capability == "email":
        fields |= {
            "subject": text,
            "text": f"{text}\n— {text}",
            "sender": f"{text} <ada@example.com>",
        }
    elif capability == "sms":
        fields |= {"body": text}
    elif capability == "payments":
        fields |= {"description": text, "metadata": {"note": text}}
    elif capability == "social":
        fields |= {"text": text}
    else:
        fields |= {"messages": [{"role": "user", "content": text}]}
    return fields, text


def _sendgrid(body: bytes) -> str:
    return str(json.loads(body)["subject"])


def _twilio(body: bytes) -> str:
    return parse_qs(body.decode())["Body"][0]


def _stripe(body: bytes) -> str:
    return parse_qs(body.decode())["description"][0]


def _mastodon(body: bytes) -> str:
    return str(json.loads(body)["status"])


def _openai(body: bytes) -> str:
    return str(json.loads(body)["messages"][-1]["content"])


ARRIVED: dict[str, tuple[str, Callable[[bytes], str]]] = {
    "email": ("/sendgrid/", _sendgrid),
    "sms": ("/twilio/", _twilio),
    "payments": ("/stripe/", _stripe),
    "social": ("/mastodon/", _mastodon),
    "llm": ("/openai/", _openai),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("capability", sorted(VALID))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_valid_non_ascii_input_is_accepted_and_arrives_intact(
    rig: Rig, capability: str, mode: str, data: st.DataObject
) -> None:
    fields, text = data.draw(valid_payload(capability))
    prefix, read = ARRIVED[capability]
    before = len(rig.sim.requests(prefix=prefix))
    result = submit(rig.gw, capability, fields, mode)
    assert result.status == "delivered"
    sent = rig.sim.requests(prefix=prefix)[before:]
    assert len(sent) == 1
    assert read(sent[0].body) == text


@given(text=words(max_size=200))
def test_non_ascii_text_survives_every_model_unchanged(text: str) -> None:
    """The other direction, without I/O: whatever script, a valid text is kept as given."""
    email = Email(
        sender=f"{text} <ada@example.com>", to=["ada@example.com"], subject=text, html=text
    )
    assert (email.subject, email.html, email.sender) == (text, text, f"{text} <ada@example.com>")
    assert Email.from_payload(email.to_payload()) == email  # what a parked request stores
    assert Sms(to="+15550100", body=text).body == text
    assert Post(account="brand", text=text).text == text
    charge = Charge(1999, "usd", "pm_card_visa", description=text, metadata={text[:200]: text})
    assert charge.metadata == {text[:200]: text}


# -- lone surrogates, field by field -------------------------------------------------------

LONE = "\ud800"
ONE_TEXT_FIELD: list[Any] = [
    pytest.param(Email, "email", "sender", f"Ad{LONE}a <ada@example.com>", id="Email.sender"),
    pytest.param(Email, "email", "to", [f"ad{LONE}a@example.com"], id="Email.to"),
    pytest.param(Email, "email", "cc", [f"ad{LONE}a@example.com"], id="Email.cc"),
    pytest.param(Email, "email", "bcc", [f"ad{LONE}a@example.com"], id="Email.bcc"),
    pytest.param(Email, "email", "reply_to", f"ad{LONE}a@example.com", id="Email.reply_to"),
    pytest.param(Email, "email", "subject", f"Hi {LONE}", id="Email.subject"),
    pytest.param(Email, "email", "text", f"hi {LONE}", id="Email.text"),
    pytest.param(Email, "email", "html", f"<p>{LONE}</p>", id="Email.html"),
    pytest.param(Email, "email", "headers", {f"X-{LONE}": "1"}, id="Email.headers-name"),
    pytest.param(Email, "email", "headers", {"X-Tag": f"v{LONE}"}, id="Email.headers-value"),
    pytest.param(Email, "email", "tags", [f"news{LONE}"], id="Email.tags"),
    pytest.param(Email, "email", "metadata", {f"k{LONE}": "v"}, id="Email.metadata-key"),
    pytest.param(Email, "email", "metadata", {"k": f"v{LONE}"}, id="Email.metadata-value"),
    pytest.param(Email, "email", "idempotency_key", f"op-{LONE}", id="Email.idempotency_key"),
    pytest.param(Sms, "sms", "body", f"code {LONE}", id="Sms.body"),
    pytest.param(Sms, "sms", "sender", f"Brand{LONE}", id="Sms.sender"),
    pytest.param(Sms, "sms", "idempotency_key", f"op-{LONE}", id="Sms.idempotency_key"),
    pytest.param(Charge, "payments", "payment_method", f"pm_{LONE}", id="Charge.payment_method"),
    pytest.param(Charge, "payments", "customer", f"cus_{LONE}", id="Charge.customer"),
    pytest.param(Charge, "payments", "description", f"Order {LONE}", id="Charge.description"),
    pytest.param(Charge, "payments", "metadata", {f"k{LONE}": "v"}, id="Charge.metadata-key"),
    pytest.param(Charge, "payments", "metadata", {"k": f"v{LONE}"}, id="Charge.metadata-value"),
    pytest.param(Charge, "payments", "idempotency_key", f"op{LONE}", id="Charge.idempotency_key"),
    pytest.param(Post, "social", "account", f"brand{LONE}", id="Post.account"),
    pytest.param(Post, "social", "text", f"back {LONE}", id="Post.text"),
    pytest.param(Post, "social", "link", f"https://example.com/{LONE}", id="Post.link"),
    pytest.param(Post, "social", "idempotency_key", f"op-{LONE}", id="Post.idempotency_key"),
]


@pytest.mark.parametrize(("model", "capability", "field_name", "value"), ONE_TEXT_FIELD)
def test_a_lone_surrogate_in_any_text_field_is_rejected_by_name(
    model: Any, capability: str, field_name: str, value: Any
) -> None:
    """Built before, the request failed later with UnicodeEncodeError: when sent, or parked."""
    with pytest.raises(InvalidRequest) as raised:
        model(**{**VALID[capability], field_name: value})
    assert str(raised.value) == (
        f"{model.__name__}.{field_name}: contains a lone surrogate, which UTF-8 cannot encode"
    )


@pytest.mark.parametrize("field_name", ["filename", "content_type"])
def test_a_lone_surrogate_in_an_attachment_is_rejected_by_name(field_name: str) -> None:
    fields: dict[str, Any] = {"filename": "a.txt", "content": b"x", "content_type": "text/plain"}
    with pytest.raises(InvalidRequest, match=f"^Attachment.{field_name}: contains a lone"):
        Attachment(**{**fields, field_name: f"a{LONE}"})


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"model": f"fast{LONE}"}, "the model name"),
        ({"messages": [{"role": "user", "content": f"hi{LONE}"}]}, "content"),
        (
            {"messages": [{"role": "tool", "tool_call_id": f"c{LONE}", "content": "42"}]},
            "tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": f"c{LONE}", "name": "f"}]}]},
            "a tool call's id",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "name": f"f{LONE}"}]}]},
            "a tool call's name",
        ),
        ({"tools": [{"name": f"lookup{LONE}"}]}, "a tool's name"),
        ({"tools": [{"name": "lookup", "description": f"Looks{LONE}"}]}, "a tool's description"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "name": "f", "arguments": {"city": LONE}}],
                    }
                ]
            },
            "a tool call's arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "name": "f", "arguments": f'{{"city": "{LONE}"}}'}
                        ],
                    }
                ]
            },
            "a tool call's arguments",
        ),
        (
            {"tools": [{"name": "lookup", "parameters": {"type": "object", "title": LONE}}]},
            "tool 'lookup''s parameters",
        ),
    ],
    ids=[
        "model",
        "content",
        "tool_call_id",
        "call-id",
        "call-name",
        "tool-name",
        "tool-description",
        "call-arguments",
        "call-arguments-as-json-text",
        "tool-parameters",
    ],
)
def test_a_lone_surrogate_in_a_chat_is_rejected_by_name(fields: dict[str, Any], what: str) -> None:
    chat = {**VALID["llm"], "temperature": None, "max_tokens": None, "tools": None, **fields}
    with pytest.raises(InvalidRequest) as raised:
        ChatRequest.of(**chat)
    assert str(raised.value) == f"chat: {what} contains a lone surrogate, which UTF-8 cannot encode"


@pytest.mark.parametrize(
    "arguments", [{"n": float("nan")}, {"when": object()}], ids=["nan", "object"]
)
def test_tool_arguments_that_are_not_plain_json_are_rejected(arguments: dict[str, Any]) -> None:
    call = {"id": "c", "name": "f", "arguments": arguments}
    chat = {**VALID["llm"], "temperature": None, "max_tokens": None, "tools": None}
    chat["messages"] = [{"role": "assistant", "tool_calls": [call]}]
    with pytest.raises(InvalidRequest, match="a tool call's arguments are not plain JSON"):
        ChatRequest.of(**chat)


ANY_TEXT = st.text(st.one_of(st.characters(), SURROGATE), max_size=12)
TEXT_FIELDS: dict[str, list[tuple[str, Callable[[str], Any]]]] = {
    "email": [
        ("sender", lambda text: f"{text} <ada@example.com>"),
        ("to", lambda text: [f"{text}@example.com"]),
        *[(name, lambda text: text) for name in ("subject", "text", "html", "idempotency_key")],
        ("headers", lambda text: {"X-Tag": text}),
        ("headers", lambda text: {text: "1"}),
        ("tags", lambda text: [text]),
        ("metadata", lambda text: {text: text}),
    ],
    "sms": [(name, lambda text: text) for name in ("body", "sender", "to", "idempotency_key")],
    "payments": [
        *[
            (name, lambda text: text)
            for name in ("payment_method", "customer", "description", "currency")
        ],
        ("metadata", lambda text: {"k": text}),
    ],
    "social": [(name, lambda text: text) for name in ("account", "text", "link")],
}


@settings(max_examples=300)
@given(data=st.data(), text=ANY_TEXT)
def test_any_text_in_any_field_builds_an_encodable_request_or_is_rejected_by_name(
    data: st.DataObject, text: str
) -> None:
    """No other outcome: a request that is built can be sent and parked (JSON, UTF-8)."""
    capability = data.draw(st.sampled_from(sorted(TEXT_FIELDS)))
    field_name, place = data.draw(st.sampled_from(TEXT_FIELDS[capability]))
    model = MODELS[capability]
    try:
        request = model(**{**VALID[capability], field_name: place(text)})
    except InvalidRequest as err:
        assert str(err).startswith(f"{model.__name__}.{field_name}: "), str(err)
    else:
        json.dumps(request.to_payload(), ensure_ascii=False).encode()  # raises if unencodable


# -- known gaps (strict: each flips to a failure once fixed, so its marker goes) -------------

CHAT_WRONG_TYPES = [
    pytest.param({"temperature": "hot"}, id="temperature-text-TypeError"),
    pytest.param({"max_tokens": "10"}, id="max_tokens-text-TypeError"),
    pytest.param({"max_tokens": 10.5}, id="max_tokens-float-accepted"),
    pytest.param({"max_tokens": True}, id="max_tokens-bool-accepted"),
    pytest.param({"model": 5}, id="model-int-accepted"),
    pytest.param({"messages": 5}, id="messages-int-TypeError"),
    pytest.param({"messages": [{"role": ["user"], "content": "hi"}]}, id="role-list-TypeError"),
    pytest.param({"messages": [{"role": "user", "content": 5}]}, id="content-int-accepted"),
    pytest.param({"messages": [{"role": "user"}]}, id="content-missing-accepted"),
    pytest.param({"messages": [{"role": "user", "content": "a\x00b"}]}, id="content-NUL-accepted"),
    pytest.param({"tools": 5}, id="tools-int-TypeError"),
    pytest.param(
        {"messages": [{"role": "assistant", "content": "", "tool_calls": [5]}]},
        id="tool_call-int-AttributeError",
    ),
]


@pytest.mark.parametrize("bad", CHAT_WRONG_TYPES)
def test_chat_inputs_of_the_wrong_type_are_rejected(rig: Rig, bad: dict[str, Any]) -> None:
    assert_rejected(rig, "llm", {**VALID["llm"], **bad}, "sync")


@pytest.mark.parametrize(
    ("capability", "model"),
    [
        ("email", {"sender": "no-reply@example.com"}),
        ("sms", Email(sender="a@example.com", to=["b@example.com"], subject="s", text="t")),
        ("payments", None),
    ],
    ids=["email-dict", "sms-given-an-email", "charge-none"],
)
def test_a_facade_given_the_wrong_model_rejects_it(rig: Rig, capability: str, model: Any) -> None:
    facade = rig.gw.sync.capability(capability)
    send = facade.charge if capability == "payments" else facade.send
    before = rig.footprint()
    with rig.all_down(), pytest.raises(InvalidRequest):
        send(model)
    assert rig.footprint() == before


def test_an_email_is_measured_in_bytes_not_characters() -> None:
    """25 MB is what the email APIs accept on the wire: text of two-byte characters that fits
    in characters but not in bytes is refused before anything is sent."""
    text = "é" * (MAX_EMAIL_BYTES // 2 + 1)
    with pytest.raises(InvalidRequest, match="larger than"):
        Email(sender="a@example.com", to=["b@example.com"], subject="s", text=text)
