"""Events, the logging listener, and secrets that never reach a log line."""

from __future__ import annotations

import logging
import pickle

import httpx
import pytest

from resilient.errors import ChainExhausted
from resilient.gateway import Gateway
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt
from resilient.secrets import Secret, redact
from resilient.settings import (
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
)
from resilient.telemetry import (
    AttemptFinished,
    BreakerChanged,
    CallFinished,
    Event,
    EventBus,
    FailedOver,
    Rejected,
    RetryScheduled,
    log_event,
)

KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c"
ATTEMPT = Attempt("a", Outcome.RETRYABLE, 503, 0.012, "503")


def test_bus_fans_out_in_order() -> None:
    """Every listener gets every event, in subscription order."""
    bus = EventBus()
    seen: list[tuple[str, Event]] = []
    bus.subscribe(lambda e: seen.append(("first", e)))
    bus.subscribe(lambda e: seen.append(("second", e)))
    event = Rejected("a", "breaker")
    bus.emit(event)
    assert seen == [("first", event), ("second", event)]


def test_bus_is_active_only_with_listeners() -> None:
    """`active` tells hot paths whether building an event is worth it."""
    bus = EventBus()
    assert not bus.active
    unsubscribe = bus.subscribe(lambda e: None)
    assert bus.active
    unsubscribe()
    assert not bus.active


def test_unsubscribe_stops_delivery() -> None:
    """A removed listener hears nothing more; the others still do."""
    bus = EventBus()
    kept: list[Event] = []
    removed: list[Event] = []
    bus.subscribe(kept.append)
    unsubscribe = bus.subscribe(removed.append)
    unsubscribe()
    bus.emit(Rejected("a", "disabled"))
    assert len(kept) == 1
    assert removed == []


def test_raising_listener_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """A failing listener does not stop the ones after it, and is reported in the log."""
    bus = EventBus()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        bus.emit(Rejected("a", "breaker"))
    assert len(seen) == 1
    assert "event listener" in caplog.text
    assert "boom" in caplog.text


