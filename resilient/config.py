"""Typed, validated config: a TOML or YAML file, `${ENV}` interpolation, frozen settings out.

Validation runs once, at load. Every mistake becomes one line of a ConfigError naming the file,
the dotted key path and what was expected, so ops fix a config in one edit; secrets never appear
in those lines. The pydantic models here are internal: the hot path reads only the frozen
dataclasses of `resilient.settings`, and every default comes from those dataclasses.

Hostile or mistaken files fail the same way, fast: nesting deeper than `_MAX_DEPTH` levels, or
YAML aliases expanding a file past `_MAX_VALUES` values (a "billion laughs" file is a few hundred
bytes that would expand to a billion), is refused before any of it is validated.

Timeouts: `timeout = "10s"` is shorthand for `timeout = { attempt = "10s" }`. Whenever `attempt`
is given, unset `connect` becomes min(default connect, attempt) and unset `read`/`write` become
`attempt`; otherwise they keep the TimeoutSettings defaults. An empty `api_key`, `base_url` or
`redis_url` (as `"${VAR:-}"` gives when VAR is unset) means "not set".
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib.util
import math
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from resilient import registry
from resilient.errors import ConfigError
from resilient.ledger.sqlite import ledger_path
from resilient.policy.outcome_class import Outcome
from resilient.secrets import Secret
from resilient.settings import (
    AlertSettings,
    BreakerSettings,
    CacheSettings,
    CapabilitySettings,
    GatewaySettings,
    ProviderSettings,
    RetrySettings,
    TimeoutSettings,
)
from resilient.units import Rate, parse_duration, parse_duration_range, parse_rate, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["CONFIG_ENV_VAR", "load_settings", "settings_from_mapping"]

CONFIG_ENV_VAR = "RESILIENT_CONFIG"

_Path = tuple[object, ...]  # keys as parsed: strings, or the ints and booleans YAML also makes
_Model = TypeVar("_Model", bound=BaseModel)

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STATUS_PATTERN = re.compile(r"[1-5](?:[0-9]{2}|xx)")
_URL_PASSWORD = re.compile(r"(//[^/?#@\s]*?:)[^/?#\s]*@")  # to the last '@', as urlsplit reads
_REDIS_URL = re.compile(r"(?i)(rediss?|unix)://")  # redis-py requires the '//' too
_SENSITIVE_WORDS = ("key", "secret", "password", "token")
_MIN_REDACTED = 4  # shorter values would mask ordinary words in the message
_MAX_DEPTH = 32  # levels of nesting; a real config uses about six
_MAX_VALUES = 100_000  # values in a YAML file once its aliases are expanded

_TIMEOUT = TimeoutSettings()
_RETRY = RetrySettings()
_BREAKER = BreakerSettings()
_PROVIDER = ProviderSettings(name="", kind="")
_CAPABILITY = CapabilitySettings(name="", chain=())
_CACHE = CacheSettings()
_GATEWAY = GatewaySettings()


# -- value types ---------------------------------------------------------------------------------


def _not_bool(expected: str) -> BeforeValidator:
    """pydantic reads true as 1; in a config that is always a typo, so numbers refuse booleans."""

    def check(value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"expected {expected}")
        return value

    return BeforeValidator(check)


def _duration(value: object) -> float:
    if isinstance(value, (str, int, float)):
        try:
            return parse_duration(value)
        except (ValueError, OverflowError):  # OverflowError: an int too large for a float
            pass
    raise ValueError("expected a duration like '250ms', '10s' or '1h', or a number of seconds")


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError("expected a duration greater than zero")
    return seconds


def _backoff(value: object) -> tuple[float, float]:
    if isinstance(value, str):
        try:
            return parse_duration_range(value)
        except ValueError:
            pass
    raise ValueError("expected a range like '200ms..5s' (start > 0, end >= start)")


def _rate(value: object) -> Rate:
    try:
        rate = parse_rate(value) if isinstance(value, str) else None
    except ValueError:
        rate = None
    if rate is None or not 0 < rate.per_second < math.inf:
        raise ValueError("expected a positive rate like '600/min', '10/s' or '5/10s'")
    return rate


def _status_pattern(value: object) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _STATUS_PATTERN.fullmatch(text):
        raise ValueError("expected a status code like '409' or a status class like '5xx'")
    return text


def _redis_url(value: str) -> str:
    """What redis-py would refuse, or fail on, only when it first connects."""
    if not _REDIS_URL.match(value):
        raise ValueError("expected a redis://, rediss:// or unix:// URL, or nothing")
    try:
        url = urlsplit(value)
    except ValueError:  # a malformed [IPv6] host
        raise ValueError("expected a well-formed URL") from None
    try:
        port = url.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("expected a URL whose port is a number from 1 to 65535")
    if url.scheme == "unix" and not url.path:
        raise ValueError(
            "expected a unix:// URL with the socket's path, like unix:///run/redis.sock"
        )
    return value


def _spool_file(value: str) -> str:
    """A file SQLite can open, beside a ledger it can open, in a directory that exists or can be
    made and is writable: checked now, without creating anything, so a bad path is not found
    only when the first request is parked."""
    if "\0" in value:
        raise ValueError("expected a file path, which cannot contain a NUL character")
    if value.endswith(("/", os.sep)):
        raise ValueError("expected the path of a file, not of a directory")
    try:
        problem = _spool_problem(Path(value))
    except OSError as exc:  # a directory on the way that cannot be searched, a name too long
        problem = f"expected a path this process can use: {exc.strerror or exc}"
    if problem:
        raise ValueError(problem)
    return value


def _spool_problem(spool: Path) -> str | None:
    for file in (spool, ledger_path(spool)):
        if file.exists() and not file.is_file():
            return f"expected the path of a file: {file} exists and is not a file"
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return f"expected a file this process can write: {file} is not writable"
    directory = spool.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # the nearest ancestor that exists: the rest can be made
    if not directory.is_dir():
        return f"expected a file in a directory: {directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"expected a file in a writable directory: {directory} is not writable"
    return None


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    _ = parts.port  # raises ValueError on a malformed port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return value


_Int = Annotated[int, _not_bool("a whole number")]
_Float = Annotated[float, _not_bool("a number")]
_Duration = Annotated[float, PlainValidator(_duration)]
_PositiveDuration = Annotated[float, PlainValidator(_positive_duration)]
_Backoff = Annotated[tuple[float, float], PlainValidator(_backoff)]
_Rate = Annotated[Rate, PlainValidator(_rate)]
_StatusPattern = Annotated[str, PlainValidator(_status_pattern)]


# -- tables --------------------------------------------------------------------------------------


class _Table(BaseModel):
    """A config table: unknown keys are errors, NaN and infinity are never valid numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _Gateway(_Table):
    redis_url: str | None = _GATEWAY.redis_url
    spool_path: Annotated[str, Field(min_length=1), AfterValidator(_spool_file)] = (
        _GATEWAY.spool_path
    )
    overrides_path: Annotated[str, Field(min_length=1)] = _GATEWAY.overrides_path
    encryption_key: str | None = None
    async_client: Literal["httpx", "aiohttp"] | None = None

    @field_validator("async_client")
    @classmethod
    def _installed(cls, value: str | None) -> str | None:
        if value == "aiohttp" and importlib.util.find_spec("aiohttp") is None:
            raise ValueError(
                "aiohttp is not installed: pip install 'resilient-gateway[aiohttp]', "
                'or set async_client = "httpx"'
            )
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode())
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "expected a Fernet key (32 url-safe base64-encoded bytes, as made by "
                "cryptography.fernet.Fernet.generate_key())"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        url = urlsplit(_redis_url(value))
        if url.password:
            Secret(unquote(url.password))  # masked in every log line, as API keys are
        return value


