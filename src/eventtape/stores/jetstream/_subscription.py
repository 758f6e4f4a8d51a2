"""Subscriptions on the JetStream store: read by sequence, woken by republished headers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any, Self

from nats.aio.client import Client
from nats.aio.msg import Msg

from ..._core.errors import StoreUnavailable
from ..._core.events import Event, RecordedEvent
from ._batch import intercept, release
from ._codec import StoredMessage, sequence_of
from ._config import JetStreamConfig
from ._direct import DirectGet

__all__ = ["JetStreamSubscription"]


class JetStreamSubscription:
    """Catch-up then live delivery that never skips or repeats an event.

    Events are read with batched direct gets from the next unread sequence, so contiguity
    does not depend on any consumer's bookkeeping (nats-py's ordered consumer can skip
    messages when the client falls behind). What wakes it is the stream republishing each
    stored message's headers (``stored_prefix``), sent only once the message is stored, so a
    wake-up never arrives before the event can be read; a lost one costs at most
    ``poll_interval``.
    While the server is unreachable the subscription waits and retries, then resumes after the
    last event it yielded.

    Args:
        nc: The store's connection (for wake-ups).
        direct: The store's direct-get reader.
        config: The store's settings.
        from_position: The first position to yield.
        subject_filter: The subjects to read.
        matching: Decodes one stored message into the wanted events at or after a position.
        on_close: Called once when the subscription closes (the store forgets it).
    """

    def __init__(
        self,
        nc: Client,
        direct: DirectGet,
        config: JetStreamConfig,
        from_position: int,
        subject_filter: str,
        matching: Callable[[StoredMessage, int], list[RecordedEvent[Event]]],
        on_close: Callable[[JetStreamSubscription], None],
    ) -> None:
        self._nc = nc
        self._direct = direct
        self._config = config
        self._next_position = from_position
        self._next_sequence = max(sequence_of(from_position), 1)
        self._filter = subject_filter
        self._matching = matching
        self._on_close = on_close
        self._buffer: collections.deque[RecordedEvent[Event]] = collections.deque()
        self._wake = asyncio.Event()
        self._waker: Any = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent[Event]:
        config = self._config
        while True:
            if self._buffer:
                record = self._buffer.popleft()
                self._next_position = record.position + 1
                return record
            if self._closed:
                raise StopAsyncIteration
            if self._waker is None:
                # Subscribe before reading, so an append during the read still wakes us.
                self._waker = await self._nc.subscribe(
                    config.wake_subject(self._filter), cb=self._on_append
                )
                # A wake-up needs no parsing: taken raw, it costs no header parsing and no
                # callback task per stored message (the callback stays the fallback).
                intercept(self._nc, self._waker._id, self._on_raw_append)
            self._wake.clear()
            try:
                messages, pending = await self._direct.one_batch(
                    self._next_sequence, self._filter, config.read_batch
                )
            except StoreUnavailable:
                if self._nc.is_closed:
                    raise
                await self._sleep(config.poll_interval)
                continue
            for message in messages:
                self._buffer.extend(self._matching(message, self._next_position))
                self._next_sequence = message.sequence + 1
            if not messages or (pending == 0 and not self._buffer):
                await self._sleep(config.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        """Wait for a wake-up, the poll interval, or closing, whichever comes first."""
        with contextlib.suppress(asyncio.TimeoutError):
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation,
            # and this loop would then never end.
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _on_append(self, msg: Msg) -> None:
        self._wake.set()

    def _on_raw_append(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        self._wake.set()

    @property
    def next_position(self) -> int:
        """The position the subscription will yield from next (resume here after a restart)."""
        return self._next_position

    async def aclose(self) -> None:
        """End the subscription; a loop waiting on it stops."""
        self._closed = True
        self._buffer.clear()
        self._wake.set()
        self._on_close(self)
        if self._waker is not None:
            release(self._nc, self._waker._id)
            if not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._waker.unsubscribe()
        self._waker = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
