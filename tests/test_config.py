"""resilient.config: files, interpolation, every validation rule, and what errors may show."""

import copy
import json
import os
import re
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, SecretStr

from resilient.config import load_settings, settings_from_mapping
from resilient.errors import ConfigError
from resilient.registry import ProviderKind, register
from resilient.secrets import Secret
from resilient.settings import (
    BreakerSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.units import Rate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "sk-live-DO-NOT-PRINT-1234"
MAIL_PASSWORD = "mail-pw-DO-NOT-PRINT"


class Tracking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opens: bool = False
    clicks: bool = False


class MailOptions(BaseModel):
    """A kind's own keys, as an email provider adapter would declare them."""

    model_config = ConfigDict(extra="forbid")
    domain: str
    region: Literal["us", "eu"] = "us"
    password: SecretStr | None = None
    tracking: Tracking | None = Tracking()


register(ProviderKind(name="testmail", capability="email", options=MailOptions))


def load(data: dict[str, Any], env: dict[str, str] | None = None) -> GatewaySettings:
    return settings_from_mapping(data, source="test.toml", env=env or {})


def error(data: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(data, env)
    return info.value


def provider(**table: Any) -> dict[str, Any]:
    return {"providers": {"p": {"kind": "http", **table}}}


# -- files and sources ---------------------------------------------------------------------------


def test_no_path_and_no_env_var_gives_the_embedded_defaults() -> None:
    assert load_settings(env={}) == GatewaySettings()
    assert load_settings(env={"RESILIENT_CONFIG": ""}) == GatewaySettings()


def test_the_path_comes_from_resilient_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nspool_path = "/var/spool/gw.db"\n')
    assert load_settings(env={"RESILIENT_CONFIG": str(path)}).spool_path == "/var/spool/gw.db"
    monkeypatch.setenv("RESILIENT_CONFIG", str(path))
    settings = load_settings()
    assert settings.source == str(path)
    assert settings.spool_path == "/var/spool/gw.db"


def test_the_examples_load_to_the_same_settings() -> None:
    env = {"PRIMARY_API_KEY": SECRET}
    toml = load_settings(EXAMPLES / "resilient.toml", env=env)
    yaml = load_settings(EXAMPLES / "resilient.yaml", env=env)
    assert toml.source.endswith("resilient.toml")
    assert yaml.source.endswith("resilient.yaml")
    assert (toml.redis_url, toml.spool_path) == (yaml.redis_url, yaml.spool_path)
    assert toml.providers == yaml.providers
    assert toml.capabilities == yaml.capabilities

    primary, secondary = toml.providers["primary"], toml.providers["secondary"]
    assert primary.api_key == Secret(SECRET)
    assert secondary.api_key is None  # "${SECONDARY_API_KEY:-}" with the variable unset
    assert primary.timeouts == TimeoutSettings(connect=5.0, read=10.0, write=10.0, attempt=10.0)
    assert secondary.timeouts == TimeoutSettings(2.0, 15.0, 15.0, 20.0, 45.0)
    assert primary.rate_limit == Rate(600, 60)
    assert (primary.retry.backoff_base, primary.retry.backoff_cap) == (0.2, 5.0)
    assert primary.breaker.slow_call == 2.0
    assert primary.classify == (("409", "fatal"),)
    assert secondary.breaker.open_for_max == 600.0
    assert toml.capabilities["http"].chain == ("primary", "secondary")
    assert toml.redis_url is None


def test_yaml_suffixes_and_an_empty_yaml_file(tmp_path: Path) -> None:
    for name in ("gw.yaml", "gw.yml", "GW.YML"):
        path = tmp_path / name
        path.write_text("providers:\n  p:\n    kind: http\n    classify: {409: fatal}\n")
        assert load_settings(path, env={}).providers["p"].classify == (("409", "fatal"),)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# everything commented out\n")
    assert load_settings(empty, env={}) == GatewaySettings(source=str(empty))


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: <root>: no such file")):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match=r"absent\.yaml: <root>: no such file"):
        load_settings(env={"RESILIENT_CONFIG": str(tmp_path / "absent.yaml")})


def test_unreadable_path_and_unknown_suffix(tmp_path: Path) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(folder, env={})
    ini = tmp_path / "gw.ini"
    ini.write_text("[gateway]\n")
    with pytest.raises(ConfigError, match=r"gw\.ini: <root>: expected a \.toml, \.yaml or \.yml"):
        load_settings(ini, env={})


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[gateway]\nspool_path = "a.db"\nredis_url = \n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}: ")
    assert "invalid TOML at line 3" in str(info.value)


def test_yaml_syntax_error_names_the_line_but_never_quotes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"providers:\n  p:\n    api_key: {SECRET}\n   kind: http\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}: ")
    assert "invalid YAML at line 4" in str(info.value)
    assert SECRET not in str(info.value)


