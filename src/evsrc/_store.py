"""The event store port: what every backend promises, and small helpers they share."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Sequence
from typing import NamedTuple, Protocol, Self, TypeAlias, runtime_checkable

from ._events import Event, Metadata, NewEvent, RecordedEvent, new_event_id
from ._exceptions import ConcurrencyError
from ._registry import EventRegistry

__all__ = [
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "StreamState",
    "Subscription",
]


class StreamState(enum.Enum):
    """Expected stream states for :meth:`EventStore.append`, besides an exact version."""

    ANY = "any"
    """Append whatever the stream's version is (no concurrency check)."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (the same as expecting version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already have at least one event."""


ExpectedVersion: TypeAlias = int | StreamState
"""An exact version (0 means "no stream") or a :class:`StreamState`."""


class AppendResult(NamedTuple):
    """Where an append put its events (an immutable named tuple).

    Attributes:
        stream_id: The stream appended to.
        first_version: The version of the first event appended.
        version: The version of the last event appended: the stream's new version.
        first_position: The global position of the first event.
        position: The global position of the last event (what to wait for to read your writes).
    """

    stream_id: str
    first_version: int
    version: int
    first_position: int
    position: int


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
    """What every event store provides. Run :class:`evsrc.testing.EventStoreContract` to check one.

    Positions and versions start at 1. All errors are :class:`evsrc.EvsrcError` subclasses and a
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
            stream_id: The stream (validated by :func:`evsrc.validate_stream_id`).
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
            categories: Only streams in these categories (see :func:`evsrc.category_of`).
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


_new_object = object.__new__
_set = object.__setattr__


def to_new_events(events: Sequence[Event | NewEvent[Event]]) -> list[NewEvent[Event]]:
    """Normalise an append's events, refusing an empty list and repeated ids."""
    if isinstance(events, (Event, NewEvent)):
        raise TypeError("append() takes a sequence of events; wrap a single event in a list")
    new: list[NewEvent[Event]] = []
    for item in events:
        if isinstance(item, Event):
            # NewEvent(item), without the frozen dataclass's per-field setattr calls.
            fresh = _new_object(NewEvent)
            _set(fresh, "event", item)
            _set(fresh, "event_id", new_event_id())
            new.append(fresh)
        elif isinstance(item, NewEvent) and isinstance(item.event, Event):
            new.append(item)
        else:
            raise TypeError(f"cannot append {item!r}: not an evsrc.Event or NewEvent")
    if not new:
        raise ValueError("append() needs at least one event")
    if len(new) > 1 and len({item.event_id for item in new}) != len(new):
        raise ValueError("append() was given the same event id twice")
    return new


def check_expected_version(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`ConcurrencyError` unless a stream at ``actual`` meets ``expected``."""
    if expected is StreamState.ANY:
        return
    if expected is StreamState.NO_STREAM:
        ok = actual == 0
    elif expected is StreamState.STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = actual == expected
    if not ok:
        raise ConcurrencyError(stream_id, expected, actual)


def validate_expected_version(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is an int >= 0 or a :class:`StreamState`, else raise."""
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, int) and not isinstance(expected, bool):
        if expected < 0:
            raise ValueError(f"expected_version must be >= 0, not {expected}")
        return expected
    raise TypeError(f"expected_version must be an int or a StreamState, not {expected!r}")


def event_type_names(
    registry: EventRegistry, event_types: Collection[str | type[Event]] | None
) -> frozenset[str] | None:
    """Turn an ``event_types`` filter of names and classes into registered names."""
    if event_types is None:
        return None
    if isinstance(event_types, str):
        raise TypeError("event_types takes a collection of names or classes, not one string")
    return frozenset(
        item if isinstance(item, str) else registry.name_of(item) for item in event_types
    )


def validate_range(name: str, value: int | None, minimum: int) -> None:
    """Raise ``ValueError`` if an optional integer argument is below ``minimum``."""
    if value is not None and (not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name} must be an int >= {minimum}, not {value!r}")
