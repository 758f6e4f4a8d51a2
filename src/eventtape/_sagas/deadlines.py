"""Saga deadlines: durable timeouts kept as events in the stream ``deadline-<saga>``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import uuid
from collections.abc import Mapping
from datetime import datetime

from .._core.clock import Clock
from .._core.errors import DuplicateEventId, StreamNotFound
from .._core.events import (
    EMPTY_HEADERS,
    MAX_HEADER_VALUE_LENGTH,
    Event,
    Metadata,
    NewEvent,
    RecordedEvent,
)
from .._core.store import EventStore
from .._core.system_events import DeadlineCancelled, DeadlineFired, DeadlineScheduled
from .._core.telemetry import TRACE_HEADERS, trace_headers
from .._core.wire import DEADLINE_TRACES_HEADER, SAGA_NAMESPACE

__all__ = ["Deadline", "DeadlineBook", "deadline_id"]

_WRITE_BATCH = 100  # events per append (JetStream takes at most 100 in one message)
_TRACE_KEY = 12  # hex digits of an event id naming it in the deadline-traces header


def deadline_id(saga: str, name: str, key: str) -> uuid.UUID:
    """The stable id of one deadline: one per saga, name and key."""
    return uuid.uuid5(SAGA_NAMESPACE, f"deadline:{saga}:{name}:{key}")


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """A scheduled timeout: stored durably, fired once, unless cancelled first.

    Attributes:
        saga: The saga that scheduled it.
        name: What it is (``"payment_timeout"``).
        key: Which instance it is for (an order id).
        due_at: When it fires (UTC).
        correlation_id: The business transaction it belongs to.
        scheduled_by: The W3C trace context of the span that scheduled it (empty when tracing
            is off), kept in the ``DeadlineScheduled`` event's headers: the span of its firing
            links to it.
    """

    saga: str
    name: str
    key: str
    due_at: datetime
    correlation_id: str | None
    scheduled_by: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: EMPTY_HEADERS, compare=False, repr=False
    )

    @property
    def deadline_id(self) -> uuid.UUID:
        """A stable id: one deadline per saga, name and key."""
        return deadline_id(self.saga, self.name, self.key)


_Queued = tuple[NewEvent[Event], dict[str, str], "asyncio.Future[None]"]
"""An event waiting for the writer, its caller's trace context, and the caller's future."""


def _batch_headers(batch: list[_Queued]) -> dict[str, str]:
    """The metadata headers of one append of deadline events: their callers' trace contexts.

    Headers are per append, and one append carries the events of many handlings (many
    traces) at once. So each ``DeadlineScheduled`` names the trace that scheduled it in one
    header (``DEADLINE_TRACES_HEADER``), which :func:`_scheduled_by` reads back; and when every
    event of the append comes from one trace (one order's handling), the standard
    ``traceparent`` too, so the handlers of these events continue that trace. Empty when
    tracing is off: nothing is added to the events.
    """
    pairs: list[str] = []
    length = 0
    for new, context, _ in batch:
        traceparent = context.get("traceparent")
        if traceparent is None or not isinstance(new.event, DeadlineScheduled):
            continue
        pair = f"{new.event_id.hex[:_TRACE_KEY]}={traceparent}"
        if "," in traceparent or length + len(pair) + 1 > MAX_HEADER_VALUE_LENGTH:
            continue  # never refuse an append over a trace: that deadline goes unlinked
        pairs.append(pair)
        length += len(pair) + 1
    headers = {DEADLINE_TRACES_HEADER: ",".join(pairs)} if pairs else {}
    first = batch[0][1]
    if first and all(context == first for _, context, _ in batch):
        headers.update(first)
    return headers


def _scheduled_by(record: RecordedEvent[Event]) -> Mapping[str, str]:
    """The trace context that scheduled the deadline ``record`` stores (empty if none)."""
    headers = record.headers
    pairs = headers.get(DEADLINE_TRACES_HEADER)
    if pairs:
        key = f"{record.event_id.hex[:_TRACE_KEY]}="
        for pair in pairs.split(","):
            if pair.startswith(key):
                return {"traceparent": pair[len(key) :]}
        return EMPTY_HEADERS
    return {h: headers[h] for h in TRACE_HEADERS if h in headers}


class DeadlineBook:
    """One saga's pending deadlines, kept as events in the stream ``deadline-<saga>``."""

    def __init__(self, store: EventStore, saga: str, clock: Clock) -> None:
        self._store = store
        self._stream_id = f"deadline-{saga}"
        self._clock = clock
        self.pending: dict[uuid.UUID, Deadline] = {}
        self._changed = asyncio.Event()
        self._outbox: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Rebuild the pending deadlines from their stream."""
        self.pending.clear()
        try:
            async for record in self._store.read_stream(self._stream_id):
                event = record.event
                if isinstance(event, DeadlineScheduled):
                    deadline = Deadline(
                        event.saga,
                        event.name,
                        event.key,
                        event.due_at,
                        event.correlation_id,
                        _scheduled_by(record),
                    )
                    self.pending[deadline.deadline_id] = deadline
                elif isinstance(event, (DeadlineCancelled, DeadlineFired)):
                    self.pending.pop(deadline_id(event.saga, event.name, event.key), None)
        except StreamNotFound:
            pass

    async def schedule(self, deadline: Deadline, event_id: uuid.UUID) -> None:
        event = DeadlineScheduled(
            saga=deadline.saga,
            name=deadline.name,
            key=deadline.key,
            due_at=deadline.due_at,
            correlation_id=deadline.correlation_id,
        )
        await self._append(event, event_id)
        self.pending[deadline.deadline_id] = deadline
        self._changed.set()

    async def cancel(self, saga: str, name: str, key: str, event_id: uuid.UUID) -> None:
        if self.pending.pop(deadline_id(saga, name, key), None) is not None:
            await self._append(DeadlineCancelled(saga=saga, name=name, key=key), event_id)
            self._changed.set()

    async def fired(self, deadline: Deadline) -> None:
        event_id = uuid.uuid5(SAGA_NAMESPACE, f"fired:{deadline.deadline_id}:{deadline.due_at}")
        event = DeadlineFired(saga=deadline.saga, name=deadline.name, key=deadline.key)
        await self._append(event, event_id)
        self.pending.pop(deadline.deadline_id, None)

    async def _append(self, event: Event, event_id: uuid.UUID) -> None:
        # Sagas of many orders schedule and cancel deadlines at once, all on this one stream:
        # appended one by one they would race for its tail. One writer appends whatever
        # has queued up meanwhile in one call (one round trip, no conflicts between them).
        # Each event keeps the trace context of its caller, taken here (see _batch_headers):
        # the writer runs in a task of its own, in an empty context, since its own would be
        # that of whoever started it.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((NewEvent(event, event_id), trace_headers(), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(
                self._write_outbox(),
                name=f"eventtape-deadlines-{self._stream_id}",
                context=contextvars.Context(),
            )
        await asyncio.shield(future)

    async def _write_outbox(self) -> None:
        batch: list[_Queued] = []
        try:
            while self._outbox:
                batch, self._outbox = self._outbox[:_WRITE_BATCH], self._outbox[_WRITE_BATCH:]
                try:
                    await self._append_together([new for new, _, _ in batch], _batch_headers(batch))
                except Exception as failure:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                else:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_result(None)
                batch = []
        except BaseException:  # cancelled (the runner stopped hard): nobody waits forever
            for _, _, future in batch + self._outbox:
                future.cancel()
            self._outbox = []
            raise

    async def _append_together(
        self, events: list[NewEvent[Event]], headers: Mapping[str, str]
    ) -> None:
        metadata = Metadata(headers=headers) if headers else None
        try:
            await self._store.append(self._stream_id, events, metadata=metadata)
        except DuplicateEventId:
            if len(events) == 1:
                return  # written by an earlier run of this handler
            # Some were written by an earlier run: the rest one by one.
            for new in events:
                with contextlib.suppress(DuplicateEventId):
                    await self._store.append(self._stream_id, [new], metadata=metadata)

    async def next_due(self) -> Deadline | None:
        """Wait until a pending deadline is due and return it (or ``None`` when woken early)."""
        self._changed.clear()
        if not self.pending:
            await self._changed.wait()
            return None
        deadline = min(self.pending.values(), key=lambda d: d.due_at)
        sleeping = asyncio.ensure_future(self._clock.sleep_until(deadline.due_at))
        changing = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeping, changing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            changing.cancel()
        if self._clock.now() >= deadline.due_at and deadline.deadline_id in self.pending:
            return deadline
        return None