def test_top_level_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a table of settings at the top level"):
        load_settings(path, env={})


# -- defaults and output shape -------------------------------------------------------------------


def test_a_bare_provider_takes_every_default_from_the_settings_dataclasses() -> None:
    settings = load(provider())
    assert settings.providers["p"] == ProviderSettings(name="p", kind="http")
    assert settings.redis_url is None
    assert settings.spool_path == GatewaySettings().spool_path


def test_a_bare_capability_takes_its_defaults_from_the_dataclass() -> None:
    settings = load({**provider(), "capabilities": {"http": {"chain": ["p"]}}})
    assert settings.capabilities["http"] == CapabilitySettings(name="http", chain=("p",))


def test_tables_fill_only_the_keys_given() -> None:
    settings = load(
        provider(retry={"attempts": 5, "budget": 0.5}, breaker={"open_for": "1s", "window": 60})
    )
    retry, breaker = settings.providers["p"].retry, settings.providers["p"].breaker
    defaults_retry, defaults_breaker = RetrySettings(), BreakerSettings()
    assert (retry.attempts, retry.budget_ratio) == (5, 0.5)
    assert retry.backoff_base == defaults_retry.backoff_base
    assert retry.budget_floor == defaults_retry.budget_floor
    assert (breaker.open_for, breaker.window) == (1.0, 60.0)
    assert breaker.failure_ratio == defaults_breaker.failure_ratio


def test_timeout_shorthand_and_table() -> None:
    short = load(provider(timeout="2s")).providers["p"].timeouts
    assert short == TimeoutSettings(connect=2.0, read=2.0, write=2.0, attempt=2.0, total=None)
    long = load(provider(timeout=60)).providers["p"].timeouts
    assert long == TimeoutSettings(connect=5.0, read=60.0, write=60.0, attempt=60.0)
    table = load(provider(timeout={"read": "1m", "total": "2m"})).providers["p"].timeouts
    assert table == TimeoutSettings(read=60.0, total=120.0)


def test_providers_and_capabilities_are_read_only() -> None:
    settings = load({**provider(), "capabilities": {"http": {"chain": ["p"]}}})
    assert isinstance(settings.providers, MappingProxyType)
    assert isinstance(settings.capabilities, MappingProxyType)
    with pytest.raises(TypeError):
        settings.providers["q"] = settings.providers["p"]  # type: ignore[index]


def test_empty_api_key_base_url_and_redis_url_mean_none() -> None:
    settings = load({"gateway": {"redis_url": ""}, **provider(api_key="", base_url="${URL:-}")})
    assert settings.redis_url is None
    assert settings.providers["p"].api_key is None
    assert settings.providers["p"].base_url is None
    assert load({"gateway": {"redis_url": "redis://cache:6379/0"}}).redis_url == (
        "redis://cache:6379/0"
    )


# -- interpolation -------------------------------------------------------------------------------


def test_interpolation_set_default_and_escape() -> None:
    data = {
        "gateway": {"redis_url": "${REDIS_URL:-redis://localhost:6379}", "spool_path": "$${HOME}"},
        **provider(
            api_key="${KEY}",
            base_url="https://${HOST}:${PORT:-8443}/v1",
            max_concurrent="${CONCURRENCY:-4}",
            enabled="${ENABLED:-true}",
        ),
    }
    settings = load(data, {"KEY": SECRET, "HOST": "api.example.com", "ENABLED": "false"})
    p = settings.providers["p"]
    assert settings.redis_url == "redis://localhost:6379"
    assert settings.spool_path == "${HOME}"
    assert p.api_key == Secret(SECRET)
    assert p.base_url == "https://api.example.com:8443/v1"
    assert p.max_concurrent == 4
    assert p.enabled is False


def test_a_default_applies_when_the_variable_is_empty() -> None:
    settings = load({"gateway": {"spool_path": "${SPOOL:-/tmp/s.db}"}}, {"SPOOL": ""})
    assert settings.spool_path == "/tmp/s.db"


def test_interpolation_reaches_lists() -> None:
    data = {**provider(), "capabilities": {"http": {"chain": ["${FIRST:-p}"]}}}
    assert load(data).capabilities["http"].chain == ("p",)


