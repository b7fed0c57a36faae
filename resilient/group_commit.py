"""Writes from many callers in one transaction: one fsync for whatever arrived meanwhile.

A durable write costs an fsync (milliseconds); callers in flight together share it. One writer
thread takes everything queued, applies it in one transaction, and answers each caller through
its future: an idle process writes each request at once, a busy one hundreds at a time, and no
caller returns before its own write is durable. Sync callers wait on the future; async ones
await it, so the event loop never blocks on the disk.
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
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[Any]:
        future: Future[Any] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            self._pending.append((item, future))
            self._wake.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                batch, self._pending = self._pending, []
                if not batch and self._closed:
                    return
            try:
                answers = self._write_batch([item for item, _ in batch])
            except BaseException as exc:  # every caller of the batch hears why
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                future.set_result(answer)

    def close(self) -> None:
        """Write what is queued, then stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
