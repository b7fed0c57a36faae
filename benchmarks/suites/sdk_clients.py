"""3. Drop-in SDK clients: the official client against ours, on the same simulator route.

What users adopt (DESIGN.md, providers/*.py) is the drop-in client: `from providers.openai import
OpenAI` instead of `from openai import OpenAI`, and likewise for Stripe, Twilio and SendGrid. It
is the official client with every request on one provider's pipeline, here the full pipeline of
item 2 (limiter, breaker, retries, attempt timeout, classification, events). Each pair calls the
same route of the loopback simulator (its own process, benchmarks/server.py), one request at a
time, the subjects alternating call by call (harness.compare_paired_sync): the ratio is what
switching the import costs per call, the SDK's own work (building the request, parsing the
answer) paid on both sides.

The official clients keep their defaults, HTTP library included: that library, not the pipeline,
can decide a ratio (requests or urllib against our httpx), so each row's note names both sides'.

Routes called (each provider's documented endpoint, served by resilient/testing/routes):
OpenAI POST /v1/chat/completions; Stripe POST /v1/payment_intents; Twilio POST
/2010-04-01/Accounts/{AccountSid}/Messages.json; SendGrid POST /v3/mail/send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from typing import Any, Literal

from benchmarks import fixtures, handrolled
from benchmarks.harness import (
    Config,
    Row,
    RowSpec,
    Stats,
    Suite,
    Target,
    compare_paired_async,
    compare_paired_sync,
    skipped,
)
from benchmarks.server import SDK_PREFIXES
from resilient.gateway import Gateway
from resilient.secrets import Secret
from resilient.settings import GatewaySettings

ITEM = 3
WITHIN_5 = Target("ratio_max", 1.05, "≤ 1.05x")

# Distinctive fake credentials (secret redaction is process-wide); the routes check their shape.
OPENAI_KEY = "sk-test-Zq81benchOpenAI"
STRIPE_KEY = "sk_test_Zq81benchStripe"
TWILIO_SID = "AC" + "5a" * 16
TWILIO_TOKEN = "Zq81benchTwilioToken"
SENDGRID_KEY = "SG.Zq81benchSendGrid"

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "ping"}]
INTENT = {"amount": 1000, "currency": "usd"}
SMS = {"to": "+15005550006", "from_": "+15005550001", "body": "ping"}
MAIL = {
    "personalizations": [{"to": [{"email": "to@example.com"}]}],
    "from": {"email": "from@example.com"},
    "subject": "ping",
    "content": [{"type": "text/plain", "value": "ping"}],
}
PROBE = b"To=%2B15005550006&From=%2B15005550001&Body=ping"  # the libraries-alone POST body

SyncCall = Callable[[], object]
AsyncCall = Callable[[], Awaitable[object]]
# (official client's call, drop-in client's call), for as long as the context is open
SyncSides = AbstractContextManager[tuple[SyncCall, SyncCall]]
AsyncSides = AbstractAsyncContextManager[tuple[AsyncCall, AsyncCall]]


@dataclass(frozen=True)
class Pair:
    """One row: an SDK call made by the official client and by ours."""

    sdk: str  # the package, the provider kind and its simulator prefix
    mode: Literal["sync", "async"]
    call: str
    official: str  # the baseline client, as users construct it
    libraries: str  # the HTTP library each side sends with (the row's note)
    needs: tuple[str, ...]
    library: str | None = None  # the official side's HTTP library, when it is not httpx
    async_client: str | None = None  # ours sends with this ([gateway] async_client), if set

    @property
    def spec(self) -> RowSpec:
        title = f"{self.sdk} {self.call}, {self.mode}, drop-in"
        return RowSpec(f"3.sdk.{self.sdk}.{self.mode}", title, "µs/call", self.official, WITHIN_5)


OPENAI_LIBS = "both sides on openai's own httpx client; ours wraps its transports"
PAIRS = (
    Pair("openai", "sync", "chat.completions.create", "openai.OpenAI", OPENAI_LIBS, ("openai",)),
    Pair(
        "openai", "async", "chat.completions.create", "openai.AsyncOpenAI", OPENAI_LIBS, ("openai",)
    ),
    Pair(
        "stripe",
        "sync",
        "v1.payment_intents.create",
        "stripe.StripeClient",
        "official: its default RequestsClient (requests); ours: httpx",
        ("stripe",),
        "requests",
    ),
    Pair(
        "stripe",
        "async",
        "v1.payment_intents.create_async",
        "stripe.StripeClient",
        "official: its default async client, HTTPXClient (httpx); ours: httpx",
        ("stripe",),
    ),
    Pair(
        "twilio",
        "sync",
        "messages.create",
        "twilio.rest.Client",
        "official: TwilioHttpClient (a requests Session); ours: httpx",
        ("twilio",),
        "requests",
    ),
    Pair(
        "twilio",
        "async",
        "messages.create_async",
        "twilio.rest.Client",
        'official: AsyncTwilioHttpClient (aiohttp); ours: aiohttp too (async_client = "aiohttp")',
        ("twilio", "aiohttp"),
        async_client="aiohttp",
    ),
    Pair(
        "sendgrid",
        "sync",
        "send",
        "sendgrid.SendGridAPIClient",
        "official: urllib, a new connection per request; ours: httpx, kept alive",
        ("sendgrid",),
        "urllib",
    ),
)


def sdk_gateway(base_url: str, async_client: str | None = None) -> Gateway:
    """One provider per SDK, each of its own kind, on its simulator prefix, with the policies of
    every other item's gateway and credentials in config (what the drop-in clients read)."""
    credentials: dict[str, tuple[str, str, dict[str, Any]]] = {
        "openai": ("/v1", OPENAI_KEY, {}),
        "stripe": ("", STRIPE_KEY, {}),
        "twilio": ("", TWILIO_TOKEN, {"account_sid": TWILIO_SID}),
        "sendgrid": ("", SENDGRID_KEY, {}),
    }
    providers = {
        name: dataclasses.replace(
            fixtures.provider_settings(name, base_url + SDK_PREFIXES[name] + suffix),
            kind=name,
            api_key=Secret(key),
            options=options,
        )
        for name, (suffix, key, options) in credentials.items()
    }
    return Gateway(
        GatewaySettings(
            source="<benchmarks: sdk clients>",
            providers=providers,
            async_client="aiohttp" if async_client == "aiohttp" else None,
        )
    )


