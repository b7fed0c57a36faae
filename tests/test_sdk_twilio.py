"""The drop-in Twilio Client against the simulated Twilio over loopback, sync and async."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as OfficialClient

from providers.twilio import AsyncResilientHttpClient, Client, ResilientHttpClient
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.settings import BreakerSettings, GatewaySettings, ProviderSettings, RetrySettings
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.twilio import TwilioState
from tests.conftest import provider

FAST = RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.02)
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "auth-token"
SMS = {"to": "+15550100", "from_": "+15550111", "body": "Your code is 1234"}


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    return simulator


@pytest.fixture
def account(simulator: Simulator) -> TwilioState:
    return mount(simulator, "twilio", prefix="/twilio")


def settings(sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {"retry": FAST, **overrides}
    return replace(provider("twilio", sim.url("/twilio"), **values), kind="twilio")


def client(sim: Simulator, mode: str, **overrides: Any) -> Client:
    gw = Gateway(GatewaySettings(providers={"twilio": settings(sim, **overrides)}))
    http_client = AsyncTwilioHttpClient() if mode == "async" else None
    return Client(SID, TOKEN, gateway=gw, http_client=http_client)


async def send(sdk: Client, mode: str, **kwargs: Any) -> Any:
    if mode == "async":
        return await sdk.messages.create_async(**{**SMS, **kwargs})
    return await asyncio.to_thread(sdk.messages.create, **{**SMS, **kwargs})


class _ToSimulator(HTTPAdapter):
    """Sends Twilio's official requests client to the simulator, request untouched otherwise."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        request.url = request.url.replace("https://api.twilio.com", self.base_url)
        return super().send(request, **kwargs)


