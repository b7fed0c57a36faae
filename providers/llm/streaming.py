"""What a streamed chat is made of, whatever the provider: events in, neutral chunks out.

Every provider streams server-sent events (OpenAI's `data:` lines ending in `[DONE]`, Anthropic's
named events ending in `message_stop`, Gemini's `streamGenerateContent?alt=sse`). An adapter that
streams builds the streaming request and gives a fresh decoder per attempt; a decoder does no
I/O. Here: the chunk, the decoder contract and its shared base, the stream options and limits,
the error a broken stream raises, and the counters. How a stream is run (started along the
chain, read, restarted) is providers/llm/stream_run.py.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from providers.llm.models import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ToolCall,
    Usage,
)
from providers.llm.sse import SseEvent
from resilient.errors import CallFailed
from resilient.policy.classify import Verdict
from resilient.result import Attempt
from resilient.units import parse_duration

if TYPE_CHECKING:
    from resilient.gateway import Gateway
    from resilient.runtime import ProviderRuntime

__all__ = [
    "ChatChunk",
    "DecoderBase",
    "MalformedEvent",
    "SseEvent",
    "StreamDecoder",
    "StreamError",
    "StreamInterrupted",
    "StreamOptions",
    "StreamStats",
    "StreamingChatAdapter",
    "event_json",
    "malformed",
    "stream_error",
]


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a streamed answer. Text comes as deltas; a tool call comes once, complete.
    An answer's last chunk has `finish_reason` set, its `usage` (zeros when the provider sent
    none) and `malformed`: how many unreadable events the stream skipped.

    `restarted` is True on the first chunk of an answer started over on another provider after
    the stream in progress was cut or stalled: drop every chunk received before it. The new
    answer neither repeats nor continues the partial one; `provider` and `model` say whose it is.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    provider: str = ""
    model: str = ""
    restarted: bool = False
    malformed: int = 0


class MalformedEvent(ValueError):
    """An event the decoder cannot read: the stream skips it (and counts it) and goes on."""


class StreamError(Exception):
    """The provider said, inside the stream, that the answer will not complete (Anthropic's
    `error` event): before the first chunk the attempt failed; after it, the stream is cut."""


class StreamDecoder(Protocol):
    """Reads one attempt's events, in order, into chunks."""

    def feed(self, event: SseEvent) -> list[ChatChunk]:
        """The chunks this event adds (often none); raises MalformedEvent for an unreadable one
        and StreamError for the provider's own error event."""
        ...

    @property
    def finished(self) -> bool:
        """True once the provider's end marker has been read."""
        ...

    @property
    def finish_reason(self) -> FinishReason | None:
        """The finish the provider gave, once read: a body ending after it, even without the
        end marker, is a complete answer."""
        ...

    def final(self) -> ChatResponse:
        """The answer read so far, as one response (text joined, tool calls, usage if known)."""
        ...


class DecoderBase:
    """What every provider's decoder keeps as it reads: the answer so far (text deltas, whole
    tool calls, finish, usage) and the provider and model its chunks are stamped with. A
    subclass reads its provider's events in `feed`; `finished` is its end marker read."""

    def __init__(self, provider: str, model: str) -> None:
        self._provider = provider
        self._model = model  # the model that answers, once an event names it
        self._text: list[str] = []
        self._calls: list[ToolCall] = []
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish

    def _chunk(self, **fields: Any) -> ChatChunk:
        return ChatChunk(provider=self._provider, model=self._model, **fields)

    def _said(self, text: str) -> list[ChatChunk]:
        """A text delta: kept for the final answer, and given out at once."""
        self._text.append(text)
        return [self._chunk(text=text)]

    def final(self) -> ChatResponse:
        calls = self._calls
        return ChatResponse(
            text="".join(self._text),
            tool_calls=list(calls),
            finish_reason=self._finish or ("tool_calls" if calls else "stop"),
            usage=self._usage or Usage(0, 0),
            provider=self._provider,
            model=self._model,
        )


def malformed(event: SseEvent, expected: str) -> MalformedEvent:
    """The error for an event that is not `expected` (its data quoted, cut short)."""
    return MalformedEvent(f"not {expected}: {event.data[:80]!r}")


def event_json(event: SseEvent, expected: str) -> dict[str, Any]:
    """An event's data as the JSON object every provider sends; else MalformedEvent."""
    try:
        data = json.loads(event.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise malformed(event, expected)
    return data


def stream_error(error: object, *keys: str) -> StreamError:
    """The provider's error object inside a stream, named by the first of `keys` it has."""
    fields = error if isinstance(error, dict) else {}
    return StreamError(str(next((fields[k] for k in keys if fields.get(k)), "error")))


class StreamingChatAdapter(Protocol):
    """A chat adapter that also streams."""

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request: ...

    def decoder(self, provider: str, model: str) -> StreamDecoder: ...

    def verdict(self, response: httpx.Response, default: Verdict) -> Verdict: ...


def _duration(value: object) -> float:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("expected a duration like '10s' or '500ms', or a number of seconds")


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


class StreamOptions(BaseModel):
    """The keys every llm kind takes for `gw.llm.stream`: `first_token_timeout`, how long the
    first chunk may take once the request is sent (longer, and the attempt fails over);
    `idle_timeout`, the longest silence after it (longer, and the stream has stalled);
    `stream_timeout`, the longest one provider's stream may run from its request on (longer,
    and it is cut there: a provider that never stops can't hold a caller forever); and
    `restart`: a stream cut or stalled on this provider starts over on the next one of the
    chain (false: it ends in StreamInterrupted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_token_timeout: Duration = 10.0
    idle_timeout: Duration = 30.0
    stream_timeout: Duration = 600.0
    restart: bool = True


_DEFAULT = StreamOptions()


@dataclass(frozen=True, slots=True)
class StreamLimits:
    first_token: float
    idle: float
    total: float
    restart: bool

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> StreamLimits:
        """A provider's limits: its options, else the defaults (a kind without the keys)."""
        return cls(
            _duration(options.get("first_token_timeout", _DEFAULT.first_token_timeout)),
            _duration(options.get("idle_timeout", _DEFAULT.idle_timeout)),
            _duration(options.get("stream_timeout", _DEFAULT.stream_timeout)),
            bool(options.get("restart", _DEFAULT.restart)),
        )


class StreamInterrupted(CallFailed):
    """A stream cut or stalled after its first chunk that could not start over: restart was
    off, no provider was left after the one that failed, or the restart failed too. The
    message names the original failure first; `attempts` holds every attempt, the restart's
    included, and `restart_error` is the restart's own failure when one was tried."""

    def __init__(
        self,
        message: str,
        attempts: tuple[Attempt, ...],
        provider: str,
        reason: str,
        restart_error: CallFailed | None = None,
    ) -> None:
        super().__init__(message, attempts)
        self.provider = provider  # whose stream was cut
        self.reason = reason  # how: "cut (ReadError) after 3 chunks", ...
        self.restart_error = restart_error


@dataclass
class StreamStats:
    """A gateway's stream counters (`gw.llm.stream_stats`): events skipped as malformed,
    streams started over on another provider, and streams that ended in StreamInterrupted."""

    malformed_events: int = 0
    restarts: int = 0
    interrupted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)


_stats: weakref.WeakKeyDictionary[Gateway, StreamStats] = weakref.WeakKeyDictionary()
_stats_lock = threading.Lock()


def stream_stats(gateway: Gateway) -> StreamStats:
    with _stats_lock:
        stats = _stats.get(gateway)
        if stats is None:
            stats = _stats[gateway] = StreamStats()
        return stats