# -- the pairs, sync ------------------------------------------------------------------------


@contextmanager
def _openai_sync(base_url: str, gw: Gateway) -> Iterator[tuple[SyncCall, SyncCall]]:
    import openai

    from providers.openai import OpenAI

    official = openai.OpenAI(api_key=OPENAI_KEY, base_url=base_url + SDK_PREFIXES["openai"] + "/v1")
    ours = OpenAI(gateway=gw)
    try:
        yield (
            lambda: official.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
            lambda: ours.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
        )
    finally:
        official.close()
        ours.close()


def _stripe_clients(base_url: str, gw: Gateway, http_client: Any) -> tuple[Any, Any, Any]:
    """(the official StripeClient on `http_client`, ours, our HTTP client), one route."""
    import stripe

    from providers.stripe import ResilientHTTPClient, StripeClient

    official = stripe.StripeClient(
        STRIPE_KEY,
        http_client=http_client,
        base_addresses={"api": base_url + SDK_PREFIXES["stripe"]},
    )
    our_http = ResilientHTTPClient(gw.provider("stripe"))
    return official, StripeClient(gateway=gw, http_client=our_http), our_http


@contextmanager
def _stripe_sync(base_url: str, gw: Gateway) -> Iterator[tuple[SyncCall, SyncCall]]:
    import stripe

    http_client = stripe.new_default_http_client()
    official, ours, our_http = _stripe_clients(base_url, gw, http_client)
    try:
        yield (
            lambda: official.v1.payment_intents.create(INTENT),  # type: ignore[arg-type]
            lambda: ours.v1.payment_intents.create(INTENT),  # type: ignore[arg-type]
        )
    finally:
        http_client.close()  # type: ignore[no-untyped-call]
        our_http.close()


@contextmanager
def _twilio_sync(base_url: str, gw: Gateway) -> Iterator[tuple[SyncCall, SyncCall]]:
    from providers.twilio import Client

    official = _official_twilio(base_url, None)
    ours = Client(gateway=gw)
    try:
        yield lambda: official.messages.create(**SMS), lambda: ours.messages.create(**SMS)
    finally:
        official.http_client.session.close()
        ours.http_client.close()