class _Timeout(_Table):
    connect: _PositiveDuration | None = None
    read: _PositiveDuration | None = None
    write: _PositiveDuration | None = None
    attempt: _PositiveDuration | None = None
    total: _PositiveDuration | None = _TIMEOUT.total

    @model_validator(mode="after")
    def _connect_within_attempt(self) -> _Timeout:
        timeouts = self.settings()
        if timeouts.connect > timeouts.attempt:
            attempt = f"{timeouts.attempt:g}s" + (
                "" if self.attempt is not None else ", the default"
            )
            raise ValueError(f"connect ({timeouts.connect:g}s) must not exceed attempt ({attempt})")
        return self

    def settings(self) -> TimeoutSettings:
        if self.attempt is None:
            attempt, read, write = _TIMEOUT.attempt, _TIMEOUT.read, _TIMEOUT.write
        else:
            attempt = read = write = self.attempt
        return TimeoutSettings(
            connect=min(_TIMEOUT.connect, attempt) if self.connect is None else self.connect,
            read=read if self.read is None else self.read,
            write=write if self.write is None else self.write,
            attempt=attempt,
            total=self.total,
        )


class _Retry(_Table):
    attempts: Annotated[_Int, Field(ge=1, le=20)] = _RETRY.attempts
    backoff: _Backoff = (_RETRY.backoff_base, _RETRY.backoff_cap)
    max_server_delay: _Duration = _RETRY.max_server_delay
    budget: Annotated[_Float, Field(ge=0, le=1)] = _RETRY.budget_ratio
    budget_floor: Annotated[_Int, Field(ge=0)] = _RETRY.budget_floor
    budget_window: _PositiveDuration = _RETRY.budget_window
    retry_ambiguous: bool = _RETRY.retry_ambiguous

    def settings(self) -> RetrySettings:
        return RetrySettings(
            attempts=self.attempts,
            backoff_base=self.backoff[0],
            backoff_cap=self.backoff[1],
            max_server_delay=self.max_server_delay,
            budget_ratio=self.budget,
            budget_floor=self.budget_floor,
            budget_window=self.budget_window,
            retry_ambiguous=self.retry_ambiguous,
        )


