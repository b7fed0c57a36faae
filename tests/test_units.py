import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient.units import Rate, parse_duration, parse_duration_range, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10.0), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172800.0), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "10", "ten seconds", "5x", "s10", "-1s", "1s2", True, -3])
def test_bad_durations_say_what_was_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_duration_range() -> None:
    assert parse_duration_range("200ms..5s") == (0.2, 5.0)
    with pytest.raises(ValueError, match="range"):
        parse_duration_range("5s..200ms")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("600/min", Rate(600, 60)),
        ("10/s", Rate(10, 1)),
        ("5/10s", Rate(5, 10)),
        ("1000/hour", Rate(1000, 3600)),
    ],
)
def test_rates(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["600", "0/s", "10/fortnight", "x/s", "10/-1s"])
def test_bad_rates(bad: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_any_written_duration_round_trips(n: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)
