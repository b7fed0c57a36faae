"""What a streamed chat is made of, whatever the provider: events in, neutral chunks out.

Every provider streams server-sent events (OpenAI's `data:` lines ending in `[DONE]`, Anthropic's
named events ending in `message_stop`, Gemini's `streamGenerateContent?alt=sse`). An adapter that
streams builds the streaming request and gives a fresh decoder per attempt; the facade reads the
events, hands each to the decoder and passes the chunks on. A decoder does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from providers.llm.models import ChatRequest, ChatResponse, FinishReason, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

    from resilient.runtime import ProviderRuntime


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its `event:` name (None when unnamed) and its joined `data:` lines."""

    event: str | None
    data: str


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a streamed answer. Text comes as deltas; a tool call comes once, complete;
    `finish_reason` and `usage` come on the last chunk (usage only when the provider sent it)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    provider: str = ""
    model: str = ""


class MalformedEvent(ValueError):
    """An event the decoder cannot read: the stream skips it (and counts it) and goes on."""


class StreamDecoder(Protocol):
    """Reads one attempt's events, in order, into chunks."""

    def feed(self, event: SseEvent) -> list[ChatChunk]:
        """The chunks this event adds (often none); raises MalformedEvent for an unreadable one."""
        ...

    @property
    def finished(self) -> bool:
        """True once the provider's end marker has been read."""
        ...

    def final(self) -> ChatResponse:
        """The answer read so far, as one response (text joined, tool calls, usage if known)."""
        ...


class StreamingChatAdapter(Protocol):
    """A chat adapter that also streams."""

    def build_stream(self, chat: ChatRequest, provider: ProviderRuntime) -> httpx.Request: ...

    def decoder(self, provider: str, model: str) -> StreamDecoder: ...
