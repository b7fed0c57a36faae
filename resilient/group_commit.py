"""Writes from many callers in one transaction: one fsync for whatever arrived meanwhile.

A durable write costs an fsync (milliseconds); callers in flight together share it. One write
is under way at a time; whatever arrives meanwhile waits for the next, which takes it all in one
transaction: an idle process writes each request at once, a busy one hundreds at a time, and no
caller returns before its own write is durable. A blocking caller that finds no write under way
makes its own on its thread (`write`: no hop to another thread, the common case when idle);
otherwise the writer thread does the next group and answers each caller through its future
(`submit`, which async callers await, so the event loop never blocks on the disk).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class GroupCommitter(Generic[T]):
    """`submit(item)` queues one write; `write_batch(items)` (the store's) returns one answer
    per item, in order, and raises to fail the whole batch."""

    def __init__(self, write_batch: Callable[[Sequence[T]], Sequence[Any]], name: str) -> None:
        self._write_batch = write_batch
        self._pending: list[tuple[T, Future[Any]]] = []
        self._wake = threading.Condition()
        self._writing = False  # a write is under way (on the writer thread or a caller's)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[Any]:
        """Queue `item` for the next group; its future holds the answer once it is durable."""
        future: Future[Any] = Future()
        with self._wake:
            self._open()
            self._pending.append((item, future))
            self._wake.notify()
        return future

    def write(self, item: T) -> Any:
        """Write `item` and return its answer, blocking: on this thread when no write is under
        way, else in the next group."""
        with self._wake:
            self._open()
            lead = not self._writing and not self._pending
            if lead:
                self._writing = True
            else:
                future: Future[Any] = Future()
                self._pending.append((item, future))
                self._wake.notify()
        if not lead:
            return future.result()
        try:
            return self._write_batch([item])[0]
        finally:
            self._done_writing()

    def _open(self) -> None:
        if self._closed:
            raise RuntimeError("closed: nothing more is written")

    def _done_writing(self) -> None:
        with self._wake:
            self._writing = False
            self._wake.notify()  # the writer thread takes what queued meanwhile

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._writing or not (self._pending or self._closed):
                    self._wake.wait()
                if not self._pending:
                    return  # closed, and all written
                batch, self._pending = self._pending, []
                self._writing = True
            try:
                answers = self._write_batch([item for item, _ in batch])
            except BaseException as exc:  # every caller of the batch hears why
                for _, future in batch:
                    future.set_exception(exc)
                continue
            finally:
                self._done_writing()
            for (_, future), answer in zip(batch, answers, strict=True):
                future.set_result(answer)

    def close(self) -> None:
        """Write what is queued, then stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