def test_a_missing_variable_names_the_variable_and_the_key() -> None:
    err = error(provider(api_key="${SENDGRID_API_KEY}"))
    assert err.source == "test.toml"
    assert err.key == "providers.p.api_key"
    assert "SENDGRID_API_KEY" in err.problem
    assert "not set" in err.problem


@pytest.mark.parametrize("text", ["${}", "${1X}", "${A B}", "${unterminated", "${A:-${B}}"])
def test_a_malformed_reference_is_an_error(text: str) -> None:
    err = error({"gateway": {"spool_path": text}})
    assert err.key == "gateway.spool_path"
    assert "expected ${VAR} or ${VAR:-default}" in err.problem


# -- validation ----------------------------------------------------------------------------------

BAD_VALUES = [
    (provider(retry={"attempts": 0}), "providers.p.retry.attempts", "greater than or equal to 1"),
    (provider(retry={"attempts": 21}), "providers.p.retry.attempts", "less than or equal to 20"),
    (provider(retry={"attempts": "three"}), "providers.p.retry.attempts", "a whole number"),
    (provider(retry={"attempts": True}), "providers.p.retry.attempts", "a whole number"),
    (provider(retry={"backoff": "5s..200ms"}), "providers.p.retry.backoff", "'200ms..5s'"),
    (provider(retry={"backoff": "5s"}), "providers.p.retry.backoff", "found '5s'"),
    (provider(retry={"budget": 1.5}), "providers.p.retry.budget", "less than or equal to 1"),
    (provider(retry={"budget_floor": -1}), "providers.p.retry.budget_floor", "greater than"),
    (provider(retry={"budget_window": "0s"}), "providers.p.retry.budget_window", "than zero"),
    (provider(retry={"max_server_delay": "-1s"}), "providers.p.retry.max_server_delay", "dur"),
    (provider(retry={"retry_ambiguous": "maybe"}), "providers.p.retry.retry_ambiguous", "true"),
    (provider(breaker={"failure_ratio": 0}), "providers.p.breaker.failure_ratio", "than 0"),
    (provider(breaker={"failure_ratio": 1.5}), "providers.p.breaker.failure_ratio", "than or"),
    (provider(breaker={"failure_ratio": float("nan")}), "providers.p.breaker.failure_ratio", "fin"),
    (provider(breaker={"window": "soon"}), "providers.p.breaker.window", "found 'soon'"),
    (provider(breaker={"min_calls": 0}), "providers.p.breaker.min_calls", "greater than"),
    (provider(breaker={"slow_call": 0}), "providers.p.breaker.slow_call", "greater than zero"),
    (provider(breaker={"open_growth": 0.5}), "providers.p.breaker.open_growth", "greater than"),
    (provider(breaker={"half_open_probes": 0}), "providers.p.breaker.half_open_probes", "great"),
    (
        provider(breaker={"open_for": "1m", "open_for_max": "30s"}),
        "providers.p.breaker",
        "open_for_max (30s) must be at least open_for (60s)",
    ),
    (provider(breaker={"open_for": "10m"}), "providers.p.breaker", "the default; set it too"),
    (provider(timeout="10x"), "providers.p.timeout", "found '10x'"),
    (provider(timeout="-1s"), "providers.p.timeout", "duration"),
    (provider(timeout=0), "providers.p.timeout", "greater than zero"),
    (provider(timeout=True), "providers.p.timeout", "found true"),
    (provider(timeout={"connect": "3s", "attempt": "2s"}), "providers.p.timeout", "must not"),
    (provider(timeout={"connect": "40s"}), "providers.p.timeout", "(30s, the default)"),
    (provider(timeout={"total": "0ms"}), "providers.p.timeout.total", "greater than zero"),
    (provider(timeout={"atempt": "1s"}), "providers.p.timeout.atempt", "did you mean 'attempt'"),
    (provider(rate_limit="0/min"), "providers.p.rate_limit", "found '0/min'"),
    (provider(rate_limit="fast"), "providers.p.rate_limit", "'600/min'"),
    (provider(rate_limit=600), "providers.p.rate_limit", "found 600"),
    (provider(rate_limit_per_credential=3), "providers.p.rate_limit_per_credential", "true"),
    (provider(max_concurrent=0), "providers.p.max_concurrent", "greater than or equal to 1"),
    (provider(max_concurrent=2.5), "providers.p.max_concurrent", "whole number"),
    (provider(base_url="ftp://files.example.com"), "providers.p.base_url", "http:// or https://"),
    (provider(base_url="https://"), "providers.p.base_url", "found 'https://'"),
    (provider(enabled="maybe"), "providers.p.enabled", "expected true or false"),
    (provider(classify={"6xx": "fatal"}), "providers.p.classify.6xx", "'5xx'"),
    (provider(classify={"409": "explode"}), "providers.p.classify.409", "'fatal'"),
    (provider(classify=["409"]), "providers.p.classify", "expected a table"),
    (provider(retry="3"), "providers.p.retry", "expected a table, found '3'"),
    ({"providers": {"Bad Name": {"kind": "http"}}}, "providers.'Bad Name'", "lowercase"),
    ({"providers": {"p": "http"}}, "providers.p", "expected a table, found 'http'"),
    ({"providers": ["p"]}, "providers", "expected a table of named tables"),
    ({"providers": {"p": {}}}, "providers.p.kind", "required key is missing"),
    ({"providers": {"p": {"kind": "sendgird"}}}, "providers.p.kind", "found 'sendgird'"),
    ({"providers": {"p": {"kind": 3}}}, "providers.p.kind", "known kinds"),
    ({"gateway": {"redis_url": "http://cache:6379"}}, "gateway.redis_url", "redis://"),
    ({"gateway": {"spool_path": ""}}, "gateway.spool_path", "at least 1 character"),
    ({"gateway": "x"}, "gateway", "expected a table"),
    ({**provider(), "capabilities": {"http": {}}}, "capabilities.http.chain", "required"),
    ({**provider(), "capabilities": {"http": {"chain": []}}}, "capabilities.http.chain", "least"),
    ({**provider(), "capabilities": {"http": {"chain": "p"}}}, "capabilities.http.chain", "list"),
    (
        {**provider(), "capabilities": {"http": {"chain": ["p", "p"]}}},
        "capabilities.http.chain",
        "provider 'p' is listed more than once",
    ),
    (
        {**provider(), "capabilities": {"http": {"chain": ["p", "q"]}}},
        "capabilities.http.chain[1]",
        "expected a configured provider (p), found 'q'",
    ),
    (
        {**provider(), "capabilities": {"http": {"chain": ["p"], "deadline": "0s"}}},
        "capabilities.http.deadline",
        "greater than zero",
    ),
    (
        {**provider(), "capabilities": {"http": {"chain": ["p"], "timeout": -1}}},
        "capabilities.http.timeout",
        "duration",
    ),
    (
        {**provider(), "capabilities": {"http": {"chain": ["p"], "defer": "later"}}},
        "capabilities.http.defer",
        "true or false",
    ),
]


