"""Events and the metadata that makes "who did this, when and why" answerable.

- :class:`Event` is the base of your domain events: an immutable pydantic model with a stable
  type name and a schema version.
- :class:`NewEvent` is an event on its way into a store, with the id that makes retries safe.
- :class:`Metadata` is who and why, given once per append.
- :class:`RecordedEvent` is what a store gives back: the event plus everything the store knows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar
from uuid import UUID, SafeUUID

from pydantic import BaseModel, ConfigDict

from .errors import InvalidMetadata

__all__ = ["Event", "Metadata", "NewEvent", "RecordedEvent"]


class Event(BaseModel):
    """Base class of domain events: immutable, validated, named once and for good.

    Name events in the past tense (``OrderPlaced``). Two class attributes make stored data
    outlive your code:

    - ``__event_type__``: the type name written to the store. It defaults to the class name; set
      it explicitly before you ever rename the class, so old data still finds it.
    - ``__event_version__``: the schema version (default 1). Raise it when the fields change
      and register an upcaster from the old version (see :class:`eventtape.EventRegistry`).

    Example:
        ```python
        class OrderPlaced(Event):
            __event_type__ = "OrderPlaced"
            __event_version__ = 2

            order_id: str
            user_id: str
            items: tuple[LineItem, ...]
        ```

    Events are frozen and refuse unknown fields. Use tuples and frozensets rather than lists
    and sets for collections, so an event cannot be changed after it was recorded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    __event_type__: ClassVar[str]
    __event_version__: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # The default name is the class's own name, never an inherited one: a subclass of an
        # event is a different event type.
        if "__event_type__" not in cls.__dict__:
            cls.__event_type__ = cls.__name__
        version = cls.__event_version__
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TypeError(
                f"{cls.__name__}.__event_version__ must be an int >= 1, not {version!r}"
            )
        if not isinstance(cls.__event_type__, str) or not cls.__event_type__:
            raise TypeError(f"{cls.__name__}.__event_type__ must be a non-empty str")


E = TypeVar("E", bound=Event, covariant=True)

_CLEAR_VERSION_AND_VARIANT = ~((0xF000 << 64) | (0xC000 << 48))
_SET_VERSION_4_AND_VARIANT = (0x4000 << 64) | (0x8000 << 48)
_POOL_IDS = 256


class _RandomPool:
    """Random bytes for event ids, read from the OS 4 KiB at a time instead of 16 bytes.

    A child process must never reuse its parent's unread bytes (two processes would mint the
    same ids), so the pool is emptied in the child after a fork.
    """

    def __init__(self) -> None:
        self.values: list[int] = []

    def refill(self) -> None:
        data = os.urandom(16 * _POOL_IDS)
        self.values = [
            int.from_bytes(data[i : i + 16]) & _CLEAR_VERSION_AND_VARIANT
            | _SET_VERSION_4_AND_VARIANT
            for i in range(0, len(data), 16)
        ]

    def clear(self) -> None:
        self.values = []


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.clear)
_new_uuid = object.__new__
_set = object.__setattr__


def new_event_id() -> UUID:
    """Return a random version-4 UUID, exactly as :func:`uuid.uuid4` would, in a fraction of
    the time.

    Every recorded event needs one. The random bits come from ``os.urandom``, like
    ``uuid4``'s, but a pool at a time; and ``UUID.__init__``'s argument checks are skipped,
    setting the two slots it would set.
    """
    values = _pool.values
    if not values:
        _pool.refill()
        values = _pool.values
    uuid = _new_uuid(UUID)
    _set(uuid, "int", values.pop())
    _set(uuid, "is_safe", SafeUUID.unknown)
    return uuid


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent(Generic[E]):
    """An event to append, with its id.

    The id is what makes a retry safe: appending the same ids again (after a timeout, say) stores
    nothing new. Give your own id when it must be deterministic (a saga deriving it from the
    event that caused it); otherwise a random UUID is used.

    Attributes:
        event: The domain event.
        event_id: Its unique id.
    """

    event: E
    event_id: UUID = dataclasses.field(default_factory=new_event_id)


EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


MAX_METADATA_ID_LENGTH = 1024
"""Longest actor, causation id, correlation id or header name, in characters."""
MAX_HEADER_VALUE_LENGTH = 8192
"""Longest header value, in characters."""
MAX_HEADERS = 64
"""Most headers on one append."""


def _check_text(field: str, value: object, limit: int, *, identifier: bool) -> None:
    """Refuse what no store could keep faithfully, or what would mislead a reader."""
    if not isinstance(value, str):
        raise InvalidMetadata(field, f"must be a str, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidMetadata(field, f"is {len(value)} characters long; at most {limit}")
    if identifier and (not value or not value.isprintable()):
        raise InvalidMetadata(field, f"{value!r} must be non-empty printable text")
    try:
        value.encode()
    except UnicodeEncodeError as error:
        raise InvalidMetadata(
            field, f"{value!r} is not valid Unicode text ({error.reason})"
        ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Metadata:
    """Who did it and why, recorded on every event of one append.

    Attributes:
        actor: Who caused the change, as ``kind:id`` (``user:789``, ``admin:support-001``,
            ``system:auto-complete``).
        causation_id: The id of what directly caused this (an event id, a command or request id).
        correlation_id: The id shared by every event of one business transaction.
        headers: Free-form string headers (a tenant, a trace id, a client version ...).
    """

    actor: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: EMPTY_HEADERS)

    def __post_init__(self) -> None:
        for field in ("actor", "causation_id", "correlation_id"):
            value = getattr(self, field)
            if value is not None:
                _check_text(field, value, MAX_METADATA_ID_LENGTH, identifier=True)
        headers = self.headers
        if headers is EMPTY_HEADERS:
            return
        if not isinstance(headers, Mapping):
            raise InvalidMetadata("headers", f"must be a mapping, not {type(headers).__name__}")
        if len(headers) > MAX_HEADERS:
            raise InvalidMetadata("headers", f"at most {MAX_HEADERS}, not {len(headers)}")
        for key, value in headers.items():
            _check_text("header name", key, MAX_METADATA_ID_LENGTH, identifier=True)
            _check_text(f"header {key!r}", value, MAX_HEADER_VALUE_LENGTH, identifier=False)

    def merged(self, other: Metadata) -> Metadata:
        """Return a copy with ``other``'s set fields taking precedence (headers are merged)."""
        return Metadata(
            actor=other.actor if other.actor is not None else self.actor,
            causation_id=other.causation_id
            if other.causation_id is not None
            else self.causation_id,
            correlation_id=(
                other.correlation_id if other.correlation_id is not None else self.correlation_id
            ),
            headers={**self.headers, **other.headers} if other.headers else self.headers,
        )


EMPTY_METADATA = Metadata()


class RecordedEvent(NamedTuple, Generic[E]):
    """An event as a store holds it: the domain event plus everything the store knows about it.

    Immutable. (A named tuple rather than a dataclass because stores build one for every event
    they read, and a tuple is several times cheaper to build; use the attribute names.)

    Attributes:
        stream_id: The stream it belongs to.
        version: Its 1-based version in that stream.
        position: Its global position, strictly increasing across the whole store.
        event_id: Its unique id.
        event_type: The registered type name it was stored under.
        recorded_at: When the store recorded it (UTC).
        event: The domain event, upcast to the current schema.
        actor: Who caused it.
        causation_id: What directly caused it.
        correlation_id: The business transaction it belongs to.
        headers: Free-form string headers.
    """

    stream_id: str
    version: int
    position: int
    event_id: UUID
    event_type: str
    recorded_at: datetime
    event: E
    actor: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, str] = EMPTY_HEADERS
