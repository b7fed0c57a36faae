"""PayPal payments adapter: the Orders v2 wire format, the OAuth2 token flow that authorizes it
(fetched inside the attempt, cached, refreshed), amounts in PayPal's decimal strings, its
reading of PayPal's answers, and gw.payments end to end on the simulated PayPal."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from providers import Charge
from providers.payments.paypal import PayPalAdapter, amount_value, request_id
from resilient.config import settings_from_mapping
from resilient.errors import ChainExhausted, ConfigError, FatalError, ResilientError
from resilient.gateway import Gateway
from resilient.policy.classify import Classifier
from resilient.policy.outcome_class import Outcome
from resilient.result import Result
from resilient.testing import Simulator
from resilient.testing.routes import paypal as paypal_routes
from resilient.testing.routes.paypal import PayPalState
from tests.conftest import provider_table

API = "https://api-m.paypal.com"
CHARGE = Charge(
    amount=1999,
    currency="usd",
    payment_method="8kk8451t",
    idempotency_key="order-42",
    description="Order #42",
    metadata={"order": "42"},
)
TOKEN = {"access_token": "A21AAtoken1", "token_type": "Bearer", "expires_in": 32400}
ORDER = {
    "id": "5O190127TN364715T",
    "status": "COMPLETED",
    "purchase_units": [{"payments": {"captures": [{"id": "3C6", "status": "COMPLETED"}]}}],
}


def paypal(base_url: str | None = None, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "client_id": "client-1",
        "api_key": "pp-secret",
    }
    return provider_table("paypal", base_url, **{**defaults, **options})


def gateway(**providers: dict[str, Any]) -> Gateway:
    chain = list(providers)
    return Gateway(
        settings_from_mapping(
            {"providers": providers, "capabilities": {"payments": {"chain": chain}}}
        )
    )


async def charge(gw: Gateway, mode: str, model: Charge = CHARGE) -> Result[Any]:
    if mode == "sync":
        return await asyncio.to_thread(gw.sync.payments.charge, model)
    return await gw.payments.charge(model)  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw() -> Iterator[Gateway]:
    gateway_ = gateway(paypal=paypal())
    yield gateway_
    gateway_.close()


def adapter(gw: Gateway, clock: Clock) -> PayPalAdapter:
    return PayPalAdapter(gw.provider("paypal").settings, clock=clock)


def order_request(gw: Gateway, paypal_: PayPalAdapter, model: Charge = CHARGE) -> httpx.Request:
    request = paypal_.build(model, gw.provider("paypal"), model.idempotency_key or "op")
    request.extensions["timeout"] = httpx.Timeout(2.0).as_dict()  # as the operation sets it
    return request


@pytest.mark.parametrize(
    ("amount", "currency", "value"),
    [
        (1999, "usd", "19.99"),
        (5, "eur", "0.05"),
        (1999, "jpy", "1999"),  # no minor unit
        (1999, "krw", "1999"),
        (1999, "kwd", "1.999"),  # three decimals
        (150000, "huf", "1500"),  # two in ISO 4217, whole at PayPal
        (150050, "huf", "1500.50"),  # written out; PayPal refuses the fraction
        (99_999_999_99, "usd", "99999999.99"),
    ],
)
def test_amounts_become_paypal_decimal_strings(amount: int, currency: str, value: str) -> None:
    assert amount_value(amount, currency) == value


def test_a_long_operation_id_fits_the_request_id_header() -> None:
    assert request_id("order-42") == "order-42"
    long = "k" * 200
    assert len(request_id(long)) == 64
    assert request_id(long) == request_id(long)


def test_wire_format_of_the_token_and_the_order(gw: Gateway) -> None:
    paypal_ = adapter(gw, Clock())
    with respx.mock(assert_all_called=True) as mock, httpx.Client() as client:
        token = mock.post(f"{API}/v1/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN)
        )
        orders = mock.post(f"{API}/v2/checkout/orders").mock(
            return_value=httpx.Response(201, json=ORDER)
        )
        response = client.send(order_request(gw, paypal_), auth=paypal_.auth)

    sent = token.calls.last.request
    assert sent.headers["authorization"] == (
        "Basic " + base64.b64encode(b"client-1:pp-secret").decode()
    )
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.content.decode()) == {"grant_type": ["client_credentials"]}
    assert sent.extensions["timeout"] == httpx.Timeout(2.0).as_dict()  # within the attempt

    order = orders.calls.last.request
    assert order.headers["authorization"] == "Bearer A21AAtoken1"
    assert order.headers["paypal-request-id"] == "order-42"
    assert order.headers["prefer"] == "return=representation"
    assert order.headers["content-type"] == "application/json"
    assert json.loads(order.content) == {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "amount": {"currency_code": "USD", "value": "19.99"},
                "description": "Order #42",
                "custom_id": "order-42",
            }
        ],
        "payment_source": {"card": {"vault_id": "8kk8451t"}},
    }
    assert paypal_.message_id(response) == ORDER["id"]


def test_the_payment_source_option_names_the_vaulted_instrument() -> None:
    gw = gateway(paypal=paypal(payment_source="paypal"))
    request = order_request(gw, adapter(gw, Clock()))
    gw.close()
    assert json.loads(request.content)["payment_source"] == {"paypal": {"vault_id": "8kk8451t"}}


async def test_the_token_is_cached_until_it_nearly_expires(gw: Gateway) -> None:
    clock = Clock()
    paypal_ = adapter(gw, clock)
    with respx.mock(assert_all_called=True) as mock:
        token = mock.post(f"{API}/v1/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN)
        )
        mock.post(f"{API}/v2/checkout/orders").mock(return_value=httpx.Response(201, json=ORDER))
        with httpx.Client() as client:
            await asyncio.to_thread(client.send, order_request(gw, paypal_), auth=paypal_.auth)
        async with httpx.AsyncClient() as aclient:  # the same cache serves async calls
            await aclient.send(order_request(gw, paypal_), auth=paypal_.auth)
            assert token.call_count == 1
            clock.now += 32400 - 61
            await aclient.send(order_request(gw, paypal_), auth=paypal_.auth)
            assert token.call_count == 1
            clock.now += 2  # within a minute of expiry: a new token
            await aclient.send(order_request(gw, paypal_), auth=paypal_.auth)
            assert token.call_count == 2


def test_a_revoked_token_is_replaced_once(gw: Gateway) -> None:
    """PayPal refusing the token did nothing: one new token, one resend, then the answer."""
    paypal_ = adapter(gw, Clock())
    expired = httpx.Response(401, json={"error": "invalid_token"})
    with respx.mock(assert_all_called=True) as mock, httpx.Client() as client:
        token = mock.post(f"{API}/v1/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN)
        )
        orders = mock.post(f"{API}/v2/checkout/orders").mock(
            side_effect=[httpx.Response(201, json=ORDER), expired, httpx.Response(201, json=ORDER)]
        )
        client.send(order_request(gw, paypal_), auth=paypal_.auth)
        response = client.send(order_request(gw, paypal_), auth=paypal_.auth)
        assert response.status_code == 201
        assert (token.call_count, orders.call_count) == (2, 3)

        orders.side_effect = [expired, expired]
        response = client.send(order_request(gw, paypal_), auth=paypal_.auth)
    assert response.status_code == 401  # still refused with a fresh token: no loop
    assert (token.call_count, orders.call_count) == (3, 5)


def test_a_refused_token_request_is_the_answer(gw: Gateway) -> None:
    """Bad client credentials: PayPal's 401 is what the attempt gets (a failover), and no order
    goes out."""
    paypal_ = adapter(gw, Clock())
    refused = {"error": "invalid_client", "error_description": "Client Authentication failed"}
    with respx.mock(assert_all_called=False) as mock, httpx.Client() as client:
        mock.post(f"{API}/v1/oauth2/token").mock(return_value=httpx.Response(401, json=refused))
        orders = mock.post(f"{API}/v2/checkout/orders")
        response = client.send(order_request(gw, paypal_), auth=paypal_.auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert not orders.called
    default = Classifier().response(401, response.headers)
    verdict = paypal_.verdict(response, default)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILOVER, "401 invalid_client")


def test_a_missing_secret_is_named() -> None:
    table = paypal()
    del table["api_key"]
    gw = gateway(paypal=table)
    paypal_ = adapter(gw, Clock())
    with httpx.Client() as client, pytest.raises(ResilientError, match="client secret"):
        client.send(order_request(gw, paypal_), auth=paypal_.auth)
    gw.close()


def test_the_client_id_is_required() -> None:
    table = paypal()
    del table["client_id"]
    with pytest.raises(ConfigError, match="client_id"):
        settings_from_mapping({"providers": {"paypal": table}})


def _verdict(gw: Gateway, status: int, body: object) -> tuple[Outcome, str]:
    response = httpx.Response(status, json=body)
    verdict = adapter(gw, Clock()).verdict(response, Classifier().response(status, {}))
    return verdict.outcome, verdict.reason


def test_answers_are_read_for_what_they_did(gw: Gateway) -> None:
    declined = {"name": "UNPROCESSABLE_ENTITY", "details": [{"issue": "INSTRUMENT_DECLINED"}]}
    assert _verdict(gw, 422, declined) == (Outcome.FATAL, "422 INSTRUMENT_DECLINED")
    assert _verdict(gw, 201, ORDER) == (Outcome.OK, "201")
    waiting = {"id": "X", "status": "PAYER_ACTION_REQUIRED"}
    assert _verdict(gw, 201, waiting) == (Outcome.FATAL, "201 PAYER_ACTION_REQUIRED")
    failed_capture = {
        "id": "X",
        "status": "COMPLETED",
        "purchase_units": [{"payments": {"captures": [{"status": "DECLINED"}]}}],
    }
    assert _verdict(gw, 201, failed_capture) == (Outcome.FATAL, "201 capture DECLINED")
    assert _verdict(gw, 503, {"name": "SERVICE_UNAVAILABLE"})[0] is Outcome.AMBIGUOUS
    assert _verdict(gw, 429, {"name": "RATE_LIMIT_REACHED"})[0] is Outcome.RETRYABLE


@pytest.fixture
def account(simulator: Simulator) -> PayPalState:
    return paypal_routes.mount(simulator, "/paypal")


async def test_end_to_end_on_the_simulator(
    simulator: Simulator, account: PayPalState, mode: str
) -> None:
    gw = gateway(paypal=paypal(simulator.url("/paypal")))
    result = await charge(gw, mode)
    second = await charge(gw, mode, Charge(amount=500, currency="jpy", payment_method="v2"))
    await gw.aclose()

    assert (result.status, result.provider) == ("delivered", "paypal")
    first_order = account.orders[result.value.message_id]
    assert first_order["status"] == "COMPLETED"
    unit = first_order["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "19.99"}
    assert unit["payments"]["captures"][0]["status"] == "COMPLETED"
    assert account.orders[second.value.message_id]["purchase_units"][0]["amount"]["value"] == "500"
    assert len(simulator.requests(path="/paypal/v1/oauth2/token")) == 1  # cached between calls
    [first, _] = simulator.requests(path="/paypal/v2/checkout/orders")
    assert first.headers["paypal-request-id"] == "order-42"


async def test_a_revoked_token_is_replaced_within_the_attempt(
    simulator: Simulator, account: PayPalState, mode: str
) -> None:
    gw = gateway(paypal=paypal(simulator.url("/paypal")))
    await charge(gw, mode)
    account.revoke_tokens()
    result = await charge(gw, mode, Charge(amount=700, currency="usd", payment_method="v2"))
    await gw.aclose()

    assert [a.outcome for a in result.attempts] == [Outcome.OK]
    assert len(simulator.requests(path="/paypal/v1/oauth2/token")) == 2
    assert len(account.orders) == 2


async def test_bad_credentials_fail_over_without_an_order(
    simulator: Simulator, account: PayPalState, mode: str
) -> None:
    account.credentials = ("client-1", "another-secret")
    gw = gateway(paypal=paypal(simulator.url("/paypal")))
    with pytest.raises(ChainExhausted, match="401 invalid_client"):
        await charge(gw, mode)
    await gw.aclose()
    assert simulator.requests(path="/paypal/v2/checkout/orders") == []


async def test_a_declined_instrument_is_final(
    simulator: Simulator, account: PayPalState, mode: str
) -> None:
    account.declined.add(CHARGE.payment_method)
    gw = gateway(paypal=paypal(simulator.url("/paypal")))
    with pytest.raises(FatalError, match="INSTRUMENT_DECLINED") as raised:
        await charge(gw, mode)
    await gw.aclose()
    assert len(simulator.requests(path="/paypal/v2/checkout/orders")) == 1
    assert raised.value.response is not None
    assert raised.value.response.json()["details"][0]["issue"] == "INSTRUMENT_DECLINED"
    assert account.orders == {}
