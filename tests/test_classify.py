"""Outcome classification: the status table, per-provider overrides, server hints, exceptions."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from resilient.policy.classify import Classifier, server_delay
from resilient.policy.outcome_class import Outcome

OK, RETRY, FAILOVER, AMBIGUOUS, FATAL = (
    Outcome.OK,
    Outcome.RETRYABLE,
    Outcome.FAILOVER,
    Outcome.AMBIGUOUS,
    Outcome.FATAL,
)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, OK),
        (201, OK),
        (204, OK),
        (400, FATAL),
        (404, FATAL),
        (422, FATAL),
        (401, FAILOVER),
        (403, FAILOVER),
        (408, RETRY),
        (429, RETRY),
        (502, RETRY),
        (503, RETRY),
        (500, AMBIGUOUS),
        (504, AMBIGUOUS),
        (501, FAILOVER),
    ],
)
def test_default_status_table(status: int, outcome: Outcome) -> None:
    """Each status maps to its documented class when the provider configures nothing."""
    verdict = Classifier().response(status, {})
    assert verdict.outcome is outcome
    assert verdict.status == status


def test_health_of_a_verdict() -> None:
    """OK is healthy, a fatal (our fault) says nothing, anything else is unhealthy."""
    c = Classifier()
    assert c.response(200, {}).health is True
    assert c.response(400, {}).health is None
    assert c.response(503, {}).health is False
    assert c.response(500, {}).health is False


def test_override_an_exact_code() -> None:
    """A provider may declare 409 retryable; other 4xx stay fatal."""
    c = Classifier([("409", "retryable")])
    assert c.response(409, {}).outcome is RETRY
    assert c.response(400, {}).outcome is FATAL


def test_override_a_class_and_exact_codes_beat_it() -> None:
    """A "5xx"→failover override changes the class; exact codes (500/504, or the provider's) win."""
    c = Classifier([("5xx", "failover"), ("503", "retryable")])
    assert c.response(502, {}).outcome is FAILOVER
    assert c.response(599, {}).outcome is FAILOVER
    assert c.response(503, {}).outcome is RETRY
    assert c.response(500, {}).outcome is AMBIGUOUS
    assert c.response(504, {}).outcome is AMBIGUOUS


def test_later_rule_for_the_same_code_wins() -> None:
    """Overrides come after the defaults, so an override of 429 replaces the default."""
    assert Classifier([("429", Outcome.FAILOVER)]).response(429, {}).outcome is FAILOVER


def test_out_of_range_status_is_fatal() -> None:
    """A status outside 100..599 is not something any provider should send: fatal."""
    assert Classifier().response(799, {}).outcome is FATAL


def test_retry_after_seconds() -> None:
    """Retry-After in seconds becomes the verdict's server delay."""
    verdict = Classifier().response(429, httpx.Headers({"Retry-After": "7"}))
    assert verdict.server_delay == 7.0


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date is the time left until that instant."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    verdict = Classifier().response(503, httpx.Headers({"Retry-After": date}), now=now)
    assert verdict.server_delay == pytest.approx(120.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    """A date already passed asks for no wait, never a negative one."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now - 60, usegmt=True)
    assert server_delay({"retry-after": date}, now) == 0.0


def test_retry_after_ms_wins() -> None:
    """retry-after-ms is more precise than Retry-After and takes precedence."""
    headers = httpx.Headers({"Retry-After": "10", "retry-after-ms": "1500"})
    assert Classifier().response(429, headers).server_delay == 1.5


@pytest.mark.parametrize("value", ["soon", "", "Mon, 99 Foo 2024"])
def test_unparseable_retry_after_is_ignored(value: str) -> None:
    """Garbage in Retry-After gives no server delay rather than an error."""
    assert server_delay({"retry-after": value}) is None


def test_ok_response_carries_no_delay() -> None:
    """A success never asks the caller to wait."""
    assert Classifier().response(200, {"retry-after": "5"}).server_delay is None


@pytest.mark.parametrize("header", ["x-should-retry", "Stripe-Should-Retry"])
def test_should_retry_true_makes_retryable(header: str) -> None:
    """The server saying "retry" turns a fatal or ambiguous status retryable."""
    c = Classifier()
    assert c.response(409, httpx.Headers({header: "true"})).outcome is RETRY
    assert c.response(500, httpx.Headers({header: "true"})).outcome is RETRY


@pytest.mark.parametrize("header", ["x-should-retry", "Stripe-Should-Retry"])
def test_should_retry_false_stops_retrying_here(header: str) -> None:
    """The server saying "do not retry" turns a retryable or ambiguous status into failover."""
    c = Classifier()
    assert c.response(503, httpx.Headers({header: "false"})).outcome is FAILOVER
    assert c.response(500, httpx.Headers({header: "false"})).outcome is FAILOVER
    assert c.response(400, httpx.Headers({header: "false"})).outcome is FATAL


def test_should_retry_true_does_not_override_failover() -> None:
    """Bad credentials stay a failover even if the server invites a retry."""
    assert Classifier().response(401, {"x-should-retry": "true"}).outcome is FAILOVER


class _CustomConnectError(httpx.ConnectError):
    pass


@pytest.mark.parametrize(
    ("exc", "outcome", "timed_out"),
    [
        (httpx.ConnectError("refused"), RETRY, False),
        (httpx.ConnectTimeout("slow connect"), RETRY, False),
        (_CustomConnectError("sub"), RETRY, False),
        (httpx.ReadTimeout("silent"), AMBIGUOUS, True),
        (httpx.RemoteProtocolError("reset"), AMBIGUOUS, False),
        (httpx.ReadError("reset"), AMBIGUOUS, False),
        (TimeoutError(), AMBIGUOUS, True),
        (httpx.UnsupportedProtocol("ftp"), FATAL, False),
    ],
)
def test_exceptions_by_class_name(exc: BaseException, outcome: Outcome, timed_out: bool) -> None:
    """Transport errors classify by the nearest known class name along their MRO."""
    verdict = Classifier().error(exc)
    assert verdict is not None
    assert verdict.outcome is outcome
    assert verdict.timed_out is timed_out
    assert verdict.status is None
    assert verdict.reason == type(exc).__name__


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("x"), RuntimeError()])
def test_non_transport_exception_is_not_classified(exc: BaseException) -> None:
    """A bug in our code is not a provider failure: no verdict, so it propagates."""
    assert Classifier().error(exc) is None