@pytest.mark.parametrize(("data", "key", "fragment"), BAD_VALUES)
def test_each_rule_reports_the_key_path_and_what_was_expected(
    data: dict[str, Any], key: str, fragment: str
) -> None:
    err = error(data)
    assert err.key == key, str(err)
    assert fragment in err.problem, str(err)
    assert str(err).startswith(f"test.toml: {key}: ")


def test_an_unknown_kind_lists_the_known_kinds_and_suggests_one() -> None:
    err = error({"providers": {"p": {"kind": "testmial"}}})
    assert "did you mean 'testmail'?" in err.problem
    assert "http" in err.problem
    assert "testmail" in err.problem


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    data = {
        "gateway": {"redis_url": 5},
        **provider(retry={"attempts": 0}, timeout="soon"),
        "capabilities": {"http": {"chain": ["nobody"]}},
    }
    lines = str(error(data)).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "gateway.redis_url",
        "providers.p.timeout",
        "providers.p.retry.attempts",
        "capabilities.http.chain[0]",
    ]
    assert all(line.startswith("test.toml: ") for line in lines)


@pytest.mark.parametrize(
    ("data", "key", "suggestion"),
    [
        ({"gatway": {}}, "gatway", "gateway"),
        (provider(retyr={"attempts": 2}), "providers.p.retyr", "retry"),
        (provider(retry={"atempts": 2}), "providers.p.retry.atempts", "attempts"),
        (provider(breaker={"open_fro": "1s"}), "providers.p.breaker.open_fro", "open_for"),
        (provider(rate_limt="1/s"), "providers.p.rate_limt", "rate_limit"),
        ({"gateway": {"redis": ""}}, "gateway.redis", "redis_url"),
        (
            {**provider(), "capabilities": {"http": {"chian": ["p"]}}},
            "capabilities.http.chian",
            "chain",
        ),
        ({"providers": {"p": {"knid": "http"}}}, "providers.p.knid", "kind"),
    ],
)
def test_unknown_keys_suggest_the_closest_allowed_key(
    data: dict[str, Any], key: str, suggestion: str
) -> None:
    messages = str(error(data))
    assert f"test.toml: {key}: unknown key '{key.rsplit('.', 1)[-1]}'" in messages
    assert f"did you mean '{suggestion}'?" in messages