@contextmanager
def _sendgrid_sync(base_url: str, gw: Gateway) -> Iterator[tuple[SyncCall, SyncCall]]:
    import sendgrid

    from providers.sendgrid import SendGridAPIClient

    official = sendgrid.SendGridAPIClient(SENDGRID_KEY, host=base_url + SDK_PREFIXES["sendgrid"])
    ours = SendGridAPIClient(gateway=gw)
    try:
        yield lambda: official.send(MAIL), lambda: ours.send(MAIL)
    finally:
        ours.close()


def _official_twilio(base_url: str, http_client: Any) -> Any:
    """twilio.rest.Client as users build it. Twilio's SDK has no base URL setting: its API
    domain's is pointed at the simulator once (ours rebases each request on its provider's)."""
    import twilio.rest

    client = twilio.rest.Client(TWILIO_SID, TWILIO_TOKEN, http_client=http_client)
    client.api.base_url = base_url + SDK_PREFIXES["twilio"]
    return client


# -- the pairs, async -----------------------------------------------------------------------


@asynccontextmanager
async def _openai_async(base_url: str, gw: Gateway) -> AsyncIterator[tuple[AsyncCall, AsyncCall]]:
    import openai

    from providers.openai import AsyncOpenAI

    official = openai.AsyncOpenAI(
        api_key=OPENAI_KEY, base_url=base_url + SDK_PREFIXES["openai"] + "/v1"
    )
    ours = AsyncOpenAI(gateway=gw)
    try:
        yield (
            lambda: official.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
            lambda: ours.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
        )
    finally:
        await official.close()
        await ours.close()


@asynccontextmanager
async def _stripe_async(base_url: str, gw: Gateway) -> AsyncIterator[tuple[AsyncCall, AsyncCall]]:
    import stripe

    http_client = stripe.HTTPXClient()
    official, ours, our_http = _stripe_clients(base_url, gw, http_client)
    try:
        yield (
            lambda: official.v1.payment_intents.create_async(INTENT),  # type: ignore[arg-type]
            lambda: ours.v1.payment_intents.create_async(INTENT),  # type: ignore[arg-type]
        )
    finally:
        await http_client.close_async()  # type: ignore[no-untyped-call]
        await our_http.close_async()


@asynccontextmanager
async def _twilio_async(base_url: str, gw: Gateway) -> AsyncIterator[tuple[AsyncCall, AsyncCall]]:
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    from providers.twilio import Client

    official = _official_twilio(base_url, AsyncTwilioHttpClient())
    ours = Client(gateway=gw, http_client=AsyncTwilioHttpClient())
    try:
        yield (
            lambda: official.messages.create_async(**SMS),
            lambda: ours.messages.create_async(**SMS),
        )
    finally:
        await official.http_client.close()
        await ours.http_client.close()


SYNC: dict[str, Callable[[str, Gateway], SyncSides]] = {
    "openai": _openai_sync,
    "stripe": _stripe_sync,
    "twilio": _twilio_sync,
    "sendgrid": _sendgrid_sync,
}
ASYNC: dict[str, Callable[[str, Gateway], AsyncSides]] = {
    "openai": _openai_async,
    "stripe": _stripe_async,
    "twilio": _twilio_async,
}


# -- the HTTP libraries alone: what of a ratio is the library's, not the pipeline's -----------


@contextmanager
def _libraries_sync(library: str, base_url: str) -> Iterator[tuple[SyncCall, SyncCall]]:
    """(the official side's library, httpx), each POSTing PROBE to the ping route as its SDK
    would: requests on a kept-alive Session, urllib on a new connection each time."""
    url = base_url + fixtures.PATH
    client = fixtures.raw_client(base_url)
    session: Any = None
    if library == "requests":
        import requests

        session = requests.Session()

    def theirs() -> bytes:
        if session is not None:
            content: bytes = session.post(url, data=PROBE).content
            return content
        request = urllib.request.Request(url, data=PROBE, method="POST")
        with urllib.request.urlopen(request) as answer:
            body: bytes = answer.read()
            return body

    try:
        yield theirs, lambda: client.post(fixtures.PATH, content=PROBE).read()
    finally:
        client.close()
        if session is not None:
            session.close()


