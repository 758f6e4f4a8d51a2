"""Dynamic Consistency Boundaries (dcb.events): tags, queries, append conditions, the store port.

A decision reads the events matching a :class:`Query`, decides, and appends new events on the
condition that nothing matching the query was stored after the position it read up to. The
consistency boundary is the query, not a stream, so a rule spanning several entities (a coupon
and a customer) needs no aggregate around both.

Events carry **tags** (``customer:789``): declared on the event class with ``__event_tags__``
(format strings over the event's fields) and/or given at append with :func:`tagged`. Every event
appended to a stream also carries the implicit tag ``stream:<stream id>``, so a DCB query sees
aggregate events, and a condition on ``stream:<id>`` guards what a stream append's expected
version guards. ``stream:`` tags are reserved for that and cannot be given on a DCB append.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from uuid import UUID

from .errors import InvalidTag
from .events import Event, Metadata, NewEvent, RecordedEvent, new_event_id
from .wire import DCB_CATEGORY, STREAM_TAG_PREFIX

__all__ = [
    "STREAM_TAG_PREFIX",
    "AppendCondition",
    "DcbReadResult",
    "DcbStore",
    "Query",
    "QueryItem",
    "SequencedEvent",
    "TaggedEvent",
    "dcb_stream_id",
    "tagged",
    "tags_of",
    "validate_tag",
]


MAX_TAG_LENGTH = 256
MAX_TAGS_PER_EVENT = 64


def dcb_stream_id(first_event_id: UUID) -> str:
    """The stream a DCB append is stored as: ``dcb-<its first event id>``.

    Each DCB append is a one-append stream, so readers of the log that know only streams
    (projections, sagas, the command line) read DCB events like any others.
    """
    return f"{DCB_CATEGORY}-{first_event_id}"


def validate_tag(tag: object, *, reserved_ok: bool = False) -> str:
    """Return ``tag`` if it is a valid tag, else raise :class:`InvalidTag`.

    A tag is a non-empty string of at most 256 printable characters (no control characters,
    which would be misread in logs and headers).
    """
    if not isinstance(tag, str):
        raise InvalidTag(tag, f"a tag is a str, not {type(tag).__name__}")
    if not tag or len(tag) > MAX_TAG_LENGTH:
        raise InvalidTag(tag[:80], f"a tag has 1 to {MAX_TAG_LENGTH} characters")
    if not tag.isprintable():
        raise InvalidTag(tag, "a tag may not hold control characters")
    if not reserved_ok and tag.startswith(STREAM_TAG_PREFIX):
        raise InvalidTag(tag, "'stream:' tags are given implicitly to stream appends, not by hand")
    return tag


def _tag_set(tags: Iterable[str], *, reserved_ok: bool) -> frozenset[str]:
    if isinstance(tags, str):
        raise TypeError("tags takes a collection of tags, not one string")
    result = frozenset(validate_tag(tag, reserved_ok=reserved_ok) for tag in tags)
    if len(result) > MAX_TAGS_PER_EVENT:
        raise ValueError(f"an event carries at most {MAX_TAGS_PER_EVENT} tags, not {len(result)}")
    return result


_NO_TAGS: frozenset[str] = frozenset()


def tags_of(event: Event) -> frozenset[str]:
    """Return the tags an event's class declares, filled in from its fields.

    Declare them as format strings: ``__event_tags__ = ("customer:{customer_id}",)``.
    """
    templates: Iterable[str] = getattr(type(event), "__event_tags__", ())
    if not templates:  # most events declare none: no need to read their fields
        return _NO_TAGS
    if isinstance(templates, str):
        raise TypeError(f"{type(event).__qualname__}.__event_tags__ must be a tuple of str")
    fields = dict(event)
    try:
        tags = [template.format(**fields) for template in templates]
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise InvalidTag(
            templates,
            f"{type(event).__qualname__}.__event_tags__ does not fit its fields: {error!r}",
        ) from error
    return _tag_set(tags, reserved_ok=False)


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """An event on its way into a DCB append, with its tags and id (see :func:`tagged`)."""

    event: Event
    tags: frozenset[str]
    event_id: UUID

    def as_new_event(self) -> NewEvent[Event]:
        """The event with its id, as a stream append takes it."""
        return NewEvent(self.event, self.event_id)


def tagged(event: Event, *tags: str, event_id: UUID | None = None) -> TaggedEvent:
    """Give ``event`` tags (besides those its class declares) and an id for a DCB append.

    Choose the id before the first try (the default is random) and a retry after a lost
    acknowledgement stores nothing twice.
    """
    if not isinstance(event, Event):
        raise TypeError(f"tagged() takes an Event, not {type(event).__name__}")
    return TaggedEvent(
        event,
        tags_of(event) | _tag_set(tags, reserved_ok=False),
        event_id if event_id is not None else new_event_id(),
    )


def to_tagged(events: Sequence[Event | NewEvent[Event] | TaggedEvent]) -> list[TaggedEvent]:
    """Normalise what a DCB append is given; refuse an empty or id-repeating list."""
    if isinstance(events, (Event, NewEvent, TaggedEvent)):
        raise TypeError("append takes a sequence of events, not one event")
    result: list[TaggedEvent] = []
    for item in events:
        if isinstance(item, TaggedEvent):
            result.append(item)
        elif isinstance(item, NewEvent):
            result.append(tagged(item.event, event_id=item.event_id))
        elif isinstance(item, Event):
            result.append(tagged(item))
        else:
            raise TypeError(f"not an event: {type(item).__name__}")
    if not result:
        raise ValueError("append needs at least one event")
    if len({item.event_id for item in result}) != len(result):
        raise ValueError("an append repeats an event id")
    return result


@dataclass(frozen=True, slots=True)
class QueryItem:
    """Events of one of ``types`` (any type if empty) carrying all of ``tags``.

    Args:
        types: Event type names or classes; empty matches every type.
        tags: Tags an event must all carry; empty matches every event of the types.
    """

    types: frozenset[str] = field(default=frozenset())
    tags: frozenset[str] = field(default=frozenset())

    def __init__(self, types: Iterable[str | type[Event]] = (), tags: Iterable[str] = ()) -> None:
        if isinstance(types, (str, type)):
            raise TypeError("types takes a collection of types, not one")
        names: set[str] = set()
        for item in types:
            if isinstance(item, type) and issubclass(item, Event):
                names.add(item.__event_type__)
            elif isinstance(item, str) and item:
                names.add(item)
            else:
                raise TypeError(f"an event type is a name or an Event class, not {item!r}")
        object.__setattr__(self, "types", frozenset(names))
        object.__setattr__(self, "tags", _tag_set(tags, reserved_ok=True))

    def matches(self, event_type: str, tags: Collection[str]) -> bool:
        """Whether an event of ``event_type`` carrying ``tags`` matches this item."""
        if self.types and event_type not in self.types:
            return False
        return self.tags.issubset(tags)


@dataclass(frozen=True, slots=True)
class Query:
    """Events matching any of ``items``; :meth:`all` (no items) matches every event."""

    items: tuple[QueryItem, ...]

    def __init__(self, *items: QueryItem) -> None:
        for item in items:
            if not isinstance(item, QueryItem):
                raise TypeError(f"a query holds QueryItem objects, not {type(item).__name__}")
        object.__setattr__(self, "items", tuple(items))

    @classmethod
    def all(cls) -> Query:
        """The query every event matches."""
        return cls()

    @classmethod
    def of(cls, types: Iterable[str | type[Event]] = (), tags: Iterable[str] = ()) -> Query:
        """A query of one item."""
        return cls(QueryItem(types, tags))

    def __or__(self, other: Query) -> Query:
        """The query matching what either matches."""
        if not self.items or not other.items:
            return Query.all()
        return Query(*self.items, *(item for item in other.items if item not in self.items))

    @property
    def is_all(self) -> bool:
        """Whether every event matches."""
        return not self.items

    def matches(self, event_type: str, tags: Collection[str]) -> bool:
        """Whether an event of ``event_type`` carrying ``tags`` matches the query."""
        return not self.items or any(item.matches(event_type, tags) for item in self.items)

    def __str__(self) -> str:
        if not self.items:
            return "all events"
        parts = []
        for item in self.items:
            types = "|".join(sorted(item.types)) or "any type"
            tags = ", ".join(sorted(item.tags))
            parts.append(f"({types}" + (f" tagged {tags})" if tags else ")"))
        return " or ".join(parts)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Fail the append if an event matching ``fail_if_events_match`` was stored after ``after``.

    Args:
        fail_if_events_match: The decision's query.
        after: The position the decision read up to; ``None``: anywhere in the log (a
            uniqueness guard).
    """

    fail_if_events_match: Query
    after: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise TypeError("fail_if_events_match takes a Query")
        if self.after is not None and (
            not isinstance(self.after, int) or isinstance(self.after, bool) or self.after < 0
        ):
            raise ValueError(f"after must be a position >= 0 or None, not {self.after!r}")