def test_an_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    err = error(provider(retry={"zzz": 1}))
    assert err.key == "providers.p.retry.zzz"
    assert "expected one of: attempts, backoff" in err.problem


# -- kinds and capabilities ----------------------------------------------------------------------


def mail(**table: Any) -> dict[str, Any]:
    return {"providers": {"m": {"kind": "testmail", "domain": "mg.example.com", **table}}}


def test_kind_options_are_validated_and_kept_read_only() -> None:
    settings = load(mail(region="eu", password="${MAIL_PASSWORD}"), {"MAIL_PASSWORD": "pw-1234"})
    options = settings.providers["m"].options
    assert isinstance(options, MappingProxyType)
    assert options["domain"] == "mg.example.com"
    assert options["region"] == "eu"
    assert options["password"] == Secret("pw-1234")  # SecretStr becomes the library's Secret
    assert "pw-1234" not in repr(settings)
    assert load(mail()).providers["m"].options == {
        "domain": "mg.example.com",
        "region": "us",
        "password": None,
        "tracking": {"opens": False, "clicks": False},
    }


def test_kind_option_errors_name_the_key_path() -> None:
    err = error(mail(region="mars"))
    assert err.key == "providers.m.region"
    assert "'us' or 'eu'" in err.problem
    missing = error({"providers": {"m": {"kind": "testmail"}}})
    assert missing.key == "providers.m.domain"
    assert "required key is missing" in missing.problem


def test_unknown_keys_are_checked_against_common_and_kind_keys() -> None:
    assert "did you mean 'domain'?" in error(mail(domian="x")).problem
    assert "did you mean 'retry'?" in error(mail(retyr={})).problem
    nested = error(mail(tracking={"clikcs": True}))
    assert nested.key == "providers.m.tracking.clikcs"
    assert "did you mean 'clicks'?" in nested.problem
    no_options = error(provider(domain="mg.example.com"))  # the http kind takes no options
    assert no_options.key == "providers.p.domain"
    assert "unknown key 'domain'" in no_options.problem


def test_a_chain_takes_providers_of_its_capability_or_plain_http() -> None:
    data = {
        **mail(),
        "capabilities": {"email": {"chain": ["m", "p"], "defer": True}},
    }
    data["providers"]["p"] = {"kind": "http"}
    settings = load(data)
    assert settings.capabilities["email"].chain == ("m", "p")
    assert settings.capabilities["email"].defer is True


def test_a_chain_rejects_a_provider_of_another_capability() -> None:
    err = error({**mail(), "capabilities": {"sms": {"chain": ["m"]}}})
    assert err.key == "capabilities.sms.chain[0]"
    assert err.problem == "provider 'm' is of kind 'testmail', which serves 'email', not 'sms'"


# -- secrets -------------------------------------------------------------------------------------


def test_secret_values_are_never_printed() -> None:
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        (provider(api_key=12345678), {}),
        (provider(api_key=["${KEY}"]), {"KEY": SECRET}),
        (provider(api_key="${KEY}", timeout="${KEY}"), {"KEY": SECRET}),
        (provider(timeout="${SENDGRID_API_KEY}"), {"SENDGRID_API_KEY": SECRET}),
        (provider(api_key=SECRET, rate_limit=SECRET), {}),
        (mail(password=123456789), {}),
        (provider(base_url=f"ftp://user:{SECRET}@host"), {}),
        ({"gateway": {"redis_url": f"http://:{SECRET}@cache"}}, {}),
        (provider(api_key="${NOPE:-${KEY}}"), {"KEY": SECRET}),
    ]
    for data, env in cases:
        text = str(error(data, env))
        assert SECRET not in text, text
        assert "12345678" not in text, text
        assert "***" in text, text


def test_a_provider_named_like_a_secret_does_not_hide_its_values() -> None:
    err = error({"providers": {"keycdn": {"kind": "http", "base_url": "ftp://cdn"}}})
    assert err.problem == "expected an http:// or https:// URL, found 'ftp://cdn'"


