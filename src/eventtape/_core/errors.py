"""Every error eventtape raises, in one place.

The hierarchy::

    EventtapeError
    ├── InvalidStreamId            a stream id that could be misread as a subject, key or wildcard
    ├── InvalidArgument            a call's argument has the wrong type or value (also a
    │   │                          TypeError and a ValueError); nothing was done
    │   └── InvalidMetadata        an actor, causation/correlation id or header that can't be kept
    ├── ConcurrencyError           expected version did not match; nothing was appended
    ├── DuplicateEventId           an event id reused with other content or at another place
    ├── StreamNotFound             reading a stream that has no events
    │   └── AggregateNotFound      loading an aggregate that has no events (or not that version)
    ├── SerializationError         an event or snapshot could not be encoded or decoded
    │   ├── UnknownEventType       a type name or class the registry does not know
    │   └── UpcastError            no upcaster path to the current schema version
    ├── EventRegistrationError     a registration that contradicts an earlier one
    ├── MissingApplyHandler        an aggregate was given an event it has no apply handler for
    ├── SubjectForgotten           new personal data for a data subject that was forgotten
    ├── StoreError                 the store's server, not the data
    │   ├── StoreUnavailable       no answer; an append's outcome unknown, or nothing stored
    │   ├── AppendRefused          the server refused the append; nothing was stored
    │   ├── StoreConfigurationError  the server or stream cannot be used as configured
    │   └── HistoryLost            a runner's checkpoint is beyond the store's head
    ├── ProjectionFailed           a projection stopped on an event its handler kept failing on
    ├── ProjectionTimeout          a projection did not reach a position in time
    ├── Fenced                     a runner that lost a partition's lease tried to commit
    └── DomainError                base class for business-rule violations raised by your aggregates

Every error carries the facts a user needs as attributes (stream id, expected and actual
version, position, type name), and says them in its message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

    from .conditions import ExpectedVersion

__all__ = [
    "AggregateNotFound",
    "AppendRefused",
    "ConcurrencyError",
    "DomainError",
    "DuplicateEventId",
    "EventRegistrationError",
    "EventtapeError",
    "Fenced",
    "HistoryLost",
    "InvalidArgument",
    "InvalidMetadata",
    "InvalidStreamId",
    "MissingApplyHandler",
    "ProjectionFailed",
    "ProjectionTimeout",
    "SerializationError",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "StreamNotFound",
    "SubjectForgotten",
    "UnknownEventType",
    "UpcastError",
]


class EventtapeError(Exception):
    """Base class of every error raised by eventtape."""


class InvalidStreamId(EventtapeError, ValueError):
    """A stream id was rejected before it reached any store.

    Attributes:
        stream_id: The rejected id (``repr`` it before printing: it may hold control characters).
        reason: Why it was rejected.
    """

    def __init__(self, stream_id: object, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        super().__init__(f"invalid stream id {stream_id!r}: {reason}")


class InvalidArgument(EventtapeError, TypeError, ValueError):
    """A call was given an argument of the wrong type or value; nothing was done.

    It is both a :class:`TypeError` and a :class:`ValueError`, so code written against Python's
    conventions keeps catching it.
    """


class InvalidMetadata(InvalidArgument):
    """Metadata (actor, causation or correlation id, headers) that a store could not keep.

    Attributes:
        field: The offending field (``"actor"``, ``"headers"`` ...).
        reason: Why it was refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid metadata {field}: {reason}")


class ConcurrencyError(EventtapeError):
    """The stream was not at the expected version, so nothing was appended.

    Attributes:
        stream_id: The stream appended to.
        expected: The expected version that was given.
        actual: The stream's version when the append was attempted (0: no stream).
    """

    def __init__(self, stream_id: str, expected: ExpectedVersion, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r}: expected version {_describe_expected(expected)}, "
            f"actual version {actual}; nothing was appended"
        )