def test_listener_error_log_masks_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """Even a listener's own error message cannot put a key into our log."""
    Secret(KEY)
    bus = EventBus()

    def leaky(event: Event) -> None:
        raise RuntimeError(f"webhook refused token {KEY}")

    bus.subscribe(leaky)
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        bus.emit(Rejected("a", "breaker"))
    assert "webhook refused token ***" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("event", "level", "text"),
    [
        (AttemptFinished("a", 1, ATTEMPT), logging.DEBUG, "attempt 1 a: retryable (503, 12 ms)"),
        (RetryScheduled("a", 2, 0.25, "503"), logging.INFO, "a: retry 2 in 0.250s (503)"),
        (
            BreakerChanged("a", "closed", "open", 15.0),
            logging.WARNING,
            "a: breaker closed -> open for 15s",
        ),
        (BreakerChanged("a", "open", "half-open", 15.0), logging.INFO, "a: breaker open -> half"),
        (Rejected("a", "bulkhead"), logging.INFO, "a: not tried (bulkhead)"),
        (FailedOver("email", "a", "503"), logging.INFO, "email: failing over from a (503)"),
        (
            CallFinished("email", "delivered", "b", (ATTEMPT,), 0.5),
            logging.DEBUG,
            "email: delivered by b after 1 attempt(s) in 500 ms",
        ),
        (CallFinished("email", "failed", None, (), 0.5), logging.WARNING, "email: failed by -"),
    ],
)
def test_log_event_lines(
    event: Event, level: int, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each event becomes one line at a level that matches its weight."""
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        log_event(event)
    (record,) = caplog.records
    assert record.levelno == level
    assert text in record.getMessage()


def test_log_event_masks_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """A registered secret in any event field prints as ***."""
    Secret(KEY)
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        log_event(FailedOver("llm", "openai", f"bad key {KEY}"))
    assert "bad key ***" in caplog.text
    assert KEY not in caplog.text


def test_log_event_respects_the_level(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is logged below the logger's level."""
    with caplog.at_level(logging.WARNING, logger="resilient"):
        log_event(RetryScheduled("a", 2, 0.25, "503"))
    assert caplog.records == []


def test_secret_never_prints(caplog: pytest.LogCaptureFixture) -> None:
    """str, repr, format and logging arguments all hide the value; reveal() gives it."""
    secret = Secret(KEY)
    for text in (str(secret), repr(secret), f"{secret}", format(secret), f"{secret!r}"):
        assert KEY not in text
    with caplog.at_level(logging.INFO):
        logging.getLogger("app").info("using key %s (%r)", secret, secret)
    assert "using key Secret('***')" in caplog.text
    assert KEY not in caplog.text
    assert secret.reveal() == KEY


def test_settings_repr_hides_the_key() -> None:
    """Printing provider settings (a dataclass repr) does not show the key."""
    settings = ProviderSettings("a", "http", api_key=Secret(KEY))
    assert KEY not in repr(settings)
    assert "Secret('***')" in repr(settings)


def test_secret_cannot_be_pickled() -> None:
    """A secret never travels in a pickle (a deferred payload, a job queue)."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))


def test_secret_equality_and_truth() -> None:
    """Secrets compare by value; an empty one is falsy."""
    assert Secret(KEY) == Secret(KEY)
    assert Secret(KEY) != Secret(KEY + "x")
    assert hash(Secret(KEY)) == hash(Secret(KEY))
    assert not Secret("")


def test_redact_masks_registered_values() -> None:
    """Every occurrence of a registered value is masked; other text is untouched."""
    Secret("pw-0123456789")
    assert redact("user:pw-0123456789@host pw-0123456789") == "user:***@host ***"
    assert redact("nothing to hide") == "nothing to hide"


def test_a_secret_containing_another_is_masked_whole() -> None:
    """When one secret contains another, the longer is masked first, leaving no tail behind."""
    nested = [Secret("tok-12345" + "-x" * i).reveal() for i in range(10)]
    for value in nested:
        assert redact(f"key={value}") == "key=***"


def test_short_values_are_not_registered() -> None:
    """Values too short to mask safely are left alone rather than mangling ordinary text."""
    Secret("abc")
    assert redact("abc abcdef") == "abc abcdef"


def test_a_failing_call_logs_no_key(caplog: pytest.LogCaptureFixture) -> None:
    """A call that retries and fails sends the key to the provider but never to the log."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(401 if request.url.host == "b" else 503)

    retry = RetrySettings(attempts=2, backoff_base=0.001, backoff_cap=0.001)
    providers = {
        name: ProviderSettings(
            name, "http", base_url=f"http://{name}", api_key=Secret(KEY), retry=retry
        )
        for name in ("a", "b")
    }
    settings = GatewaySettings(
        providers=providers, capabilities={"http": CapabilitySettings("http", ("a", "b"))}
    )
    with (
        caplog.at_level(logging.DEBUG),
        Gateway(settings, transport=httpx.MockTransport(handler)) as gw,
        pytest.raises(ChainExhausted) as failure,
    ):
        gw.sync.http.request("GET", "/x")
    assert seen == [f"Bearer {KEY}"] * 3
    assert "retry 2" in caplog.text
    assert "failing over from a" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in str(failure.value)


def test_routine_events_are_built_only_for_a_reader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With only the logging listener and DEBUG off, the hot path builds no per-attempt event;
    DEBUG logging, or any other listener, gets them all."""
    import resilient.pipeline as pipeline_module

    built: list[object] = []
    real = pipeline_module.AttemptFinished

    def counting(*args: object) -> object:
        event = real(*args)  # type: ignore[arg-type]
        built.append(event)
        return event

    monkeypatch.setattr(pipeline_module, "AttemptFinished", counting)
    settings = GatewaySettings(
        providers={"a": ProviderSettings("a", "http", base_url="http://a")},
        capabilities={"http": CapabilitySettings("http", ("a",))},
    )
    ok = httpx.MockTransport(lambda request: httpx.Response(200))
    with Gateway(settings, transport=ok, ops=False) as gw:
        with caplog.at_level(logging.INFO, logger="resilient"):
            gw.sync.http.request("GET", "/x")
        assert built == []
        with caplog.at_level(logging.DEBUG, logger="resilient"):
            gw.sync.http.request("GET", "/x")
        assert len(built) == 1 and "attempt 1 a: ok" in caplog.text
        seen: list[object] = []
        gw.events.subscribe(seen.append)
        gw.sync.http.request("GET", "/x")
        assert any(isinstance(e, AttemptFinished) for e in seen)
        assert any(isinstance(e, CallFinished) and e.status == "delivered" for e in seen)
