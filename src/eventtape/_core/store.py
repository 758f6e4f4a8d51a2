"""The event store port: what every backend promises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from typing import Protocol, Self, runtime_checkable

from .conditions import AppendResult, ExpectedVersion, StreamState
from .events import Event, Metadata, NewEvent, RecordedEvent
from .registry import EventRegistry

__all__ = ["EventStore", "Subscription"]


@runtime_checkable
class Subscription(Protocol):
    """A live feed of recorded events: catches up from a position, then follows new appends.

    Iterate it with ``async for``; it yields every matching event once, in global order, with
    no gaps, until it is closed (``aclose()`` or leaving ``async with``), which ends the loop.
    """

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> RecordedEvent[Event]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def aclose(self) -> None:
        """Stop the subscription; a loop waiting on it ends."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """What every event store provides.

    Run :class:`eventtape.testing.EventStoreContract` to check one.

    Positions and versions start at 1. All errors are :class:`eventtape.EventtapeError` subclasses
    and a
    failed append leaves the store unchanged.
    """

    @property
    def registry(self) -> EventRegistry:
        """The registry used to name, encode and decode events."""
        ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Append events to one stream, all of them or none.

        Args:
            stream_id: The stream (validated by :func:`eventtape.validate_stream_id`).
            events: One or more events; a plain :class:`Event` gets a random id.
            expected_version: An exact version or a :class:`StreamState`.
            metadata: Who and why, recorded on every event of the call.

        Returns:
            Where the events went. Appending ids that are already stored in this stream, in the
            same order and with the same content, stores nothing and returns the original result.

        Raises:
            InvalidStreamId: For a bad stream id.
            ConcurrencyError: If the stream is not at the expected version.
            DuplicateEventId: If an id is already stored with other content or elsewhere.
            UnknownEventType: If an event's class is not registered.
            ValueError: If ``events`` is empty or repeats an id.
        """
        ...

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        position_hint: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield a stream's events from ``from_version`` to ``to_version`` (inclusive), in order.

        Args:
            stream_id: The stream.
            from_version: The first version to yield.
            to_version: The last version to yield (default: the stream's end).
            limit: Yield at most this many events.
            position_hint: The global position of an event of this stream at or before
                ``from_version`` (a snapshot's position), if known. A store may start reading
                there; a wrong hint never changes the result, only the cost.

        Raises:
            StreamNotFound: If the stream has no events.
        """
        ...

    def read_all(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield every event from ``from_position`` (inclusive) in global order, up to the head.

        Args:
            from_position: The first position to read (a checkpoint plus one).
            categories: Only streams in these categories (see :func:`eventtape.category_of`).
            event_types: Only these event types (names or classes).
            limit: Stop after this many events.
        """
        ...

    def subscribe(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
    ) -> Subscription:
        """Catch up from ``from_position`` (inclusive), then follow live appends."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's current version (0 if it has no events)."""
        ...

    async def head_position(self) -> int:
        """Return the position of the last event in the store (0 if it is empty)."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources and end its subscriptions."""
        ...