class _Breaker(_Table):
    failure_ratio: Annotated[_Float, Field(gt=0, le=1)] = _BREAKER.failure_ratio
    window: _PositiveDuration = _BREAKER.window
    min_calls: Annotated[_Int, Field(ge=1)] = _BREAKER.min_calls
    slow_call: _PositiveDuration | None = _BREAKER.slow_call
    open_for: _PositiveDuration = _BREAKER.open_for
    open_for_max: _PositiveDuration = _BREAKER.open_for_max
    open_growth: Annotated[_Float, Field(ge=1)] = _BREAKER.open_growth
    half_open_probes: Annotated[_Int, Field(ge=1)] = _BREAKER.half_open_probes

    @model_validator(mode="after")
    def _max_covers_open_for(self) -> _Breaker:
        if self.open_for_max < self.open_for:
            hint = "" if "open_for_max" in self.model_fields_set else ", the default; set it too"
            raise ValueError(
                f"open_for_max ({self.open_for_max:g}s{hint}) must be at least "
                f"open_for ({self.open_for:g}s)"
            )
        return self

    def settings(self) -> BreakerSettings:
        return BreakerSettings(**self.model_dump())


class _Provider(_Table):
    """The keys every provider takes; `kind` and the kind's own options are checked apart."""

    enabled: bool = _PROVIDER.enabled
    api_key: str | None = None
    base_url: str | None = _PROVIDER.base_url
    timeout: _Timeout = Field(default_factory=_Timeout)
    rate_limit: _Rate | None = _PROVIDER.rate_limit
    rate_limit_per_credential: bool = _PROVIDER.rate_limit_per_credential
    max_concurrent: Annotated[_Int, Field(ge=1)] | None = _PROVIDER.max_concurrent
    max_response_bytes: Annotated[_Int, Field(ge=1024)] = _PROVIDER.max_response_bytes
    retry: _Retry = Field(default_factory=_Retry)
    breaker: _Breaker = Field(default_factory=_Breaker)
    classify: dict[_StatusPattern, Outcome] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None  # "" as from "${BASE_URL:-}": the default

    @field_validator("max_response_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("timeout", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return value
        return {"attempt": _positive_duration(value)}

    def settings(self, name: str, kind: str, options: Mapping[str, Any]) -> ProviderSettings:
        return ProviderSettings(
            name=name,
            kind=kind,
            enabled=self.enabled,
            base_url=self.base_url,
            api_key=Secret(self.api_key) if self.api_key else None,
            timeouts=self.timeout.settings(),
            retry=self.retry.settings(),
            breaker=self.breaker.settings(),
            rate_limit=self.rate_limit,
            rate_limit_per_credential=self.rate_limit_per_credential,
            max_concurrent=self.max_concurrent,
            max_response_bytes=self.max_response_bytes,
            classify=tuple((pattern, outcome.value) for pattern, outcome in self.classify.items()),
            options=options,
        )


class _Alerts(_Table):
    p95_latency: _PositiveDuration = _GATEWAY.alerts.p95_latency
    error_rate: Annotated[_Float, Field(gt=0, le=1)] = _GATEWAY.alerts.error_rate
    min_calls: Annotated[_Int, Field(ge=1)] = _GATEWAY.alerts.min_calls
    breaker_open: _PositiveDuration = _GATEWAY.alerts.breaker_open
    queue_age: _PositiveDuration = _GATEWAY.alerts.queue_age
    interval: _PositiveDuration = _GATEWAY.alerts.interval

    def settings(self) -> AlertSettings:
        return AlertSettings(**self.model_dump())


class _Cache(_Table):
    ttl: _PositiveDuration = _CACHE.ttl
    backend: Literal["memory", "redis"] = _CACHE.backend
    max_entries: Annotated[_Int, Field(ge=1)] = _CACHE.max_entries

    def settings(self) -> CacheSettings:
        return CacheSettings(**self.model_dump())


class _Capability(_Table):
    chain: list[str]
    defer: bool = _CAPABILITY.defer
    deadline: _PositiveDuration = _CAPABILITY.deadline
    timeout: _PositiveDuration | None = _CAPABILITY.timeout
    fallback: str | None = _CAPABILITY.fallback
    fallback_sender: Annotated[str, Field(min_length=1)] | None = _CAPABILITY.fallback_sender
    cache: _Cache | None = None
    context_fallback: dict[str, str] = Field(default_factory=dict)

    @field_validator("context_fallback")
    @classmethod
    def _two_models(cls, routes: dict[str, str]) -> dict[str, str]:
        for model, larger in routes.items():
            if not model or not larger or model == larger:
                raise ValueError(f"{model!r} = {larger!r}: expected two different model names")
        return routes

    @field_validator("chain")
    @classmethod
    def _chain(cls, chain: list[str]) -> list[str]:
        if not chain:
            raise ValueError("expected at least one provider name")
        for name in chain:
            if chain.count(name) > 1:
                raise ValueError(f"provider {name!r} is listed more than once")
        return chain


_ROOT_KEYS = ("gateway", "providers", "capabilities", "alerts")
_COMMON_KEYS = tuple(_Provider.model_fields)
_PROVIDER_KEYS = ("kind", *_COMMON_KEYS)


# -- the loader ----------------------------------------------------------------------------------


class _Refused(Exception):
    """A file or mapping too deep or too large to walk: stops the walk at once, at `path`."""

    def __init__(self, path: _Path, problem: str) -> None:
        super().__init__(problem)
        self.path, self.problem = path, problem


class _BoundedYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses, before building anything, a document nested deeper than
    `_MAX_DEPTH` (the composer recurses: 5,000 levels raise RecursionError) or one whose aliases
    expand it past `_MAX_VALUES` values, counting merges (`<<: *a`), which copy as they build."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[object] = []  # keys and positions down to the node being composed

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if parent is None or (index is None and self.check_event(yaml.ScalarEvent)):
            return super().compose_node(parent, index)  # the root, or a plain key: no deeper
        self.key_path.append(_yaml_label(index))
        try:
            if len(self.key_path) > _MAX_DEPTH:
                raise _Refused(tuple(self.key_path), f"nested more than {_MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.key_path.pop()

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded(node, (), {}, set())
        return node


def _yaml_label(index: object) -> object:
    """A node's place in its parent, as a key path shows it: the key, or the list position."""
    if isinstance(index, yaml.ScalarNode):
        return index.value  # a mapping value: `index` is its key's node
    return index if isinstance(index, int) else "<key>"  # a list item, or a key itself


def _expanded(
    node: yaml.Node, path: _Path, done: dict[int, tuple[int, int]], open_: set[int]
) -> tuple[int, int]:
    """(values, levels) of `node` with its aliases expanded, each node walked once (a billion
    laughs is a few hundred nodes); raises _Refused past the bounds or on an alias cycle."""
    key = id(node)
    if key in open_:
        raise _Refused(path, "an alias refers to the list or table that contains it")
    if key not in done:
        if len(path) > _MAX_DEPTH:
            raise _Refused(path, f"nested more than {_MAX_DEPTH} levels deep")
        open_.add(key)
        values, levels = 1, 0
        children: list[tuple[object, yaml.Node]] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    children.append(("<key>", key_node))  # a list or table as a key: rare
                children.append((_yaml_label(key_node), value_node))
            values += sum(isinstance(key_node, yaml.ScalarNode) for key_node, _ in node.value)
        for label, child in children:
            child_values, child_levels = _expanded(child, (*path, label), done, open_)
            values, levels = values + child_values, max(levels, child_levels + 1)
            if values > _MAX_VALUES:
                break
        open_.discard(key)
        done[key] = values, levels
    values, levels = done[key]
    if len(path) + levels > _MAX_DEPTH:
        raise _Refused(path, f"nested more than {_MAX_DEPTH} levels deep once aliases expand")
    if values > _MAX_VALUES:
        raise _Refused(path, f"more than {_MAX_VALUES} values once aliases expand")
    return values, levels


class _Loader:
    """One load: collects every problem, then raises them together as one ConfigError."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.problems: list[tuple[str, str]] = []
        self.secrets: set[str] = set()  # values that must never reach a message
        self.kinds: dict[str, registry.ProviderKind] = {}  # provider name -> its (valid) kind
        self.values = 0  # values interpolated so far

    def load(self, data: object) -> GatewaySettings:
        if data is None:
            data = {}  # an empty YAML file
        if not isinstance(data, Mapping):
            self.fail((), f"expected a table of settings at the top level, found {_found(data)}")
        else:
            try:
                data = self.interpolate(data, ())
            except _Refused as refused:
                self.fail(refused.path, refused.problem)
        self.raise_problems()
        assert isinstance(data, Mapping)
        self.check_keys(data, (), _ROOT_KEYS)
        gateway = self.validate(_Gateway, _section(data, "gateway"), ("gateway",))
        alerts = self.validate(_Alerts, _section(data, "alerts"), ("alerts",))
        raw_providers = _section(data, "providers")
        providers = {
            name: settings
            for name, table in self.tables(raw_providers, ("providers",))
            if (settings := self.provider(name, table)) is not None
        }
        declared = [  # a chain naming a provider whose table is wrong is not a second error
            name
            for name in (raw_providers if isinstance(raw_providers, Mapping) else ())
            if isinstance(name, str) and _NAME.fullmatch(name)
        ]
        capabilities = {
            name: capability
            for name, table in self.tables(_section(data, "capabilities"), ("capabilities",))
            if (capability := self.capability(name, table, declared)) is not None
        }
        self.check_fallbacks(capabilities)
        for name, cap in capabilities.items():
            if cap.cache and cap.cache.backend == "redis" and gateway and not gateway.redis_url:
                self.fail(("capabilities", name, "cache", "backend"), "needs gateway.redis_url")
        self.raise_problems()
        assert gateway is not None and alerts is not None
        return GatewaySettings(
            source=self.source,
            redis_url=gateway.redis_url,
            spool_path=gateway.spool_path,
            overrides_path=gateway.overrides_path,
            alerts=alerts.settings(),
            encryption_key=Secret(gateway.encryption_key) if gateway.encryption_key else None,
            async_client=gateway.async_client,
            providers=types.MappingProxyType(providers),
            capabilities=types.MappingProxyType(capabilities),
        )

    # -- interpolation ---------------------------------------------------------------------------

    def interpolate(self, value: object, path: _Path) -> object:
        self.values += 1  # bounds the walk: a mapping may contain itself, or share its parts
        if len(path) > _MAX_DEPTH:
            raise _Refused(path, f"nested more than {_MAX_DEPTH} levels deep")
        if self.values > _MAX_VALUES:
            raise _Refused(path, f"more than {_MAX_VALUES} values in the whole config")
        if isinstance(value, str):
            text = _REFERENCE.sub(lambda match: self.substitute(match, value, path), value)
            if _is_sensitive(path) and len(text) >= _MIN_REDACTED:
                self.secrets.add(text)
            return text
        if isinstance(value, Mapping):
            return {key: self.interpolate(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.interpolate(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def substitute(self, match: re.Match[str], text: str, path: _Path) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        name, has_default, default = (body or "").partition(":-")
        if body is None or not _ENV_NAME.fullmatch(name) or "${" in default:
            self.fail(
                path,
                "expected ${VAR} or ${VAR:-default} (write $${ for a literal '${'), "
                f"found {_found(text, secret=_is_sensitive(path))}",
            )
            return ""
        value = self.env.get(name)
        if value is None or (has_default and not value):
            if has_default:
                return default
            self.fail(
                path, f"environment variable {name} is not set (${{{name}:-}} would allow it)"
            )
            return ""
        if _is_sensitive_name(name) and len(value) >= _MIN_REDACTED:
            self.secrets.add(value)
        return value

    # -- tables ----------------------------------------------------------------------------------

    def tables(self, value: object, path: _Path) -> list[tuple[str, Mapping[Any, Any]]]:
        """The named sub-tables of `[providers]` or `[capabilities]` that are worth validating."""
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a table of named tables, found {_found(value)}")
            return []
        named = []
        for name, table in value.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                self.fail(
                    (*path, name),
                    "expected a name of lowercase letters, digits, '_' or '-', "
                    "starting with a letter",
                )
            elif not isinstance(table, Mapping):
                self.fail((*path, name), f"expected a table, found {_found(table)}")
            else:
                named.append((name, table))
        return named

    def provider(self, name: str, table: Mapping[Any, Any]) -> ProviderSettings | None:
        path: _Path = ("providers", name)
        kind = self.kind(table, (*path, "kind"))
        common = {key: value for key, value in table.items() if key in _COMMON_KEYS}
        rest = {key: value for key, value in table.items() if key not in _PROVIDER_KEYS}
        model = self.validate(_Provider, common, path)
        if kind is None:
            for key in rest:  # could be the kind's option: flag only the likely typos
                if difflib.get_close_matches(str(key), _PROVIDER_KEYS, n=1):
                    self.unknown_key(path, key, _PROVIDER_KEYS)
            return None
        self.kinds[name] = kind
        options = self.options(kind, rest, path)
        if model is None or options is None:
            return None
        return model.settings(name, kind.name, options)

    def kind(self, table: Mapping[Any, Any], path: _Path) -> registry.ProviderKind | None:
        known = registry.kinds()
        listing = ", ".join(sorted(known))
        if "kind" not in table:
            self.fail(path, f"required key is missing; expected one of the known kinds: {listing}")
            return None
        value = table["kind"]
        if isinstance(value, str) and value in known:
            return known[value]
        hint = _did_you_mean(value, known)
        self.fail(path, f"expected one of the known kinds ({listing}), found {_found(value)}{hint}")
        return None

    def options(
        self, kind: registry.ProviderKind, rest: Mapping[Any, Any], path: _Path
    ) -> Mapping[str, Any] | None:
        """The kind's own keys, validated by its options model, as a read-only mapping."""
        model = kind.options
        accepted = _keys(model) if model is not None else []
        allow_any = model is not None and model.model_config.get("extra") == "allow"
        unknown = [key for key in rest if key not in accepted and not allow_any]
        for key in unknown:
            self.unknown_key(path, key, [*_PROVIDER_KEYS, *accepted])
        if model is None:
            return None if unknown else types.MappingProxyType({})
        known = {key: value for key, value in rest.items() if key not in unknown}
        validated = self.validate(model, known, path)
        if validated is None or unknown:
            return None
        dumped = _as_secrets(validated.model_dump())
        assert isinstance(dumped, dict)
        return types.MappingProxyType(dumped)

    def capability(
        self, name: str, table: Mapping[Any, Any], declared: Sequence[str]
    ) -> CapabilitySettings | None:
        path: _Path = ("capabilities", name)
        model = self.validate(_Capability, table, path)
        if model is None:
            return None
        valid = True
        for index, member in enumerate(model.chain):
            kind = self.kinds.get(member)
            if member not in declared:
                configured = ", ".join(declared) or "none"
                hint = _did_you_mean(member, declared)
                self.fail(
                    (*path, "chain", index),
                    f"expected a configured provider ({configured}), found {member!r}{hint}",
                )
                valid = False
            elif kind is not None and kind.capability not in (name, "http"):
                self.fail(
                    (*path, "chain", index),
                    f"provider {member!r} is of kind {kind.name!r}, which serves "
                    f"{kind.capability!r}, not {name!r}",
                )
                valid = False
        if not valid:
            return None
        return CapabilitySettings(
            name=name,
            chain=tuple(model.chain),
            defer=model.defer,
            deadline=model.deadline,
            timeout=model.timeout,
            fallback=model.fallback,
            fallback_sender=model.fallback_sender,
            cache=model.cache.settings() if model.cache is not None else None,
            context_fallback=types.MappingProxyType(model.context_fallback),
        )

    def check_fallbacks(self, capabilities: Mapping[str, CapabilitySettings]) -> None:
        """A fallback names another configured capability of the other channel (email <-> sms),
        and one that is email needs a sender address."""
        channels = {name: self.channel(cap) for name, cap in capabilities.items()}
        for name, cap in capabilities.items():
            if cap.fallback is None:
                continue
            path: _Path = ("capabilities", name, "fallback")
            target = channels.get(cap.fallback)
            pair = {channels[name], target}
            if cap.fallback == name or target is None or pair != {"email", "sms"}:
                others = [n for n, c in channels.items() if {channels[name], c} == {"email", "sms"}]
                self.fail(
                    path,
                    f"expected the name of a capability of the other channel (email <-> sms): "
                    f"{', '.join(others) or 'none configured'}; found {cap.fallback!r}",
                )
            elif target == "email" and not (cap.fallback_sender and "@" in cap.fallback_sender):
                self.fail(
                    ("capabilities", name, "fallback_sender"),
                    "expected the email address that fallback emails are sent from",
                )

    def channel(self, capability: CapabilitySettings) -> str | None:
        """What a capability carries, from its providers' kinds ("http" providers fit any)."""
        served = {
            kind.capability
            for member in capability.chain
            if (kind := self.kinds.get(member)) is not None
        }
        return next(iter(served - {"http"}), None)

    # -- problems --------------------------------------------------------------------------------

    def validate(self, model: type[_Model], data: object, path: _Path) -> _Model | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.pydantic_problem(model, error, path)
            return None

    def pydantic_problem(self, model: type[BaseModel], error: ErrorDetails, path: _Path) -> None:
        loc: _Path = tuple(error["loc"])
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        etype, value = error["type"], error["input"]
        if etype == "extra_forbidden" and loc:
            self.unknown_key((*path, *loc[:-1]), loc[-1], _keys_at(model, loc[:-1]))
            return
        if etype == "missing":
            self.fail((*path, *loc), "required key is missing")
            return
        secret = _is_sensitive((*path, *loc))
        if secret and etype in ("value_error", "assertion_error"):
            expected = "expected an acceptable value"  # a custom message may quote the value
        else:
            expected = _expected(error)
        if etype == "value_error" and isinstance(value, (Mapping, list)):
            self.fail((*path, *loc), expected)  # a check across the table's keys
        else:
            self.fail((*path, *loc), f"{expected}, found {_found(value, secret=secret)}")

    def check_keys(self, table: Mapping[Any, Any], path: _Path, accepted: Sequence[str]) -> None:
        for key in table:
            if key not in accepted:
                self.unknown_key(path, key, accepted)

    def unknown_key(self, path: _Path, key: object, accepted: Sequence[str]) -> None:
        hint = _did_you_mean(key, accepted) or f"; expected one of: {', '.join(accepted)}"
        self.fail((*path, key), f"unknown key {_shorten(repr(str(key)))}{hint}")

    def fail(self, path: _Path, problem: str) -> None:
        self.problems.append((_dotted(path), problem))

    def raise_problems(self) -> None:
        if not self.problems:
            return
        (key, problem), *more = [(self.redact(k), self.redact(p)) for k, p in self.problems]
        lines = "".join(f"\n{self.source}: {k or '<root>'}: {p}" for k, p in more)
        raise ConfigError(self.source, key, problem + lines)

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


# -- helpers -------------------------------------------------------------------------------------


def _section(data: Mapping[Any, Any], key: str) -> object:
    """A top-level table; YAML reads a section whose keys are all commented out as null."""
    value = data.get(key)
    return {} if value is None else value


def _dotted(path: _Path) -> str:
    """`providers.sendgrid.retry.attempts`; list positions as `chain[1]`, odd keys quoted."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            name = str(part) if _PLAIN_KEY.fullmatch(str(part)) else _shorten(repr(part))
            text += f".{name}" if text else name
    return text


def _is_sensitive_name(name: str) -> bool:
    return any(word in name.lower() for word in _SENSITIVE_WORDS)


def _is_sensitive(path: _Path) -> bool:
    """Whether a key on the path names a secret; provider and capability names do not count."""
    if len(path) > 1 and path[0] in ("providers", "capabilities"):
        path = path[2:]
    return any(isinstance(part, str) and _is_sensitive_name(part) for part in path)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _found(value: object, *, secret: bool = False) -> str:
    """What the config held, short, and never a secret or a table's contents."""
    if secret:
        return "***"
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return _shorten(repr(value))


_EXPECTED = {
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "dict_type": "expected a table",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
}


def _expected(error: ErrorDetails) -> str:
    """pydantic's message, worded as what the config should have held."""
    if error["type"] in _EXPECTED:
        return _EXPECTED[error["type"]]
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("Input should be "):
        rest = message.removeprefix("Input should be ")
        article = "a value " if rest.startswith(("greater", "less")) else ""
        return f"expected {article}{rest}"
    return message


def _did_you_mean(value: object, choices: Sequence[str] | Mapping[str, Any]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts in a config table: aliases, and names where it allows them."""
    config = model.model_config
    by_name = config.get("populate_by_name") or config.get("validate_by_name")
    keys = []
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        keys.append(alias or name)
        if alias and by_name:
            keys.append(name)
    return keys


def _keys_at(model: type[BaseModel], loc: _Path) -> list[str]:
    """The keys of the table at `loc` inside `model`, for a 'did you mean' on a nested typo."""
    target: object = model
    for part in loc:
        if isinstance(target, type) and issubclass(target, BaseModel):
            fields = target.model_fields
            target = next((f.annotation for n, f in fields.items() if part in (n, f.alias)), None)
        else:
            args = get_args(target)
            target = args[-1] if args else None
        target = _table_type(target)
    return _keys(target) if isinstance(target, type) and issubclass(target, BaseModel) else []


def _table_type(annotation: object) -> object:
    """The type inside `Annotated[X, ...]` or `X | None`: where a nested key path leads."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _table_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [_table_type(a) for a in get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        return (models or members or [None])[0]
    return annotation


def _as_secrets(value: object) -> object:
    """pydantic SecretStr becomes our Secret: one secret type, masked in every log line."""
    if isinstance(value, SecretStr):
        return Secret(value.get_secret_value())
    if isinstance(value, dict):
        return {key: _as_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_secrets(item) for item in value]
    return value


def _parse(text: str, suffix: str, source: str) -> object:
    too_deep = f"nested more than {_MAX_DEPTH} levels deep"
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except RecursionError:  # tomllib recurses into inline arrays and tables, without a bound
            raise ConfigError(source, "", f"invalid TOML: {too_deep}") from None
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            where = re.search(r"\s*\((at line \d+, column \d+)\)$", message)
            if where:
                message = f"{where.group(1)}: {message[: where.start()]}"
            raise ConfigError(source, "", f"invalid TOML {message}") from None
    loader = _BoundedYamlLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as refused:
        raise ConfigError(source, _dotted(refused.path), refused.problem) from None
    except RecursionError:  # not expected past the composer's bound; never a traceback though
        raise ConfigError(source, "", f"invalid YAML: {too_deep}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"invalid YAML{at}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, ValueError) as exc:  # a date like 2024-02-30 raises ValueError
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


# -- public --------------------------------------------------------------------------------------


def load_settings(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Settings from a .toml/.yaml/.yml file, else `$RESILIENT_CONFIG`, else the embedded defaults.

    Raises ConfigError naming the file, the key path and the problem; never echoes a secret.
    """
    environ = os.environ if env is None else env
    if path is None:
        configured = environ.get(CONFIG_ENV_VAR)
        if not configured:
            return GatewaySettings()
        path = configured
    source = os.fspath(path)
    suffix = Path(source).suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(
            source, "", f"expected a .toml, .yaml or .yml file, found {suffix or 'no suffix'!r}"
        )
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"expected UTF-8 text: {exc.reason}") from None
    return _Loader(source, environ).load(_parse(text, suffix, source))


def settings_from_mapping(
    data: Mapping[str, Any], *, source: str = "<mapping>", env: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Settings from an already-parsed config (tests, embedders), validated like a file."""
    return _Loader(source, os.environ if env is None else env).load(data)
