"""The drop-in SendGridAPIClient against the simulated SendGrid over loopback (the SDK is sync)."""

from __future__ import annotations

import urllib.error
from dataclasses import replace
from typing import Any

import pytest
import python_http_client.exceptions as http_errors
import sendgrid
from sendgrid.helpers.mail import Mail

from providers.sendgrid import SendGridAPIClient
from resilient.config import settings_from_mapping
from resilient.gateway import Gateway
from resilient.settings import (
    BreakerSettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.testing import Fault, SimResponse, Simulator
from resilient.testing.routes import mount
from resilient.testing.routes.sendgrid import SendGridState
from resilient.transport import ProviderUnavailable
from tests.conftest import provider

FAST = RetrySettings(attempts=2, backoff_base=0.01, backoff_cap=0.02)


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    return simulator


@pytest.fixture
def mailbox(simulator: Simulator) -> SendGridState:
    return mount(simulator, "sendgrid", prefix="/sendgrid")


def settings(sim: Simulator, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {"retry": FAST, **overrides}
    return replace(provider("sendgrid", sim.url("/sendgrid"), **values), kind="sendgrid")


def client(sim: Simulator, **overrides: Any) -> SendGridAPIClient:
    gw = Gateway(GatewaySettings(providers={"sendgrid": settings(sim, **overrides)}))
    return SendGridAPIClient("SG.test-key", gateway=gw)


def mail(subject: str = "Hi") -> Mail:
    return Mail(
        from_email="no-reply@x.io",
        to_emails="a@x.io",
        subject=subject,
        html_content="<p>hi</p>",
    )


def test_sends_the_bytes_the_official_client_sends(sim: Simulator, mailbox: SendGridState) -> None:
    official = sendgrid.SendGridAPIClient("SG.test-key", host=sim.url("/sendgrid"))
    answer = official.send(mail())
    result = client(sim).send(mail())

    theirs, mine = sim.requests(prefix="/sendgrid")
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    assert mine.headers["authorization"] == theirs.headers["authorization"]
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers["user-agent"] == theirs.headers["user-agent"]
    assert mine.body == theirs.body
    assert (result.status_code, result.body) == (answer.status_code, answer.body) == (202, b"")
    assert type(result.headers) is type(answer.headers)
    assert result.headers["X-Message-Id"] == mailbox.sent[1][0]


def test_a_503_is_retried_once_by_us(sim: Simulator, mailbox: SendGridState) -> None:
    sim.inject(Fault.status(503), prefix="/sendgrid", times=1)
    assert client(sim).send(mail()).status_code == 202
    assert [r.status for r in sim.requests(prefix="/sendgrid")] == [503, 202]
    assert len(mailbox.sent) == 1


def test_send_that_may_have_happened_is_not_repeated(
    sim: Simulator, mailbox: SendGridState
) -> None:
    sim.inject(Fault.reset(after_effect=True), prefix="/sendgrid", times=1)
    with pytest.raises(urllib.error.URLError):
        client(sim).send(mail())
    assert len(sim.requests(prefix="/sendgrid")) == 1 and len(mailbox.sent) == 1


def test_a_stalled_send_is_not_repeated_and_times_out_like_urllib(
    sim: Simulator, mailbox: SendGridState
) -> None:
    sim.inject(Fault.hang(after_effect=True), prefix="/sendgrid", times=1)
    timeouts = TimeoutSettings(connect=0.5, read=5.0, write=1.0, attempt=0.3)
    with pytest.raises(TimeoutError):
        client(sim, timeouts=timeouts).send(mail())
    assert len(sim.requests(prefix="/sendgrid")) == 1


def test_repeating_a_maybe_sent_mail_is_opt_in(sim: Simulator, mailbox: SendGridState) -> None:
    sim.inject(Fault.reset(after_effect=True), prefix="/sendgrid", times=1)
    sg = client(sim, retry=replace(FAST, retry_ambiguous=True))
    assert sg.send(mail()).status_code == 202
    assert len(mailbox.sent) == 2  # what opting in risks: the first one had gone out


def test_open_breaker_fails_fast_as_urllib_does(sim: Simulator, mailbox: SendGridState) -> None:
    sim.inject(Fault.status(503), prefix="/sendgrid")
    sg = client(sim, breaker=BreakerSettings(min_calls=2, window=5.0, open_for=30.0))
    with pytest.raises(http_errors.ServiceUnavailableError):
        sg.send(mail())
    assert sg.resilient_provider.breaker.state == "open"
    with pytest.raises(urllib.error.URLError) as caught:
        sg.send(mail())
    assert isinstance(caught.value.reason, ProviderUnavailable)
    assert len(sim.requests(prefix="/sendgrid")) == 2


def test_errors_reach_the_caller_as_python_http_client_raised_them(
    sim: Simulator, mailbox: SendGridState
) -> None:
    sg = client(sim)
    body = {**mail().get(), "from": {"email": "not-an-address"}}
    with pytest.raises(http_errors.BadRequestsError) as caught:
        sg.send(body)
    error = caught.value
    assert error.status_code == 400
    assert error.to_dict["errors"][0]["field"] == "from.email"
    assert error.headers["Content-Type"] == "application/json"
    sim.inject(Fault.status(429, json={"errors": [{"message": "too many", "field": None}]}))
    with pytest.raises(http_errors.TooManyRequestsError):
        sg.send(mail())
    assert len(sim.requests(prefix="/sendgrid")) == 1 + FAST.attempts


def test_every_attribute_hop_stays_on_the_pipeline(sim: Simulator, mailbox: SendGridState) -> None:
    sg = client(sim, breaker=BreakerSettings(min_calls=50))  # half these attempts fail
    body = mail().get()
    hops = (
        lambda: sg.client.mail.send,
        lambda: sg.client._("mail")._("send"),
        lambda: sg.client.version(3).mail.send,
    )
    for hop in hops:
        sim.inject(Fault.status(503), prefix="/sendgrid", times=1)
        assert hop().post(request_body=body).status_code == 202
    assert len(mailbox.sent) == 3 and len(sim.requests(prefix="/sendgrid")) == 6
    sg.set_sendgrid_data_residency("eu")  # the SDK builds a fresh python_http_client.Client
    assert sg.client.host == "https://api.eu.sendgrid.com"
    assert sg.client.mail.send._opener is sg._opener


def test_without_a_gateway_a_private_one_serves_the_client(
    sim: Simulator, mailbox: SendGridState
) -> None:
    sim.inject(Fault.status(503), prefix="/sendgrid", times=1)
    sg = SendGridAPIClient("SG.test-key", host=sim.url("/sendgrid"))
    assert sg.resilient_provider.settings.base_url == sim.url("/sendgrid")
    assert sg.send(mail()).status_code == 202
    assert len(sim.requests(prefix="/sendgrid")) == 2
    assert SendGridAPIClient("k").resilient_provider.settings.base_url == "https://api.sendgrid.com"


def test_config_provides_key_and_host(sim: Simulator, mailbox: SendGridState) -> None:
    config = {
        "providers": {
            "mail": {"kind": "sendgrid", "api_key": "SG.conf", "base_url": sim.url("/sendgrid")}
        }
    }
    sg = SendGridAPIClient(gateway=Gateway(settings_from_mapping(config)), provider="mail")
    sg.send(mail())
    (request,) = sim.requests(prefix="/sendgrid")
    assert request.headers["authorization"] == "Bearer SG.conf"
    sg.close()


def test_a_redirected_get_is_followed_as_urllib_follows_it(sim: Simulator) -> None:
    sim.route(
        "GET",
        "/sendgrid/v3/templates",
        lambda request: SimResponse(301, {"location": "/sendgrid/v3/templates-moved"}),
    )
    sim.route("GET", "/sendgrid/v3/templates-moved", lambda request: SimResponse.json({"ok": 1}))
    response = client(sim).client.templates.get()
    assert response.status_code == 200
    assert [r.path for r in sim.requests(prefix="/sendgrid")] == [
        "/sendgrid/v3/templates",
        "/sendgrid/v3/templates-moved",
    ]


def test_a_redirected_send_raises_instead_of_becoming_a_get(sim: Simulator) -> None:
    """urllib would resend a redirected POST as a GET without its body, and report success for
    mail never sent; the drop-in raises the redirect's status and sends nothing more."""
    sim.route(
        "POST", "/sendgrid/v3/mail/send", lambda request: SimResponse(302, {"location": "/x"})
    )
    with pytest.raises(http_errors.HTTPError) as raised:
        client(sim).send(mail())
    assert raised.value.status_code == 302
    assert len(sim.requests(prefix="/sendgrid")) == 1