class DuplicateEventId(EventtapeError):
    """An event id that is already stored was appended with other content or at another place.

    Re-appending exactly the same events (same ids, same content, same versions) is an idempotent
    retry and succeeds; this error means the id was reused for something else.

    Attributes:
        stream_id: The stream appended to.
        event_id: The reused id.
        reason: What differed.
    """

    def __init__(self, stream_id: str, event_id: UUID, reason: str) -> None:
        self.stream_id = stream_id
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"stream {stream_id!r}: event id {event_id} already stored: {reason}")


class StreamNotFound(EventtapeError):
    """A stream that has no events was read.

    Attributes:
        stream_id: The stream asked for.
    """

    def __init__(self, stream_id: str, message: str | None = None) -> None:
        self.stream_id = stream_id
        super().__init__(message or f"stream {stream_id!r} not found")


class AggregateNotFound(StreamNotFound):
    """An aggregate was loaded from a stream with no events, or at a version it never had.

    Attributes:
        stream_id: The aggregate's stream.
        version: The version asked for, if any.
    """

    def __init__(self, stream_id: str, version: int | None = None, actual: int = 0) -> None:
        self.version = version
        if version is None:
            message = f"aggregate {stream_id!r} not found"
        else:
            message = f"aggregate {stream_id!r} has no version {version} (its version is {actual})"
        super().__init__(stream_id, message)


class SerializationError(EventtapeError):
    """An event or snapshot could not be encoded or decoded."""


class UnknownEventType(SerializationError):
    """A type name (on read) or an event class (on append) is not in the event registry.

    Attributes:
        type_name: The unknown type name (or the class's qualified name on append).
        stream_id: The stream the event belongs to, if known.
        position: The event's global position, if known.
    """

    def __init__(
        self, type_name: str, *, stream_id: str | None = None, position: int | None = None
    ) -> None:
        self.type_name = type_name
        self.stream_id = stream_id
        self.position = position
        where = _where(stream_id, position)
        super().__init__(
            f"unknown event type {type_name!r}{where}; register it in the EventRegistry"
        )


class UpcastError(SerializationError):
    """A stored event could not be brought to its class's current schema version.

    Attributes:
        type_name: The stored type name.
        stored_version: The schema version the event was written with.
        current_version: The class's schema version.
        stream_id: The stream the event belongs to, if known.
        position: The event's global position, if known.
    """

    def __init__(
        self,
        type_name: str,
        stored_version: int,
        current_version: int,
        reason: str,
        *,
        stream_id: str | None = None,
        position: int | None = None,
    ) -> None:
        self.type_name = type_name
        self.stored_version = stored_version
        self.current_version = current_version
        self.stream_id = stream_id
        self.position = position
        super().__init__(
            f"cannot upcast {type_name!r} from schema version {stored_version} to "
            f"{current_version}{_where(stream_id, position)}: {reason}"
        )


class EventRegistrationError(EventtapeError, TypeError):
    """An event class or upcaster registration contradicts an earlier one."""


class MissingApplyHandler(EventtapeError, TypeError):
    """An aggregate was asked to apply an event type it has no ``@applies`` handler for.

    Attributes:
        aggregate_type: The aggregate class's name.
        event_type: The event class's name.
    """

    def __init__(self, aggregate_type: str, event_type: str) -> None:
        self.aggregate_type = aggregate_type
        self.event_type = event_type
        super().__init__(
            f"{aggregate_type} has no @applies handler for {event_type}; "
            f"add one so its state can be rebuilt from that event"
        )