async def test_sends_the_bytes_the_official_client_sends(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    official_http = TwilioHttpClient()
    assert official_http.session is not None
    official_http.session.mount("https://", _ToSimulator(sim.url("/twilio")))
    official = OfficialClient(SID, TOKEN, http_client=official_http)
    answer = await asyncio.to_thread(official.messages.create, **SMS)
    result = await send(client(sim, mode), mode)

    theirs, mine = sim.requests(prefix="/twilio")
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    assert mine.headers["authorization"] == theirs.headers["authorization"]
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers["user-agent"] == theirs.headers["user-agent"]
    assert mine.body == theirs.body
    assert type(result) is type(answer)
    assert (result.status, result.body, result.to) == ("queued", SMS["body"], SMS["to"])


async def test_a_503_is_retried_once_by_us(sim: Simulator, account: TwilioState, mode: str) -> None:
    sim.inject(Fault.status(503), prefix="/twilio", times=1)
    message = await send(client(sim, mode), mode)
    assert [r.status for r in sim.requests(prefix="/twilio")] == [503, 201]
    assert list(account.messages) == [message.sid]


async def test_message_that_may_have_been_sent_is_not_repeated(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    sim.inject(Fault.reset(after_effect=True), prefix="/twilio", times=1)
    expected = aiohttp.ClientConnectionError if mode == "async" else requests.ConnectionError
    with pytest.raises(expected):
        await send(client(sim, mode), mode)
    assert len(sim.requests(prefix="/twilio")) == 1 and len(account.messages) == 1


async def test_repeating_a_maybe_sent_message_is_opt_in(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    sim.inject(Fault.reset(after_effect=True), prefix="/twilio", times=1)
    sdk = client(sim, mode, retry=replace(FAST, retry_ambiguous=True))
    await send(sdk, mode)
    assert len(account.messages) == 2  # what opting in risks: the first one had gone out


async def test_open_breaker_fails_fast_with_the_clients_connection_error(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    sim.inject(Fault.status(503), prefix="/twilio")
    sdk = client(sim, mode, breaker=BreakerSettings(min_calls=2, window=5.0, open_for=30.0))
    with pytest.raises(TwilioRestException) as caught:
        await send(sdk, mode)
    assert caught.value.status == 503
    assert sdk.resilient_provider.breaker.state == "open"
    expected = aiohttp.ClientConnectionError if mode == "async" else requests.ConnectionError
    with pytest.raises(expected):
        await send(sdk, mode)
    assert len(sim.requests(prefix="/twilio")) == 2


async def test_errors_surface_as_twilio_rest_exception(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    sdk = client(sim, mode)
    with pytest.raises(TwilioRestException) as caught:
        await send(sdk, mode, to="555")
    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert "Invalid 'To' Phone Number: 555" in caught.value.msg
    fetch = sdk.messages("SM" + "0" * 32)
    with pytest.raises(TwilioRestException) as missing:
        if mode == "async":
            await fetch.fetch_async()
        else:
            await asyncio.to_thread(fetch.fetch)
    assert (missing.value.status, missing.value.code) == (404, 20404)
    assert len(sim.requests(prefix="/twilio")) == 2
    runtime = sdk.resilient_provider
    assert runtime.breaker.failure_rate(runtime.clock()) == (0, 0.0)


async def test_fetch_and_list_round_trip(sim: Simulator, account: TwilioState, mode: str) -> None:
    sdk = client(sim, mode)
    sent = await send(sdk, mode)
    if mode == "async":
        fetched = await sdk.messages(sent.sid).fetch_async()
        listed = await sdk.messages.list_async(to=SMS["to"])
    else:
        fetched = await asyncio.to_thread(sdk.messages(sent.sid).fetch)
        listed = await asyncio.to_thread(sdk.messages.list, to=SMS["to"])
    assert fetched.body == SMS["body"] and [m.sid for m in listed] == [sent.sid]


async def test_twilios_own_http_clients_are_replaced_keeping_their_settings(
    sim: Simulator, account: TwilioState
) -> None:
    gw = Gateway(GatewaySettings(providers={"twilio": settings(sim)}))
    official = AsyncTwilioHttpClient(timeout=7)
    sdk = Client(SID, TOKEN, gateway=gw, http_client=official)
    assert isinstance(sdk.http_client, AsyncResilientHttpClient)
    assert sdk.http_client.timeout == 7 and official.session.closed
    await sdk.messages.create_async(**SMS)
    await sdk.http_client.close()
    sync = Client(SID, TOKEN, gateway=gw, http_client=TwilioHttpClient(timeout=3))
    assert isinstance(sync.http_client, ResilientHttpClient) and sync.http_client.timeout == 3
    again = Client(SID, TOKEN, http_client=sync.http_client)
    assert again.resilient_provider is sync.resilient_provider


def test_without_a_gateway_requests_go_to_twilio_itself() -> None:
    sdk = Client(SID, TOKEN)
    settings = sdk.resilient_provider.settings
    assert (settings.kind, settings.base_url) == ("twilio", "https://api.twilio.com")


def test_config_provides_credentials_and_base_url(sim: Simulator, account: TwilioState) -> None:
    config = {
        "providers": {
            "sms": {
                "kind": "twilio",
                "account_sid": SID,
                "api_key": TOKEN,
                "base_url": sim.url("/twilio"),
            }
        }
    }
    sdk = Client(gateway=Gateway(settings_from_mapping(config)), provider="sms", environment={})
    message = sdk.messages.create(**SMS)
    assert message.account_sid == SID
    (request,) = sim.requests(prefix="/twilio")
    assert request.path == f"/twilio/2010-04-01/Accounts/{SID}/Messages.json"


def test_other_http_clients_would_bypass_the_pipeline() -> None:
    class Custom(HttpClient):  # type: ignore[misc]
        """An HttpClient of the caller's own: we could not route it."""

    with pytest.raises(TypeError, match="bypass"):
        Client(SID, TOKEN, http_client=Custom(None, False))


async def test_list_filters_are_encoded_as_the_official_client_encodes_them(
    sim: Simulator, account: TwilioState, mode: str
) -> None:
    official_http = TwilioHttpClient()
    assert official_http.session is not None
    official_http.session.mount("https://", _ToSimulator(sim.url("/twilio")))
    official = OfficialClient(SID, TOKEN, http_client=official_http)
    filters = {"to": "+1 555 0100", "from_": "whatsapp:+15550111", "page_size": 20}
    await asyncio.to_thread(official.messages.list, **filters)
    sdk = client(sim, mode)
    if mode == "async":
        await sdk.messages.list_async(**filters)
    else:
        await asyncio.to_thread(sdk.messages.list, **filters)
    theirs, mine = sim.requests(prefix="/twilio")
    assert (mine.path, mine.query) == (theirs.path, theirs.query)
    assert "+" in mine.query


async def test_the_async_client_sends_with_aiohttp_when_the_gateway_does(
    sim: Simulator, account: TwilioState
) -> None:
    """`[gateway] async_client = "aiohttp"` reaches the drop-in SDK clients too (twilio's own
    async client is aiohttp-based: like for like), retries included."""
    from resilient.transport_aiohttp import AiohttpTransport

    gw = Gateway(GatewaySettings(providers={"twilio": settings(sim)}, async_client="aiohttp"))
    sdk = Client(SID, TOKEN, gateway=gw, http_client=AsyncTwilioHttpClient())
    sim.inject(Fault.status(503), prefix="/twilio", times=1)
    message = await sdk.messages.create_async(**SMS)
    bridge = sdk.http_client._clients.current()  # type: ignore[attr-defined]
    assert isinstance(bridge._transport._inner._inner, AiohttpTransport)
    assert [r.status for r in sim.requests(prefix="/twilio")] == [503, 201]
    assert list(account.messages) == [message.sid]
    await sdk.http_client.close()  # type: ignore[attr-defined]
    await gw.aclose()