@dataclass(frozen=True, slots=True)
class SequencedEvent:
    """An event a DCB read returned: the recorded event and its tags.

    ``record.position`` is its position; ``tags`` include the implicit ``stream:<id>``.
    """

    record: RecordedEvent[Event]
    tags: frozenset[str]

    @property
    def position(self) -> int:
        """The event's global position."""
        return self.record.position

    @property
    def event(self) -> Event:
        """The domain event."""
        return self.record.event

    @property
    def event_type(self) -> str:
        """Its registered type name."""
        return self.record.event_type


@dataclass(frozen=True, slots=True)
class DcbReadResult:
    """What a DCB read returned: the matching events, and the position read up to.

    ``position`` is the consistency point: pass it as :attr:`AppendCondition.after`. It is the
    store's head when the read began (or, with a ``limit``, the last event returned).
    """

    events: tuple[SequencedEvent, ...]
    position: int


@runtime_checkable
class DcbStore(Protocol):
    """A store with Dynamic Consistency Boundaries (run :class:`eventtape.testing.DcbContract`)."""

    async def dcb_read(
        self,
        query: Query,
        *,
        after: int = 0,
        limit: int | None = None,
        backwards: bool = False,
    ) -> DcbReadResult:
        """Return the events matching ``query`` stored after position ``after``.

        Args:
            query: What to read.
            after: Read events at positions greater than this.
            limit: At most this many events.
            backwards: Newest first (with ``limit``: the last ones).
        """
        ...

    async def dcb_append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        condition: AppendCondition | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """Store all ``events`` atomically, or none if the condition fails.

        Returns:
            The position of the last event appended.

        Raises:
            AppendConditionFailed: If an event matching the condition's query was stored after
                its position; nothing was appended.
            DuplicateEventId: If an id is already stored with other content.
        """
        ...