def test_repr_of_settings_never_shows_the_api_key() -> None:
    settings = load(provider(api_key="${KEY}"), {"KEY": SECRET})
    assert settings.providers["p"].api_key is not None
    assert settings.providers["p"].api_key.reveal() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_errors_are_config_errors_never_pydantic_or_key_errors() -> None:
    for data in ({"providers": None, "capabilities": 3}, {"gateway": [1]}, {1: 2}):
        with pytest.raises(ConfigError):
            load(data)  # type: ignore[arg-type]


# -- hostile and impossible files: a ConfigError at load, fast, never a hang or a traceback ------

TOO_SLOW = 5.0  # seconds; each of these loads takes milliseconds


def load_file(folder: Path, name: str, text: str) -> ConfigError:
    """The ConfigError loading `text` as file `name` gives, within TOO_SLOW seconds."""
    path = folder / name
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert time.monotonic() - started < TOO_SLOW
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def gateway_file(suffix: str, key: str, value: str) -> str:
    """`[gateway] key = value` as TOML or YAML."""
    if suffix == "toml":
        return f"[gateway]\n{key} = {json.dumps(value)}\n"
    return f"gateway:\n  {key}: {json.dumps(value)}\n"


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"redis://:{SECRET}@cache:99999/0", "port is a number from 1 to 65535"),
        (f"redis://:p@{SECRET}@cache:99999/0", "port is a number from 1 to 65535"),  # '@' in it
        (f"rediss://user:{SECRET}@cache:0", "port is a number from 1 to 65535"),
        (f"redis://:{SECRET}@cache:63a9", "port is a number from 1 to 65535"),
        (f"redis://:{SECRET}@[::1:6379", "well-formed URL"),
        (f"http://:{SECRET}@cache:6379", "redis://, rediss:// or unix://"),
        ("redis:cache:6379", "redis://, rediss:// or unix://"),  # redis-py needs the //
        ("unix://", "the socket's path"),
    ],
)
def test_an_unusable_redis_url_names_the_key_and_never_its_password(
    tmp_path: Path, suffix: str, url: str, fragment: str
) -> None:
    """redis-py would raise a bare ValueError (quoting nothing useful) at the first connect."""
    err = load_file(tmp_path, f"gw.{suffix}", gateway_file(suffix, "redis_url", url))
    assert err.key == "gateway.redis_url", str(err)
    assert fragment in err.problem, str(err)
    assert SECRET not in str(err), str(err)