class SubjectForgotten(EventtapeError):
    """Personal data was appended for a data subject whose key was destroyed; nothing was stored.

    Forgetting is for good: a forgotten subject's data is never collected again under the old
    identity. Give the person a new subject id if they come back.

    Attributes:
        subject: The forgotten data subject (``"customer:789"``).
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"data subject {subject!r} was forgotten; no new personal data for it")


class StoreError(EventtapeError):
    """Base of the errors about the store's server rather than the data: catch this to handle
    "the store could not do it" in one place (as httpx's ``TransportError``)."""


class StoreUnavailable(StoreError):
    """The store did not answer in time or could not be reached.

    For an append, the message says whether the outcome is *unknown* (the request may have
    reached the server: the events may or may not be stored) or *nothing was stored* (it was
    never sent). Either way, retrying the same append (the same event ids) is safe: it stores
    them at most once.

    Attributes:
        stored: ``None`` when the outcome is unknown, ``False`` when nothing was stored.
    """

    def __init__(self, message: str, *, stored: bool | None = None) -> None:
        self.stored = stored
        super().__init__(message)


class AppendRefused(StoreError):
    """The server refused the append: nothing was stored (too large, stream full, or others
    kept appending first to a stream appended to with ``ANY``).

    Attributes:
        stream_id: The stream appended to.
        reason: What the server (or the check before sending) said.
    """

    stored = False

    def __init__(self, stream_id: str, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        super().__init__(f"append to {stream_id!r} refused, nothing stored: {reason}")


class StoreConfigurationError(StoreError):
    """The server or its stream cannot be used as configured (too old, conflicting settings,
    or missing where it must exist)."""


class HistoryLost(StoreError):
    """A runner's checkpoint lies beyond the store's head: the store has less history than
    was already handled (a stream lost and re-created, a restore from an old backup, or the
    wrong store). The runner stops instead of carrying on over a shorter history.

    Attributes:
        name: The projection or saga.
        checkpoint: The position it had handled.
        head: The store's head position now.
    """

    def __init__(self, name: str, checkpoint: int, head: int) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.head = head
        super().__init__(
            f"{name!r} has handled up to position {checkpoint}, but the store's head is {head}:"
            " the store lost history, or this is another store; restore it, or rebuild"
            f" {name!r} deliberately"
        )


class ProjectionFailed(EventtapeError):
    """A projection stopped: its handler kept failing on one event.

    Attributes:
        projection: The projection's name.
        event_type: The failing event's type name.
        position: The failing event's global position.
        cause: The last error the handler raised.
    """

    def __init__(self, projection: str, event_type: str, position: int, cause: BaseException):
        self.projection = projection
        self.event_type = event_type
        self.position = position
        self.cause = cause
        super().__init__(
            f"projection {projection!r} stopped at {event_type} (position {position}): "
            f"{type(cause).__name__}: {cause}"
        )


class ProjectionTimeout(EventtapeError, TimeoutError):
    """A projection had not applied a position when the wait ended.

    Attributes:
        projection: The projection's name.
        position: The position waited for.
        checkpoint: How far the projection had got.
    """

    def __init__(self, projection: str, position: int, checkpoint: int) -> None:
        self.projection = projection
        self.position = position
        self.checkpoint = checkpoint
        super().__init__(
            f"projection {projection!r} has not reached position {position} "
            f"(it is at {checkpoint}); is the event in its categories, and is it running?"
        )


class Fenced(EventtapeError):
    """A runner wrote a partition's checkpoint with an older owner token than the stored one.

    Another runner took the partition over (its lease expired while this one was paused, cut
    off or slow), so this runner's transaction was rolled back: nothing it wrote is kept.
    """

    def __init__(self, projection: str, partition: str, token: int, stored: int) -> None:
        self.projection = projection
        self.partition = partition
        self.token = token
        self.stored = stored
        super().__init__(
            f"{projection} partition {partition}: owner token {token} is older than the stored"
            f" {stored}; another runner owns it now (or the lease bucket was recreated)"
        )


class DomainError(EventtapeError):
    """Base class for business-rule violations raised by aggregate command methods.

    A command that raises a ``DomainError`` must record nothing. Subclass it for your own rules
    (``InsufficientStock(DomainError)``) so an entrypoint can tell a rejected command from a bug.
    """


def _describe_expected(expected: ExpectedVersion) -> str:
    if isinstance(expected, int):
        return str(expected)
    return expected.name


def _where(stream_id: str | None, position: int | None) -> str:
    parts = []
    if stream_id is not None:
        parts.append(f"stream {stream_id!r}")
    if position is not None:
        parts.append(f"position {position}")
    return f" at {', '.join(parts)}" if parts else ""


def describe(error: BaseException) -> str:
    """A one-line description of an error, for parked events and messages."""
    return f"{type(error).__name__}: {error}"
