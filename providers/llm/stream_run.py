"""How `gw.llm.stream` runs one stream: its start as one call along the chain, then its events
read outside the pipeline, restarted on the next provider when it is cut or stalls.

The start (`StreamOperation`) is one pipeline attempt: the request, its status and the wait for
the first chunk, so retries, breaker, limiter, Retry-After and fail-over apply as for a chat, and
nothing reaches the caller before a chunk has. After that, `StreamRun` holds every decision
(cut, stall, finish, restart); `ChatStream` and `SyncChatStream` only do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import socket
import threading
import time
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from providers.llm.errors import refused
from providers.llm.models import ChatCall, ChatRequest, ChatResponse, Usage, mapped_model
from providers.llm.sse import SseEvent, SseParser
from providers.llm.streaming import (
    ChatChunk,
    MalformedEvent,
    StreamDecoder,
    StreamError,
    StreamingChatAdapter,
    StreamInterrupted,
    StreamLimits,
    stream_stats,
)
from resilient.errors import CallFailed, FatalError
from resilient.policy.classify import Verdict
from resilient.policy.outcome_class import Outcome
from resilient.result import Attempt
from resilient.telemetry import FailedOver
from resilient.transport_deadline import attempt_deadline

if TYPE_CHECKING:
    from resilient.gateway import Gateway
    from resilient.result import Result
    from resilient.runtime import ProviderRuntime


logger = logging.getLogger("resilient")


class _Events:
    """A response body's events, parsed as its bytes arrive (sync or async, not both)."""

    def __init__(self, response: httpx.Response, max_event: int) -> None:
        self._response = response
        self._parser = SseParser(max_event)
        self._ready: deque[SseEvent] = deque()
        self._bytes: Any = None

    def next(self) -> SseEvent | None:
        """The next event; None when the body ended."""
        if self._bytes is None:
            self._bytes = self._response.iter_bytes()
        while not self._ready:
            data = next(self._bytes, None)
            if data is None:
                return None
            self._ready.extend(self._parser.feed(data))
        return self._ready.popleft()

    async def anext(self) -> SseEvent | None:
        if self._bytes is None:
            self._bytes = self._response.aiter_bytes()
        while not self._ready:
            data = await anext(self._bytes, None)
            if data is None:
                return None
            self._ready.extend(self._parser.feed(data))
        return self._ready.popleft()


class OpenStream:
    """One provider's stream: its response, its decoder, and the chunks not yet given out."""

    def __init__(
        self,
        provider: str,
        response: httpx.Response,
        decoder: StreamDecoder,
        limits: StreamLimits,
        max_event: int,
        opened_at: float,
    ) -> None:
        self.provider = provider
        self.response = response
        self.decoder = decoder
        self.idle = limits.idle
        self.total = limits.total
        self.ends_at = opened_at + limits.total  # the stream_timeout, from the request on
        self.events = _Events(response, max_event)
        self.pending: deque[ChatChunk] = deque()
        self.malformed = 0
        self.counted = 0  # of `malformed`, those the run has counted
        self.final_given = False  # the decoder gave the chunk that carries the finish itself
        self.given = 0  # chunks handed to the caller
        self.opened_at = opened_at

    @property
    def started(self) -> bool:
        """A chunk has come (or the answer is already over): the stream may be committed."""
        decoder = self.decoder
        return bool(self.pending) or decoder.finished or decoder.finish_reason is not None

    def take(self, event: SseEvent) -> bool:
        """Decode one event; False when it was malformed (skipped). Raises StreamError."""
        try:
            chunks = self.decoder.feed(event)
        except MalformedEvent:
            self.malformed += 1
            return False
        for chunk in chunks:
            self.final_given = self.final_given or chunk.finish_reason is not None
            self.pending.append(chunk)
        return True


