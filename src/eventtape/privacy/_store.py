"""An event store that keeps personal fields encrypted, per data subject, and can forget them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, Final, Self

from .._core.conditions import AppendResult, ExpectedVersion, StreamState
from .._core.dcb import (
    AppendCondition,
    DcbReadResult,
    DcbStore,
    Query,
    SequencedEvent,
    TaggedEvent,
)
from .._core.errors import InvalidArgument
from .._core.events import Event, Metadata, NewEvent, RecordedEvent, new_event_id
from .._core.privacy import FORGOTTEN, KeyStore, check_subject, personal_fields
from .._core.registry import EventRegistry
from .._core.store import EventStore, Subscription
from ._cipher import decrypt, encrypt, is_ciphertext

__all__ = ["PrivateEventStore"]


class PrivateEventStore:
    """Wraps any :class:`eventtape.EventStore`: personal fields are stored encrypted.

    At append, every field marked ``Annotated[str, Personal]`` is encrypted with its data
    subject's key (AES-256-GCM) before the inner store sees it; at every read, load,
    subscription and projection rebuild it is decrypted again. :meth:`forget` destroys the
    subject's key: from then on those fields read as :data:`eventtape.privacy.FORGOTTEN`, while
    versions, positions, ids, metadata and every non-personal field stay as they were. The
    ciphertext never changes, so anything computed over stored bytes (hashes, replicas,
    backups) stays valid, and backups hold nothing readable once the key is gone.

    Args:
        inner: The store that keeps the events (memory, JetStream, ...).
        keys: Where the per-subject keys live (never the event log).
        key_cache_seconds: How long a key (or its absence) is remembered in this process.
            Another process's ``forget`` takes effect here within this time; ``0`` asks the
            key store on every read.
    """

    holds_personal_data: Final = True
    """Tells :class:`eventtape.Repository` to accept only snapshot stores that seal it."""

    def __init__(self, inner: EventStore, keys: KeyStore, *, key_cache_seconds: float = 60.0):
        if (
            not isinstance(key_cache_seconds, int | float)
            or isinstance(key_cache_seconds, bool)
            or key_cache_seconds < 0
        ):
            raise InvalidArgument(f"key_cache_seconds must be >= 0, not {key_cache_seconds!r}")
        for method in ("key_for", "existing_key", "forget"):
            if not callable(getattr(keys, method, None)):
                raise InvalidArgument(f"keys must be a KeyStore (with {method}()), not {keys!r}")
        self._inner = inner
        self._keys = keys
        self._ttl = key_cache_seconds
        self._cache: dict[str, tuple[float, bytes | None]] = {}

    @property
    def registry(self) -> EventRegistry:
        """The inner store's registry."""
        return self._inner.registry

    @property
    def inner(self) -> EventStore:
        """The wrapped store (it holds ciphertext)."""
        return self._inner

    async def forget(self, subject: str) -> None:
        """Erase a data subject's personal data everywhere it is stored, by destroying its key.

        Idempotent. Read models built before keep what they copied: rebuild them (a rebuild
        through this store holds no personal data of the subject).
        """
        check_subject(subject)
        await self._keys.forget(subject)
        self._cache[subject] = (time.monotonic(), None)

    # -- writing -------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Encrypt personal fields, then append; see :meth:`eventtape.EventStore.append`.

        Raises:
            SubjectForgotten: If an event holds personal data of a forgotten subject.
        """
        if isinstance(events, (Event, NewEvent)):
            # The inner store words this error; give it the object as it came.
            return await self._inner.append(
                stream_id, events, expected_version=expected_version, metadata=metadata
            )
        sealed = [await self._seal(item) for item in events]
        return await self._inner.append(
            stream_id, sealed, expected_version=expected_version, metadata=metadata
        )

    async def _seal(self, item: Any) -> Any:
        """The event (bare, ``NewEvent`` or ``TaggedEvent``) with its personal fields encrypted.

        Anything that is not an event is passed on for the inner store to refuse in its words.
        """
        tagged = item if isinstance(item, TaggedEvent) else None
        new = item if isinstance(item, NewEvent) else None
        event = tagged.event if tagged else new.event if new else item
        if not isinstance(event, Event):
            return item
        found = personal_fields(type(event))
        if found is None or all(getattr(event, field) is None for field in found.fields):
            return item  # nothing personal to keep: no key needed
        event_id = tagged.event_id if tagged else new.event_id if new else new_event_id()
        subject = check_subject(found.subject_of(event))
        key = await self._keys.key_for(subject)
        name = self.registry.name_of(type(event))
        update = {
            field: encrypt(key, event_id, name, field, subject, value)
            for field in found.fields
            if isinstance(value := getattr(event, field), str)
        }
        if tagged is not None:
            return TaggedEvent(event.model_copy(update=update), tagged.tags, event_id)
        return NewEvent(event.model_copy(update=update), event_id)

    # -- Dynamic Consistency Boundaries (when the inner store has them) --------------------

    def _dcb(self) -> DcbStore:
        inner = self._inner
        if not isinstance(inner, DcbStore):
            raise InvalidArgument(f"the inner store {inner!r} has no DCB reads and appends")
        return inner

    async def dcb_read(
        self, query: Query, *, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> DcbReadResult:
        """The inner store's DCB read, personal fields decrypted (or :data:`FORGOTTEN`)."""
        result = await self._dcb().dcb_read(query, after=after, limit=limit, backwards=backwards)
        events = [
            SequencedEvent(await self._open(found.record), found.tags) for found in result.events
        ]
        return DcbReadResult(tuple(events), result.position)

    async def dcb_append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        condition: AppendCondition | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """Encrypt personal fields, then the inner store's DCB append.

        Raises:
            SubjectForgotten: If an event holds personal data of a forgotten subject.
        """
        dcb = self._dcb()
        if isinstance(events, (Event, NewEvent, TaggedEvent)):
            return await dcb.dcb_append(events, condition=condition, metadata=metadata)
        sealed = [await self._seal(item) for item in events]
        return await dcb.dcb_append(sealed, condition=condition, metadata=metadata)

    # -- reading -------------------------------------------------------------------------

    async def _key(self, subject: str) -> bytes | None:
        cached = self._cache.get(subject)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        key = await self._keys.existing_key(subject)
        self._cache[subject] = (now, key)
        return key

    async def _open(self, record: RecordedEvent[Event]) -> RecordedEvent[Event]:
        event = record.event
        found = personal_fields(type(event))
        if found is None:
            return record
        subject = found.subject_of(event)
        key: bytes | None = None
        looked_up = False
        update: dict[str, Any] = {}
        for field in found.fields:
            value = getattr(event, field)
            if not is_ciphertext(value):
                continue  # None, or written before the field was marked personal
            if not looked_up:
                key, looked_up = await self._key(subject), True
            update[field] = (
                FORGOTTEN if key is None else decrypt(key, record.event_type, field, subject, value)
            )
        if not update:
            return record
        return record._replace(event=event.model_copy(update=update))

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        position_hint: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Read one stream, personal fields decrypted (or :data:`FORGOTTEN`)."""
        async for record in self._inner.read_stream(
            stream_id,
            from_version=from_version,
            to_version=to_version,
            limit=limit,
            position_hint=position_hint,
        ):
            yield await self._open(record)

    async def read_all(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Read the whole store, personal fields decrypted (or :data:`FORGOTTEN`)."""
        async for record in self._inner.read_all(
            from_position=from_position,
            categories=categories,
            event_types=event_types,
            limit=limit,
        ):
            yield await self._open(record)

    def subscribe(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
    ) -> Subscription:
        """Follow the store, personal fields decrypted (or :data:`FORGOTTEN`)."""
        inner = self._inner.subscribe(
            from_position=from_position, categories=categories, event_types=event_types
        )
        return _PrivateSubscription(inner, self._open)

    async def stream_version(self, stream_id: str) -> int:
        """The inner store's answer."""
        return await self._inner.stream_version(stream_id)

    async def head_position(self) -> int:
        """The inner store's answer."""
        return await self._inner.head_position()

    async def aclose(self) -> None:
        """Close the inner store."""
        await self._inner.aclose()


class _PrivateSubscription:
    """A subscription whose events come out decrypted."""

    def __init__(self, inner: Subscription, open_record: Any) -> None:
        self._inner = inner
        self._open = open_record

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent[Event]:
        record: RecordedEvent[Event] = await self._open(await self._inner.__anext__())
        return record

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:  # e.g. next_position
        return getattr(self._inner, name)