@asynccontextmanager
async def _libraries_async(
    library: str, base_url: str
) -> AsyncIterator[tuple[AsyncCall, AsyncCall]]:
    """(aiohttp, httpx), each POSTing PROBE to the ping route on a kept-alive connection."""
    import aiohttp

    url = base_url + fixtures.PATH
    client = fixtures.raw_async_client(base_url)
    session = aiohttp.ClientSession()

    async def theirs() -> bytes:
        async with session.post(url, data=PROBE) as answer:
            return await answer.read()

    async def ours() -> bytes:
        return await (await client.post(fixtures.PATH, content=PROBE)).aread()

    try:
        yield theirs, ours
    finally:
        await session.close()
        await client.aclose()


# -- measuring ------------------------------------------------------------------------------


def _shape(cfg: Config) -> tuple[int, int, int]:
    """(calls per round, rounds, warm-up calls): an SDK call costs milliseconds, and up to four
    subjects share a row, so a quarter of item 2's calls per round and warm-up, over as many
    rounds (rounds, not calls, are what outlast a noisy neighbour)."""
    return max(5, cfg.loopback_calls // 4), cfg.rounds, max(5, cfg.warmup // 4)


def _row(pair: Pair, stats: dict[str, Stats]) -> Row:
    row = Row(
        pair.spec, ITEM, subject=stats["ours"], baseline=stats["official"], notes=[pair.libraries]
    )
    if pair.library is not None:
        theirs, ours = stats[pair.library].median, stats["httpx"].median
        row.extra["library_us"] = {pair.library: theirs, "httpx": ours}
        row.notes.append(
            f"the HTTP libraries alone, same loopback POST: {pair.library} {theirs:.0f} µs, "
            f"httpx {ours:.0f} µs ({ours - theirs:+.0f} µs of this row's Δ is httpx's)"
        )
    return row


def _sync(cfg: Config, base_url: str, gw: Gateway, pair: Pair) -> Row:
    calls, rounds, warmup = _shape(cfg)
    with ExitStack() as stack:
        official, ours = stack.enter_context(SYNC[pair.sdk](base_url, gw))
        subjects = {"official": official, "ours": ours}
        if pair.library is not None:
            library = _libraries_sync(pair.library, base_url)
            subjects[pair.library], subjects["httpx"] = stack.enter_context(library)
        stats = compare_paired_sync(subjects, calls, rounds, warmup)
    return _row(pair, stats)


async def _async(
    cfg: Config, base_url: str, gateways: dict[str | None, Gateway], pairs: list[Pair]
) -> list[Row]:
    calls, rounds, warmup = _shape(cfg)
    rows = []
    for pair in pairs:
        gw = gateways[pair.async_client]
        async with AsyncExitStack() as stack:
            official, ours = await stack.enter_async_context(ASYNC[pair.sdk](base_url, gw))
            subjects = {"official": official, "ours": ours}
            if pair.library is not None:
                library = _libraries_async(pair.library, base_url)
                subjects[pair.library], subjects["httpx"] = await stack.enter_async_context(library)
            stats = await compare_paired_async(subjects, calls, rounds, warmup)
        rows.append(_row(pair, stats))
    return rows


def run(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    ready: list[Pair] = []
    for pair in PAIRS:
        lacking = handrolled.missing(*pair.needs)
        if lacking:
            rows.append(skipped(pair.spec, ITEM, lacking))
        else:
            ready.append(pair)
    with fixtures.simulator_process() as sim:
        gw = sdk_gateway(sim.base_url)
        aio = sdk_gateway(sim.base_url, "aiohttp")
        try:
            rows += [_sync(cfg, sim.base_url, gw, p) for p in ready if p.mode == "sync"]
            waiting = [p for p in ready if p.mode == "async"]
            rows += asyncio.run(_async(cfg, sim.base_url, {None: gw, "aiohttp": aio}, waiting))
        finally:
            gw.close()
            aio.close()
    return rows


SUITE = Suite(
    ITEM,
    "drop-in SDK clients vs the official ones (loopback simulator)",
    tuple(pair.spec for pair in PAIRS),
    run,
)
