"""Helpers every store backend shares: argument checks and expected-version rules."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from .._core.conditions import ExpectedVersion, StreamState
from .._core.errors import ConcurrencyError, InvalidArgument
from .._core.events import Event, Metadata, NewEvent, new_event_id
from .._core.registry import EventRegistry

__all__ = [
    "check_expected_version",
    "check_metadata",
    "event_type_names",
    "to_new_events",
    "validate_expected_version",
    "validate_range",
]


_new_object = object.__new__
_set = object.__setattr__


def to_new_events(events: Sequence[Event | NewEvent[Event]]) -> list[NewEvent[Event]]:
    """Normalise an append's events, refusing an empty list and repeated ids."""
    if isinstance(events, (Event, NewEvent)):
        raise InvalidArgument("append() takes a sequence of events; wrap a single event in a list")
    if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
        raise InvalidArgument(f"append() takes a sequence of events, not {events!r}")
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
            raise InvalidArgument(f"cannot append {item!r}: not an eventtape.Event or NewEvent")
    if not new:
        raise InvalidArgument("append() needs at least one event")
    if len(new) > 1 and len({item.event_id for item in new}) != len(new):
        raise InvalidArgument("append() was given the same event id twice")
    return new


def check_metadata(metadata: object) -> Metadata | None:
    """Return ``metadata`` if it is a :class:`Metadata` or ``None``, else raise."""
    if metadata is None or isinstance(metadata, Metadata):
        return metadata
    raise InvalidArgument(
        f"metadata must be an eventtape.Metadata (or use metadata_scope), not {metadata!r}"
    )


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
            raise InvalidArgument(f"expected_version must be >= 0, not {expected}")
        return expected
    raise InvalidArgument(f"expected_version must be an int or a StreamState, not {expected!r}")


def event_type_names(
    registry: EventRegistry, event_types: Collection[str | type[Event]] | None
) -> frozenset[str] | None:
    """Turn an ``event_types`` filter of names and classes into registered names."""
    if event_types is None:
        return None
    if isinstance(event_types, str):
        raise InvalidArgument("event_types takes a collection of names or classes, not one string")
    return frozenset(
        item if isinstance(item, str) else registry.name_of(item) for item in event_types
    )


def validate_position_hint(position_hint: object) -> None:
    """Refuse a ``read_stream`` position hint that is not an int.

    Any int is accepted (a wrong one only costs a re-read, and the in-memory store has no use
    for one), but not another type: on JetStream a string raised ``TypeError`` from deep in the
    read, and only when the sequence index did not cover the stream, so a warm process hid it.
    """
    if position_hint is not None and (
        not isinstance(position_hint, int) or isinstance(position_hint, bool)
    ):
        raise InvalidArgument(f"position_hint must be an int, not {position_hint!r}")


def validate_range(name: str, value: int | None, minimum: int) -> None:
    """Raise ``ValueError`` if an optional integer argument is below ``minimum``."""
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < minimum
    ):
        raise InvalidArgument(f"{name} must be an int >= {minimum}, not {value!r}")