class StreamOperation(ChatCall):
    """One start of a stream along the chain. It succeeds once a chunk has arrived, leaving the
    stream open in `opened`; a chunk that does not come within the provider's
    `first_token_timeout` (or the attempt's own timeout) fails the attempt over."""

    def __init__(self, chat: ChatRequest) -> None:
        super().__init__(chat)
        self.opened: OpenStream | None = None
        self._failure: Verdict | None = None  # why the last attempt's stream did not start

    def _adapter(self, provider: ProviderRuntime) -> StreamingChatAdapter:
        adapter: StreamingChatAdapter = self.adapter(provider, "build_stream", "stream a chat")
        return adapter

    def _request(
        self, provider: ProviderRuntime, timeout: float
    ) -> tuple[StreamingChatAdapter, StreamLimits, httpx.Request]:
        adapter = self._adapter(provider)
        limits = StreamLimits.of(provider.settings.options)
        request = adapter.build_stream(self.chat, provider)
        phases = provider.attempt_timeout(timeout).as_dict()
        phases["read"] = min(phases["read"] or limits.first_token, limits.first_token)
        request.extensions["timeout"] = phases
        return adapter, limits, request

    def _open(
        self,
        adapter: StreamingChatAdapter,
        limits: StreamLimits,
        provider: ProviderRuntime,
        response: httpx.Response,
        started: float,
    ) -> OpenStream:
        # The body's reads take the read timeout in force when the first one starts: from
        # then on, a silence longer than the idle limit is a stall.
        response.request.extensions["timeout"]["read"] = limits.idle
        model = mapped_model(provider.settings.options, self.chat.model)
        return OpenStream(
            provider.name,
            response,
            adapter.decoder(provider.name, model),
            limits,
            provider.settings.max_response_bytes,  # one event may hold what a whole answer may
            started,
        )

    def send(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        started = time.monotonic()
        adapter, limits, request = self._request(provider, timeout)
        response = provider.client.send(request, stream=True)
        try:
            if not response.is_success:
                response.read()  # the error's body, for the verdict
                return response
            stream = self._open(adapter, limits, provider, response, started)
            wait = started + min(timeout, limits.first_token) - time.monotonic()
            with _Alarm(response, wait) as alarm:
                try:
                    self._failure = _first_chunk(stream)
                except httpx.TransportError:
                    if not alarm.rang:
                        raise
            if alarm.rang:
                self._failure = _no_first_chunk(response, limits)
        except BaseException:
            response.close()
            raise
        if self._failure is None:
            self.opened = stream
        else:
            response.close()
        return response

    async def asend(self, provider: ProviderRuntime, timeout: float) -> httpx.Response:
        started = time.monotonic()
        adapter, limits, request = self._request(provider, timeout)
        response = await provider.aclient.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                return response
            stream = self._open(adapter, limits, provider, response, started)
            wait = started + min(timeout, limits.first_token) - time.monotonic()
            try:
                self._failure = await asyncio.wait_for(_afirst_chunk(stream), max(0.0, wait))
            except asyncio.TimeoutError:
                self._failure = _no_first_chunk(response, limits)
        except BaseException:
            await response.aclose()
            raise
        if self._failure is None:
            self.opened = stream
        else:
            await response.aclose()
        return response

    def verdict(
        self, provider: ProviderRuntime, response: httpx.Response, default: Verdict
    ) -> Verdict:
        """The first chunk decides a 2xx; anything else is read as the adapter reads a chat's."""
        failure, self._failure = self._failure, None
        if failure is not None:
            return failure
        if default.outcome is not Outcome.OK:
            return self._adapter(provider).verdict(response, default)
        if self.opened is None:
            return Verdict(Outcome.FAILOVER, response.status_code, f"{default.reason} no stream")
        return default


def _first_chunk(stream: OpenStream) -> Verdict | None:
    """Read until the first chunk; None once it came, else why the stream did not start."""
    try:
        while not stream.started:
            event = stream.events.next()
            if event is None:
                return _ended_early(stream)
            stream.take(event)
    except StreamError as exc:
        return _stream_error(stream, exc)
    return None


async def _afirst_chunk(stream: OpenStream) -> Verdict | None:
    try:
        while not stream.started:
            event = await stream.events.anext()
            if event is None:
                return _ended_early(stream)
            stream.take(event)
    except StreamError as exc:
        return _stream_error(stream, exc)
    return None


def _ended_early(stream: OpenStream) -> Verdict:
    status = stream.response.status_code
    return Verdict(Outcome.RETRYABLE, status, f"{status} stream ended before its first chunk")


def _stream_error(stream: OpenStream, error: StreamError) -> Verdict:
    status = stream.response.status_code
    return Verdict(Outcome.RETRYABLE, status, f"{status} stream error {error}")


def _no_first_chunk(response: httpx.Response, limits: StreamLimits) -> Verdict:
    """Silent after its head: timed out, so the attempt fails over at once."""
    status = response.status_code
    reason = f"{status} no first chunk within {limits.first_token:g}s"
    return Verdict(Outcome.AMBIGUOUS, status, reason, timed_out=True)


class _Alarm:
    """Ends a blocking wait for the first chunk on time. A blocking read's timeout is per read
    and fixed for the whole body, so a timer shuts the socket down under the read instead.
    Without a socket (a mock transport) only the read timeout bounds the wait."""

    def __init__(self, response: httpx.Response, seconds: float) -> None:
        self.rang = False
        network = response.extensions.get("network_stream")
        self._socket: socket.socket | None = (
            network.get_extra_info("socket") if network is not None else None
        )
        self._timer = threading.Timer(max(0.0, seconds), self._ring)
        self._timer.daemon = True

    def _ring(self) -> None:
        self.rang = True
        if self._socket is not None:
            with contextlib.suppress(OSError):  # the plain socket's, under TLS too: EOF
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def __enter__(self) -> _Alarm:
        if self._socket is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:
            self._timer.cancel()
            self._timer.join()  # rung or not, decided: `rang` is final


class StreamRun:
    """One `gw.llm.stream`, whatever does its I/O: which stream is being read, what the caller
    has been given, and what happens when a stream fails."""

    def __init__(
        self,
        gateway: Gateway,
        capability: str,
        chat: ChatRequest,
        deadline: float | None,
        restart: bool | None,
    ) -> None:
        self.gateway = gateway
        self.capability = capability
        self.chat = chat
        self.ends_at = math.inf if deadline is None else time.monotonic() + deadline
        self.restart = restart
        self.attempts: list[Attempt] = []
        self.malformed = 0
        self.restarts = 0
        self.answer: ChatResponse | None = None
        self.stream: OpenStream | None = None
        self.complete = False
        self.stats = stream_stats(gateway)
        self._cut: tuple[str, str, str] | None = None  # (message, provider, reason) recovering
        self._cut_providers: list[str] = []
        self._restarted = False

    def time_left(self) -> float | None:
        """What is left of the caller's deadline (None: none was given) for a start."""
        return None if self.ends_at == math.inf else max(0.0, self.ends_at - time.monotonic())

    def read_window(self, stream: OpenStream) -> float:
        """How long the next read may take: the stream's end (its stream_timeout or the
        caller's deadline, whichever comes first) bounds the whole stream, not each read."""
        return max(0.0, min(stream.ends_at, self.ends_at) - time.monotonic())

    def operation(self) -> tuple[StreamOperation, list[str] | None]:
        """A start's operation and the providers it may use (None: the whole chain)."""
        return StreamOperation(self.chat), None if self._cut is None else self._providers_left()

    def _providers_left(self) -> list[str]:
        """The providers after the one whose stream was cut, less any cut before."""
        chain = [rt.name for rt in self.gateway.chain(self.capability)]
        failed = self._cut_providers[-1]
        after = chain[chain.index(failed) + 1 :] if failed in chain else chain
        return [name for name in after if name not in self._cut_providers]

    def started(self, result: Result[httpx.Response], op: StreamOperation) -> None:
        assert op.opened is not None
        self.attempts.extend(result.attempts)
        self.stream = op.opened
        self._count_malformed(op.opened)
        self._restarted = self._cut is not None
        self._cut = None

    def start_failed(self, error: CallFailed) -> Exception:
        """What the caller sees when a start fails: a restart's failure never hides the cut
        that made it necessary; a first start's is a chat's (a prompt too long, ...)."""
        self.complete = True
        if self._cut is not None:
            message, provider, reason = self._cut
            self.stats.add("interrupted")
            return StreamInterrupted(
                f"{message}; starting over failed: {type(error).__name__}",
                (*self.attempts, *error.attempts),
                provider,
                reason,
                error,
            )
        if isinstance(error, FatalError):
            return refused(self.capability, error) or error
        return error

    def next_chunk(self) -> ChatChunk | None:
        stream = self.stream
        if stream is None or not stream.pending:
            return None
        chunk = stream.pending.popleft()
        stream.given += 1
        if self._restarted:
            self._restarted = False
            chunk = dataclasses.replace(chunk, restarted=True)
        if chunk.finish_reason is not None:
            usage = chunk.usage or (self.answer.usage if self.answer else Usage(0, 0))
            chunk = dataclasses.replace(chunk, usage=usage, malformed=self.malformed)
        return chunk

    def on_event(self, event: SseEvent | None) -> str | None:
        """Take one event (None: the body ended); why the stream failed, or None."""
        stream = self.stream
        assert stream is not None
        if event is None:
            if stream.decoder.finish_reason is None and not stream.decoder.finished:
                return f"cut (ended without its end marker) after {stream.given} chunks"
            self._finish(stream)
            return None
        try:
            if not stream.take(event):
                self._count_malformed(stream)
        except StreamError as exc:
            return f"cut (stream error {exc}) after {stream.given} chunks"
        if stream.decoder.finished:
            self._finish(stream)
        return None

    def on_error(self, error: httpx.TransportError | asyncio.TimeoutError) -> str:
        """Why a read failed: a cut, a stall, or the stream's end (a timeout at its bound)."""
        stream = self.stream
        assert stream is not None
        timed_out = isinstance(error, (httpx.ReadTimeout, asyncio.TimeoutError))
        if timed_out and self.read_window(stream) == 0:
            if self.ends_at <= stream.ends_at:
                return f"cut at the call's deadline after {stream.given} chunks"
            return f"cut at its stream_timeout ({stream.total:g}s) after {stream.given} chunks"
        if isinstance(error, httpx.ReadTimeout):
            return f"stalled (nothing for {stream.idle:g}s) after {stream.given} chunks"
        return f"cut ({type(error).__name__}) after {stream.given} chunks"

    def _count_malformed(self, stream: OpenStream) -> None:
        new = stream.malformed - stream.counted
        if new <= 0:
            return
        stream.counted = stream.malformed
        self.malformed += new
        for _ in range(new):
            self.stats.add("malformed_events")
        logger.warning(
            "%s: skipped %d malformed event(s) from %s", self.capability, new, stream.provider
        )

    def _finish(self, stream: OpenStream) -> None:
        answer = stream.decoder.final()
        self.answer = answer
        if not stream.final_given:
            stream.final_given = True
            stream.pending.append(
                ChatChunk(
                    finish_reason=answer.finish_reason,
                    usage=answer.usage,
                    provider=answer.provider,
                    model=answer.model,
                )
            )
        self.complete = True

    def interrupted(self, reason: str) -> None:
        """The stream failed: raise StreamInterrupted, or set up a start on the next providers.

        Either way the provider's breaker counts the failure: its start was recorded healthy
        at the first chunk, and a provider that keeps cutting streams must trip like one that
        keeps failing calls."""
        stream = self.stream
        assert stream is not None
        provider = stream.provider
        runtime = self.gateway.provider(provider)
        runtime.breaker.record_failure(runtime.clock())
        latency = time.monotonic() - stream.opened_at
        self.attempts.append(Attempt(provider, Outcome.FAILOVER, None, latency, reason))
        self._cut_providers.append(provider)
        self.stream = None
        message = f"{self.capability}: the answer from {provider} was {reason}"
        restart = self.restart
        if restart is None:
            restart = StreamLimits.of(runtime.settings.options).restart
        late = time.monotonic() >= self.ends_at
        if not restart or late or not self._providers_left():
            self.complete = True
            self.stats.add("interrupted")
            why = (
                "restart is off"
                if not restart
                else "no time left to start over"
                if late
                else "no provider left to start over on"
            )
            raise StreamInterrupted(f"{message}; {why}", tuple(self.attempts), provider, reason)
        self._cut = (message, provider, reason)
        self.restarts += 1
        self.stats.add("restarts")
        bus = self.gateway.events
        if bus.active:
            bus.emit(FailedOver(self.capability, provider, reason))


class _StreamView:
    """What a stream shows as it goes: every `attempts` made (a cut stream's included), the
    `malformed` events skipped, the `restarts`, and once it is over the whole `answer`."""

    def __init__(self, run: StreamRun) -> None:
        self._run = run

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(self._run.attempts)

    @property
    def malformed(self) -> int:
        return self._run.malformed

    @property
    def restarts(self) -> int:
        return self._run.restarts

    @property
    def answer(self) -> ChatResponse | None:
        """The complete answer (that of the provider that finished it), once it is over."""
        return self._run.answer if self._run.complete else None


class ChatStream(_StreamView):
    """`gw.llm.stream(...)`: an async iterator of ChatChunk. Leave it early with
    `await stream.aclose()`, or read it in `async with`."""

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatChunk:
        run = self._run
        while True:
            chunk = run.next_chunk()
            if chunk is not None:
                return chunk
            if run.complete:
                await self.aclose()
                raise StopAsyncIteration
            stream = run.stream
            if stream is None:
                await self._start()
                continue
            try:
                event = await asyncio.wait_for(stream.events.anext(), run.read_window(stream))
                failure = run.on_event(event)
            except (httpx.TransportError, asyncio.TimeoutError) as exc:
                failure = run.on_error(exc)
            if failure is not None or run.complete:
                await stream.response.aclose()
            if failure is not None:
                run.interrupted(failure)

    async def _start(self) -> None:
        run = self._run
        op, providers = run.operation()
        try:
            result = await run.gateway.acall(
                run.capability, op, defer=False, deadline=run.time_left(), providers=providers
            )
        except CallFailed as error:
            failure = run.start_failed(error)
            if failure is error:
                raise
            raise failure from error
        run.started(result, op)

    async def aclose(self) -> None:
        stream = self._run.stream
        if stream is not None:
            await stream.response.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncChatStream(_StreamView):
    """`gw.sync.llm.stream(...)`: ChatStream's blocking twin, a plain iterator (`close()` or
    `with` to leave it early)."""

    def __iter__(self) -> SyncChatStream:
        return self

    def __next__(self) -> ChatChunk:
        run = self._run
        while True:
            chunk = run.next_chunk()
            if chunk is not None:
                return chunk
            if run.complete:
                self.close()
                raise StopIteration
            stream = run.stream
            if stream is None:
                self._start()
                continue
            try:
                with attempt_deadline(run.read_window(stream)):  # each socket read within it
                    event = stream.events.next()
                failure = run.on_event(event)
            except httpx.TransportError as exc:
                failure = run.on_error(exc)
            if failure is not None or run.complete:
                stream.response.close()
            if failure is not None:
                run.interrupted(failure)

    def _start(self) -> None:
        run = self._run
        op, providers = run.operation()
        try:
            result = run.gateway.call(
                run.capability, op, defer=False, deadline=run.time_left(), providers=providers
            )
        except CallFailed as error:
            failure = run.start_failed(error)
            if failure is error:
                raise
            raise failure from error
        run.started(result, op)

    def close(self) -> None:
        stream = self._run.stream
        if stream is not None:
            stream.response.close()

    def __enter__(self) -> SyncChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
