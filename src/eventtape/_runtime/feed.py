"""What the projection and saga runners share: a subscription read ahead into a bounded queue,
taken out in batches, and a checkpoint that callers can wait for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from typing import Any

from .._core.errors import HistoryLost, ProjectionTimeout
from .._core.events import Event, RecordedEvent
from .._core.store import EventStore

__all__ = ["Feed", "check_history"]

_STOP = object()


async def check_history(store: EventStore, name: str, checkpoint: int) -> None:
    """Refuse to go on when ``checkpoint`` lies beyond the store's head.

    The store then has less history than was already handled: a stream lost and created
    again empty (a power loss with lazy fsync), an old backup, or another store. Carrying on
    would wait for positions that were already used, then apply new events under them.

    Raises:
        HistoryLost: Naming the runner, its checkpoint and the head.
    """
    if checkpoint > 0:
        head = await store.head_position()
        if checkpoint > head:
            raise HistoryLost(name, checkpoint, head)


class Feed:
    """Reads a store from a position into a queue of at most two batches.

    A batch is as many events as are waiting, up to ``batch_size``: it forms by itself when
    catching up and adds no delay when traffic is light.

    Args:
        store: The store to subscribe to.
        categories: Stream categories to read (``None``: all).
        batch_size: The largest batch.
        checkpoint: The last position already handled.
    """

    def __init__(
        self,
        store: EventStore,
        categories: Collection[str] | None,
        batch_size: int,
        checkpoint: int,
    ) -> None:
        self.store = store
        self.categories = categories
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * batch_size)
        self._advanced = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        """Start reading after the checkpoint."""
        self._reader = asyncio.create_task(self._read(), name=f"eventtape-read-{name}")

    async def _read(self) -> None:
        subscription = self.store.subscribe(
            from_position=self.checkpoint + 1, categories=self.categories
        )
        try:
            async for record in subscription:
                await self._queue.put(record)
        finally:
            await subscription.aclose()

    async def next_batch(self) -> list[RecordedEvent[Event]] | None:
        """Wait for the next batch; ``None`` once the feed is stopped."""
        first = await self._queue.get()
        if first is _STOP:
            return None
        batch: list[RecordedEvent[Event]] = [first]
        while len(batch) < self.batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _STOP:
                self._queue.put_nowait(_STOP)  # the next call says "stopped"
                break
            batch.append(item)
        return batch

    def queued(self) -> list[RecordedEvent[Event]]:
        """The events read ahead, not taken yet (a copy; for the backlog gauge)."""
        # asyncio.Queue keeps its items in a deque it does not expose.
        items = getattr(self._queue, "_queue", ())
        return [item for item in list(items) if item is not _STOP]

    def stop_reading(self) -> None:
        """Stop the reader (it keeps what it queued)."""
        if self._reader is not None:
            self._reader.cancel()

    async def stop(self) -> None:
        """Stop reading and drop what was queued: it is read again from the checkpoint next
        time. ``next_batch`` then returns ``None``."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_STOP)
        self.wake()

    def advance(self, position: int) -> None:
        """Record that everything up to ``position`` is handled, and wake waiters."""
        self.checkpoint = position
        self.wake()

    def wake(self) -> None:
        """Wake everyone waiting in :meth:`wait_until`, to look again."""
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def wait_until(
        self, position: int, deadline: float, name: str, alive: Callable[[], bool]
    ) -> None:
        """Wait until the checkpoint reaches ``position``.

        Args:
            position: The position to wait for.
            deadline: A ``time.monotonic()`` time (``inf``: no limit).
            name: Whose checkpoint, for the error.
            alive: Whether waiting still makes sense (it may also raise a failure instead).

        Raises:
            ProjectionTimeout: At the deadline, or when ``alive()`` turns false.
        """
        while self.checkpoint < position:
            remaining = deadline - time.monotonic()
            if not alive() or remaining <= 0:
                raise ProjectionTimeout(name, position, self.checkpoint)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if remaining == float("inf") else remaining):
                    await self._advanced.wait()
