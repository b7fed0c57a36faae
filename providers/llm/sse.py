"""Server-sent events read incrementally from a body that arrives in arbitrary pieces.

The one line parser every streaming kind shares, per the WHATWG event-stream format
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; a blank line dispatches the event; `event:` names it; `data:`
lines are joined with newlines; one space after the colon is dropped; `:` lines are comments;
`id:` and `retry:` are read and ignored (a restart is a new request, never a resumption). An
event cut off by the end of the body is not dispatched. One event (its data and the line being
read) holds at most `max_event` characters: past it the stream is broken, as if cut, so a
provider sending an endless line cannot take the process's memory.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import httpx

MAX_EVENT = 16 * 1024 * 1024  # characters, unless the provider's max_response_bytes says


class EventTooLarge(httpx.ReadError):
    """A server-sent event past the bound: the stream is treated as cut there."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its `event:` name (None when unnamed) and its joined `data:` lines."""

    event: str | None
    data: str


_LINE_END = re.compile("\r\n|\r|\n")


class SseParser:
    """Feed it bytes as they come; it returns the events they complete."""

    __slots__ = ("_buffer", "_cr", "_data", "_decoder", "_event", "_max", "_size")

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._cr = False  # the last piece ended in CR: a LF starting the next one belongs to it
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0  # characters of `_data`
        self._max = max_event

    def feed(self, data: bytes) -> list[SseEvent]:
        text = self._decoder.decode(data)
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        *lines, self._buffer = _LINE_END.split(self._buffer + text)  # not str.splitlines:
        events: list[SseEvent] = []  # only CR and LF end a line, never U+2028 in a JSON string
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        if self._size + len(self._buffer) > self._max:
            raise EventTooLarge(f"a server-sent event longer than {self._max} characters")
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value)
        elif name == "event":
            self._event = value or None
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event, self._data
        self._event, self._data, self._size = None, [], 0
        joined = "\n".join(data)
        return SseEvent(event, joined) if joined else None  # no data: nothing to dispatch