@pytest.mark.parametrize(
    "url",
    ["redis://cache:6379/0", "rediss://u:pw@[::1]:6380/1", "REDIS://cache", "unix:///run/r.sock"],
)
def test_usable_redis_urls_load(url: str) -> None:
    assert load({"gateway": {"redis_url": url}}).redis_url == url


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
def test_a_spool_path_naming_a_directory_is_refused(tmp_path: Path, suffix: str) -> None:
    """sqlite3 raised a bare OperationalError for "/" on the first parked request."""
    for value in ("/", str(tmp_path), f"{tmp_path}/"):
        err = load_file(tmp_path, f"gw.{suffix}", gateway_file(suffix, "spool_path", value))
        assert err.key == "gateway.spool_path", str(err)
        assert "expected the path of a file" in err.problem, str(err)


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
def test_a_spool_path_whose_directory_cannot_be_made_is_refused(
    tmp_path: Path, suffix: str
) -> None:
    """A file where a directory should be: mkdir raised a bare NotADirectoryError."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spool = str(blocker / "deeper" / "spool.db")
    err = load_file(tmp_path, f"gw.{suffix}", gateway_file(suffix, "spool_path", spool))
    assert err.key == "gateway.spool_path", str(err)
    assert f"{blocker} is not a directory" in err.problem, str(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_a_spool_path_in_a_directory_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    err = error({"gateway": {"spool_path": str(locked / "new" / "spool.db")}})
    assert err.key == "gateway.spool_path"
    assert f"{locked} is not writable" in err.problem


def test_the_ledger_beside_the_spool_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "spool-ledger.db").mkdir()
    err = error({"gateway": {"spool_path": str(tmp_path / "spool.db")}})
    assert err.key == "gateway.spool_path"
    assert "spool-ledger.db exists and is not a file" in err.problem


def test_a_spool_path_in_directories_yet_to_be_made_loads_and_makes_nothing(
    tmp_path: Path,
) -> None:
    """The spool makes its directories when it opens; loading a config must not."""
    spool = tmp_path / "a" / "b" / "spool.db"
    assert load({"gateway": {"spool_path": str(spool)}}).spool_path == str(spool)
    assert not (tmp_path / "a").exists()


BILLION_LAUGHS = "".join(
    [f"lol0: &lol0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"lol{n}: &lol{n} [{', '.join([f'*lol{n - 1}'] * 9)}]\n" for n in range(1, 10)]
)  # 9**10 values from 10 lines: the loader walked them all, for minutes
MERGE_LAUGHS = "".join(
    ["m0: &m0 {" + ", ".join(f"k{n}: 1" for n in range(10)) + "}\n"]
    + [f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 10)}]}}\n" for n in range(1, 10)]
)  # merges copy: PyYAML itself would build lists of 10**10 pairs


@pytest.mark.parametrize(("text", "key"), [(BILLION_LAUGHS, "lol5"), (MERGE_LAUGHS, "m4.'<<'")])
def test_yaml_aliases_that_expand_exponentially_are_refused_fast(
    tmp_path: Path, text: str, key: str
) -> None:
    err = load_file(tmp_path, "laughs.yaml", text)
    assert err.key == key, str(err)
    assert err.problem == "more than 100000 values once aliases expand"


def test_a_yaml_alias_inside_what_it_names_is_refused(tmp_path: Path) -> None:
    """A cycle PyYAML builds happily, and any walk of it recursed until RecursionError."""
    err = load_file(tmp_path, "cycle.yaml", "gateway: &g {spool_path: [*g]}\n")
    assert err.key == "gateway.spool_path[0]"
    assert "refers to the list or table that contains it" in err.problem


def test_yaml_aliases_within_the_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "providers:\n"
        "  p: {kind: http, retry: &retry {attempts: 2}}\n"
        "  q: {kind: http, retry: {<<: *retry, budget: 0.1}}\n"
    )
    settings = load_settings(path, env={})
    assert settings.providers["p"].retry.attempts == settings.providers["q"].retry.attempts == 2
    assert settings.providers["q"].retry.budget_ratio == 0.1


DEEP = 5000  # levels: PyYAML's composer and tomllib recurse, to RecursionError


@pytest.mark.parametrize(
    "text",
    [
        "gateway:\n  spool_path: " + "[" * DEEP + "]" * DEEP + "\n",
        "gateway:\n  spool_path: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n",
        "gateway:\n  spool_path:\n" + "".join(f"{'  ' * (n + 2)}a:\n" for n in range(DEEP)),
    ],
    ids=["flow-lists", "flow-tables", "block"],
)
def test_yaml_nested_thousands_deep_is_refused_fast(tmp_path: Path, text: str) -> None:
    err = load_file(tmp_path, "deep.yaml", text)
    assert err.key.startswith("gateway.spool_path"), str(err)
    assert err.key.count("[0]") + err.key.count(".a") == 31, str(err)  # where 32 levels end
    assert err.problem == "nested more than 32 levels deep"


@pytest.mark.parametrize(
    "text",
    [
        "[gateway]\nspool_path = " + "[" * DEEP + "]" * DEEP + "\n",
        "[gateway]\nspool_path = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n",
    ],
    ids=["arrays", "inline-tables"],
)
def test_toml_nested_thousands_deep_is_refused_fast(tmp_path: Path, text: str) -> None:
    """tomllib has no bound of its own: a parse error then, with the file but no key."""
    err = load_file(tmp_path, "deep.toml", text)
    assert err.problem == "invalid TOML: nested more than 32 levels deep", str(err)


def test_toml_nested_past_the_bound_but_parsed_names_the_key(tmp_path: Path) -> None:
    err = load_file(tmp_path, "deep.toml", "[gateway]\nspool_path = " + "[" * 40 + "]" * 40)
    assert err.key == "gateway.spool_path" + "[0]" * 31
    assert err.problem == "nested more than 32 levels deep"


def test_a_mapping_that_contains_itself_or_shares_parts_exponentially_is_refused() -> None:
    """settings_from_mapping takes Python objects, which may be cyclic or share parts."""
    cyclic: dict[str, Any] = {}
    cyclic["gateway"] = {"spool_path": cyclic}
    err = error(cyclic)
    assert err.key.startswith("gateway.spool_path.gateway.spool_path.")
    assert err.problem == "nested more than 32 levels deep"

    shared: list[Any] = ["x"] * 10
    for _ in range(5):
        shared = [shared] * 10  # 10**6 values in a few hundred list objects
    started = time.monotonic()
    err = error({"gateway": {"spool_path": shared}})
    assert time.monotonic() - started < TOO_SLOW
    assert err.key.startswith("gateway.spool_path[")
    assert err.problem == "more than 100000 values in the whole config"


# -- property: anything in, GatewaySettings or ConfigError out -----------------------------------

JUNK_TOKEN = "tok-DO-NOT-PRINT-5678"
ENV = {"PRIMARY_API_KEY": SECRET, "MAIL_PASSWORD": MAIL_PASSWORD, "JUNK_TOKEN": JUNK_TOKEN}
VALID: dict[str, Any] = {
    "gateway": {"redis_url": "${REDIS_URL:-}", "spool_path": ".resilient/spool.db"},
    "providers": {
        "primary": {
            "kind": "http",
            "api_key": "${PRIMARY_API_KEY}",
            "base_url": "https://api.example.com",
            "timeout": "10s",
            "rate_limit": "600/min",
            "max_concurrent": 10,
            "retry": {"attempts": 3, "backoff": "200ms..5s", "budget": 0.2},
            "breaker": {"failure_ratio": 0.5, "window": "30s", "open_for": "15s"},
            "classify": {"409": "fatal", "5xx": "retryable"},
        },
        "mail": {"kind": "testmail", "domain": "mg.example.com", "password": "${MAIL_PASSWORD}"},
    },
    "capabilities": {
        "http": {"chain": ["primary"]},
        "email": {"chain": ["mail", "primary"], "defer": True, "deadline": "1h"},
    },
}
JUNK_TEXT = [
    "-1s", "0s", "10x", "1e999s", "9" * 400 + "s", "5s..1s", "..", "0/min", "-5/s", "fast",
    "1/0s", "${MISSING_VAR}", "${JUNK_TOKEN}", "$${", "${", "${bad name}", "${A:-${B}}",
    "ftp://x", "https://", "6xx", "nobody", "http", "testmail", "", "true", "NaN",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),
    st.floats(),
    st.datetimes(),
    st.text(max_size=12),
    st.sampled_from(JUNK_TEXT),
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = st.sampled_from(
    ["retyr", "attempts", "kind", "chain", "timeout", "connect", "domain", "password", "x"]
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _mutate(data: dict[str, Any], draw: st.DataObject) -> None:
    paths = _paths(data)
    path = draw.draw(st.sampled_from(paths[1:] if len(paths) > 1 else paths))
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    action = draw.draw(st.sampled_from(["replace", "delete", "add", "chain"]))
    if action == "replace" and path:
        parent[path[-1]] = draw.draw(junk)
    elif action == "delete" and path and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "chain":
        data.setdefault("capabilities", {"x": {"chain": []}})
        for capability in (
            data["capabilities"].values() if isinstance(data["capabilities"], dict) else []
        ):
            if isinstance(capability, dict) and isinstance(capability.get("chain"), list):
                capability["chain"].append(draw.draw(st.sampled_from(["ghost", "mail", "primary"])))
    else:
        target = parent[path[-1]] if path else parent
        if isinstance(target, dict):
            target[draw.draw(KEYS)] = draw.draw(junk)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_config_gives_settings_or_a_config_error_naming_a_key(draw: st.DataObject) -> None:
    data = copy.deepcopy(VALID)
    for _ in range(draw.draw(st.integers(min_value=1, max_value=4))):
        _mutate(data, draw)
    try:
        result = settings_from_mapping(data, source="prop.yaml", env=ENV)
    except ConfigError as err:
        text = str(err)
        assert err.source == "prop.yaml"
        assert err.key, text
        assert text.startswith(f"prop.yaml: {err.key}: ")
        assert all(line.startswith("prop.yaml: ") for line in text.splitlines())
        assert all(len(line.split(": ", 2)) == 3 for line in text.splitlines())
        for secret in (SECRET, MAIL_PASSWORD, JUNK_TOKEN):
            assert secret not in text, text
    else:
        assert isinstance(result, GatewaySettings)
        assert SECRET not in repr(result)
        assert MAIL_PASSWORD not in repr(result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16MiB", 16 << 20), ("512KiB", 512 << 10), ("2MB", 2_000_000), (65536, 65536)],
)
def test_max_response_bytes_takes_a_size(value: object, expected: int) -> None:
    settings = settings_from_mapping(
        {"providers": {"p": {"kind": "http", "max_response_bytes": value}}}
    )
    assert settings.providers["p"].max_response_bytes == expected


@pytest.mark.parametrize("value", ["lots", "16 parsecs", 100, True])
def test_max_response_bytes_refuses_what_is_no_size(value: object) -> None:
    with pytest.raises(ConfigError, match=r"providers\.p\.max_response_bytes"):
        settings_from_mapping({"providers": {"p": {"kind": "http", "max_response_bytes": value}}})
