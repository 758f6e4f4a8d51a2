"""In-memory event and snapshot stores: real implementations for tests and quick starts.

They keep the full contract (atomic appends, optimistic concurrency, idempotent retries, gapless
subscriptions) and are safe under any number of concurrent asyncio tasks: every mutation happens
between two awaits, so it is atomic on the event loop. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Self
from uuid import UUID

from .._core.chain import UNKEYED, ChainReport, HashChain, StoredLink, unreadable
from .._core.conditions import AppendResult, ExpectedVersion, StreamState
from .._core.dcb import (
    STREAM_TAG_PREFIX,
    AppendCondition,
    DcbReadResult,
    Query,
    SequencedEvent,
    TaggedEvent,
    dcb_stream_id,
    tags_of,
    to_tagged,
)
from .._core.errors import (
    AppendConditionFailed,
    DuplicateEventId,
    EventtapeError,
    InvalidArgument,
    SerializationError,
    StreamNotFound,
)
from .._core.events import EMPTY_HEADERS, Event, Metadata, NewEvent, RecordedEvent
from .._core.registry import EventRegistry
from .._core.snapshots import Snapshot
from .._core.stream_ids import category_of, validate_stream_id
from .._core.telemetry import append_instruments, with_trace_context
from ._common import (
    check_expected_version,
    check_metadata,
    event_type_names,
    to_new_events,
    validate_expected_version,
    validate_position_hint,
    validate_range,
)

__all__ = ["InMemoryEventStore", "InMemorySnapshotStore"]

_NO_METADATA = Metadata()
Filter = Callable[[RecordedEvent[Event]], bool]


class InMemoryEventStore:
    """An :class:`eventtape.EventStore` held in process memory.

    Args:
        registry: The event registry; appending an unregistered event class fails, as it would
            on a persistent store.
        round_trip: Encode every appended event to JSON and decode it back before storing it
            (the default). Your tests then fail on anything a persistent store could not store,
            and the stored event shares no mutable object with the caller's. Turn it off only
            where the last microsecond matters.
    """

    def __init__(
        self,
        registry: EventRegistry,
        *,
        round_trip: bool = True,
        chain: HashChain | None = UNKEYED,
    ) -> None:
        if chain is not None and not isinstance(chain, HashChain):
            raise InvalidArgument(f"chain takes a HashChain or None, not {type(chain).__name__}")
        self._registry = registry
        self._round_trip = round_trip
        self._chain = chain
        self._links: dict[str, list[bytes]] = {}  # each stream's links, by version - 1
        self._streams: dict[str, list[RecordedEvent[Event]]] = {}
        self._all: list[RecordedEvent[Event]] = []
        self._by_id: dict[UUID, RecordedEvent[Event]] = {}
        self._tags: dict[int, frozenset[str]] = {}  # tags given on DCB appends, by position
        self._by_tag: dict[str, list[int]] = {}  # positions of every event carrying a tag
        self._by_type: dict[str, list[int]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    @property
    def registry(self) -> EventRegistry:
        """The event registry this store names and checks events with."""
        return self._registry

    @property
    def chain(self) -> HashChain | None:
        """How this store links the events it appends (``None``: it does not)."""
        return self._chain

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Append events atomically; see :meth:`eventtape.EventStore.append`."""
        self._check_open()
        validate_stream_id(stream_id)
        validate_expected_version(expected_version)
        new = to_new_events(events)
        metadata = with_trace_context(check_metadata(metadata))
        instruments = append_instruments()
        if instruments is None:
            return self._append(stream_id, new, expected_version, metadata)
        with instruments.measure("memory", category_of(stream_id), len(new)):
            return self._append(stream_id, new, expected_version, metadata)

    def _append(
        self,
        stream_id: str,
        new: list[NewEvent[Event]],
        expected_version: ExpectedVersion,
        metadata: Metadata | None,
    ) -> AppendResult:
        stream = self._streams.get(stream_id)
        actual = len(stream) if stream is not None else 0

        retried = self._retried_result(stream_id, new, expected_version)
        if retried is not None:
            return retried
        check_expected_version(stream_id, expected_version, actual)

        # Prepare every record before changing anything, so a failure leaves no trace.
        meta = metadata or _NO_METADATA
        headers = MappingProxyType(dict(meta.headers)) if meta.headers else EMPTY_HEADERS
        recorded_at = datetime.now(UTC)
        position = len(self._all)
        prepared = self._prepare(new)
        records = [
            RecordedEvent(
                stream_id,
                actual + offset,
                position + offset,
                item.event_id,
                name,
                recorded_at,
                event,
                meta.actor,
                meta.causation_id,
                meta.correlation_id,
                headers,
            )
            for offset, (item, name, event, _, _) in enumerate(prepared, start=1)
        ]
        chain = self._chain
        if chain is not None:
            links = self._links.get(stream_id)
            if links is None:
                links = self._links[stream_id] = []
            if len(links) == actual:
                link = links[-1] if actual else None
            else:  # a stream begun before the chain: its first link links to nothing
                link = None
                links.extend([b""] * (actual - len(links)))
            shared = chain.append_part(
                stream_id, meta.actor, meta.causation_id, meta.correlation_id, headers
            )
            version = actual
            for item, name, _, schema, data in prepared:
                version += 1
                link = chain.link(link, version, item.event_id, name, schema, shared, data)
                links.append(link)
        if stream is None:
            self._streams[stream_id] = records
        else:
            stream.extend(records)
        self._all.extend(records)
        for record in records:
            self._by_id[record.event_id] = record
            for tag in self._tags_of(record):
                self._by_tag.setdefault(tag, []).append(record.position)
            self._by_type.setdefault(record.event_type, []).append(record.position)
        self._wake_subscribers()
        return AppendResult(
            stream_id,
            records[0].version,
            records[-1].version,
            records[0].position,
            records[-1].position,
        )

    def _prepare(
        self, new: list[NewEvent[Event]]
    ) -> list[tuple[NewEvent[Event], str, Event, int, bytes]]:
        """Each new event's stored name, the event to store, its schema and its data's JSON
        (empty when neither the round trip nor the chain needs it)."""
        registry = self._registry
        prepared = []
        encode = self._round_trip or self._chain is not None
        for item in new:
            schema, data = 0, b""
            if encode:
                name, schema, data = registry.encode(item.event)
            if self._round_trip:
                # The registry's decode, minus the name lookup: the class is at hand.
                try:
                    event = type(item.event).__pydantic_validator__.validate_json(data)
                except ValueError as error:
                    raise SerializationError(
                        f"{type(item.event).__qualname__} does not survive JSON encoding, so a "
                        f"persistent store could not keep it: {error}"
                    ) from error
                if self._chain is not None and _holds_sets(type(event)):
                    # A set is written in its iteration order, which the decoded copy stored
                    # here need not share: link the stored copy's JSON, which is what the
                    # verifier re-encodes (else an untouched store would verify "altered").
                    data = registry.encode(event)[2]
            else:
                event = item.event
                if not encode:
                    name = registry.name_of(type(event))
            prepared.append((item, name, event, schema, data))
        return prepared

    def _retried_result(
        self, stream_id: str, new: list[NewEvent[Event]], expected: ExpectedVersion
    ) -> AppendResult | None:
        """Return the original result if ``new`` repeats stored events exactly, else ``None``."""
        by_id = self._by_id
        first = by_id.get(new[0].event_id)
        if first is None:
            for item in new[1:]:
                if item.event_id in by_id:
                    raise DuplicateEventId(
                        stream_id, item.event_id, "it is stored, but the events before it are not"
                    )
            return None
        if first.stream_id != stream_id:
            raise DuplicateEventId(
                stream_id, first.event_id, f"it belongs to stream {first.stream_id!r}"
            )
        if isinstance(expected, int) and expected != first.version - 1:
            raise DuplicateEventId(
                stream_id,
                first.event_id,
                f"it is stored at version {first.version}, not after version {expected}",
            )
        stream = self._streams[stream_id]
        for offset, item in enumerate(new):
            index = first.version - 1 + offset
            stored = stream[index] if index < len(stream) else None
            if stored is None or stored.event_id != item.event_id:
                raise DuplicateEventId(
                    stream_id, item.event_id, "the retried events do not match the stored ones"
                )
            if not self._same_content(stored, item.event):
                raise DuplicateEventId(stream_id, item.event_id, "it was stored with other content")
        last = stream[first.version - 2 + len(new)]
        return AppendResult(stream_id, first.version, last.version, first.position, last.position)

    def _same_content(self, stored: RecordedEvent[Event], event: Event) -> bool:
        if type(stored.event) is not type(event):
            return False
        if self._round_trip:
            registry = self._registry
            data = registry.encode(event)[2]
            if registry.encode(stored.event)[2] == data:
                return True
            # A set's JSON follows its iteration order, which the stored (decoded) copy need
            # not share: compare the retried event decoded the same way (sets compare as sets).
            try:
                return bool(stored.event == type(event).__pydantic_validator__.validate_json(data))
            except ValueError:
                return False
        return stored.event == event

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        position_hint: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield a stream's events in order; see :meth:`eventtape.EventStore.read_stream`.

        ``position_hint`` is accepted and ignored: every version is one list index away.
        """
        self._check_open()
        validate_stream_id(stream_id)
        validate_range("from_version", from_version, 1)
        validate_range("to_version", to_version, 0)
        validate_range("limit", limit, 0)
        validate_position_hint(position_hint)  # unused here, but checked as on JetStream
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamNotFound(stream_id)
        end = len(stream) if to_version is None else min(to_version, len(stream))
        if limit is not None:
            end = min(end, from_version - 1 + limit)
        for index in range(from_version - 1, end):
            yield stream[index]

    async def read_all(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield events in global order; see :meth:`eventtape.EventStore.read_all`."""
        self._check_open()
        validate_range("from_position", from_position, 1)
        validate_range("limit", limit, 0)
        matches = self._filter(categories, event_types)
        head = len(self._all)
        remaining = head if limit is None else limit
        index = from_position - 1
        while index < head and remaining > 0:
            record = self._all[index]
            index += 1
            if matches is None or matches(record):
                remaining -= 1
                yield record

    def subscribe(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
    ) -> _MemorySubscription:
        """Catch up from ``from_position``, then follow live appends (woken, never polled)."""
        self._check_open()
        validate_range("from_position", from_position, 1)
        subscription = _MemorySubscription(
            self, from_position, self._filter(categories, event_types)
        )
        self._subscriptions.add(subscription)
        return subscription

    # -- Dynamic Consistency Boundaries (the reference implementation) ---------------------

    def _tags_of(self, record: RecordedEvent[Event]) -> frozenset[str]:
        declared = tags_of(record.event)
        given = self._tags.get(record.position)
        if given is None and not declared:
            return frozenset((STREAM_TAG_PREFIX + record.stream_id,))
        return (given or frozenset()) | declared | {STREAM_TAG_PREFIX + record.stream_id}

    async def dcb_read(
        self,
        query: Query,
        *,
        after: int = 0,
        limit: int | None = None,
        backwards: bool = False,
    ) -> DcbReadResult:
        """Return the events matching ``query`` after ``after``; see
        :meth:`eventtape.DcbStore.dcb_read`. A scan of the log from ``after``."""
        self._check_open()
        if not isinstance(query, Query):
            raise InvalidArgument(f"dcb_read takes a Query, not {type(query).__name__}")
        validate_range("after", after, 0)
        validate_range("limit", limit, 0)
        head = len(self._all)
        found: list[SequencedEvent] = []
        for index in self._candidates(query, after, backwards):
            if limit is not None and len(found) >= limit:
                break
            record = self._all[index]
            tags = self._tags_of(record)
            if query.matches(record.event_type, tags):
                found.append(SequencedEvent(record, tags))
        position = head
        if limit is not None and len(found) >= limit and not backwards and found:
            position = found[-1].position
        return DcbReadResult(tuple(found), position)

    async def dcb_append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        condition: AppendCondition | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """Store ``events`` atomically unless the condition fails; see
        :meth:`eventtape.DcbStore.dcb_append`.

        The events go to a stream of their own, ``dcb-<first event id>``, so every reader of the
        log (projections, sagas, the command line) sees them like any other append.
        """
        self._check_open()
        items = to_tagged(events)
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidArgument("condition takes an AppendCondition")
        stream_id = dcb_stream_id(items[0].event_id)
        stored = self._by_id.get(items[0].event_id)
        if stored is not None and stored.stream_id == stream_id:
            # A retry of a stored append: the stream append below checks it is the same.
            result = await self.append(stream_id, [item.as_new_event() for item in items])
            return result.position
        if condition is not None:
            query, after = condition.fail_if_events_match, condition.after
            for index in self._candidates(query, after or 0, False):
                record = self._all[index]
                if query.matches(record.event_type, self._tags_of(record)):
                    raise AppendConditionFailed(query, after, record.position)
        # No await between the check above and the append below suspends (the append awaits
        # nothing), so no other task can store an event in between: the check holds. The
        # tags go in first, so the append indexes them.
        first = len(self._all) + 1
        for offset, item in enumerate(items):
            self._tags[first + offset] = item.tags
        try:
            result = await self.append(
                stream_id,
                [item.as_new_event() for item in items],
                expected_version=StreamState.NO_STREAM,
                metadata=metadata,
            )
        except BaseException:
            for offset in range(len(items)):
                self._tags.pop(first + offset, None)
            raise
        return result.position

    def _candidates(self, query: Query, after: int, backwards: bool) -> Sequence[int]:
        """Indexes into the log of the events after ``after`` that may match ``query``."""
        if query.is_all or any(not item.tags and not item.types for item in query.items):
            indexes: Sequence[int] = range(after, len(self._all))
        else:
            chosen: set[int] = set()
            for item in query.items:
                if item.tags:  # the rarest tag's postings: every match carries it
                    lists = [self._by_tag.get(tag, []) for tag in item.tags]
                    postings = [min(lists, key=len)]
                else:
                    postings = [self._by_type.get(name, []) for name in item.types]
                for positions in postings:
                    chosen.update(positions[bisect.bisect_right(positions, after) :])
            indexes = [position - 1 for position in sorted(chosen)]
        return indexes[::-1] if backwards else indexes

    async def chain_links(
        self, stream_id: str | None = None
    ) -> AsyncIterator[StoredLink | ChainReport]:
        """Every stored event of ``stream_id`` (or of every stream), as :func:`eventtape.verify`
        reads it: its content re-encoded from the stored record, and its stored link."""
        self._check_open()
        if stream_id is not None:
            validate_stream_id(stream_id)
            if stream_id not in self._streams:
                raise StreamNotFound(stream_id)
            streams = [stream_id]
        else:
            streams = list(self._streams)
        encode = self._registry.encode
        for name in streams:
            links = self._links.get(name, [])
            for record in self._streams[name]:
                index = record.version - 1
                link = links[index] if 0 <= index < len(links) else b""
                try:
                    _, schema, data = encode(record.event)
                except EventtapeError as error:
                    yield unreadable(name, record.version, record.position, str(error))
                    continue
                yield StoredLink(
                    name,
                    record.version,
                    record.position,
                    record.event_id,
                    record.event_type,
                    schema,
                    record.actor,
                    record.causation_id,
                    record.correlation_id,
                    record.headers,
                    data,
                    link.hex() if link else None,
                )

    async def removed_messages(self) -> tuple[tuple[int, int], ...]:
        """Nothing: an in-memory store cannot tell (see :class:`eventtape.Verification`)."""
        return ()

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's version (0 if it has no events)."""
        validate_stream_id(stream_id)
        stream = self._streams.get(stream_id)
        return len(stream) if stream is not None else 0

    async def head_position(self) -> int:
        """Return the last global position (0 if the store is empty)."""
        return len(self._all)

    async def aclose(self) -> None:
        """Close the store and every subscription on it."""
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the event store is closed")

    def _filter(
        self,
        categories: Collection[str] | None,
        event_types: Collection[str | type[Event]] | None,
    ) -> Filter | None:
        if isinstance(categories, str):
            raise InvalidArgument("categories takes a collection of names, not one string")
        wanted_categories = frozenset(categories) if categories is not None else None
        wanted_types = event_type_names(self._registry, event_types)
        if wanted_categories is None and wanted_types is None:
            return None

        def matches(record: RecordedEvent[Event]) -> bool:
            if wanted_types is not None and record.event_type not in wanted_types:
                return False
            return wanted_categories is None or category_of(record.stream_id) in wanted_categories

        return matches

    def _wake_subscribers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _append_waiter(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter


class _MemorySubscription:
    """A subscription to an :class:`InMemoryEventStore` (see :class:`eventtape.Subscription`)."""

    def __init__(
        self, store: InMemoryEventStore, from_position: int, matches: Filter | None
    ) -> None:
        self._store = store
        self._next_index = from_position - 1
        self._matches = matches
        self._closed = False
        self._waiting: asyncio.Future[None] | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent[Event]:
        log = self._store._all
        while not self._closed:
            while self._next_index < len(log):
                record = log[self._next_index]
                self._next_index += 1
                if self._matches is None or self._matches(record):
                    return record
            self._waiting = self._store._append_waiter()
            try:
                await self._waiting
            finally:
                self._waiting = None
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """End the subscription; a loop waiting on it stops."""
        self._closed = True
        self._store._subscriptions.discard(self)
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class InMemorySnapshotStore:
    """An :class:`eventtape.SnapshotStore` in process memory: the latest snapshot per stream.

    Snapshot state is stored as JSON text, so state a persistent store could not hold fails here
    too, and a loaded snapshot never shares objects with the aggregate that was saved.
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, tuple[Snapshot, str]] = {}

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing an older one of the same stream.

        Raises:
            SerializationError: If the state is not JSON-compatible.
        """
        validate_stream_id(snapshot.stream_id)
        try:
            text = json.dumps(snapshot.state, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise SerializationError(
                f"snapshot of {snapshot.stream_id!r} is not JSON-compatible: {error}"
            ) from error
        current = self._snapshots.get(snapshot.stream_id)
        if current is None or current[0].version <= snapshot.version:
            self._snapshots[snapshot.stream_id] = (snapshot, text)

    async def load(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of ``stream_id``, or ``None``."""
        validate_stream_id(stream_id)
        found = self._snapshots.get(stream_id)
        if found is None:
            return None
        snapshot, text = found
        return snapshot.replace(state=json.loads(text))

    async def delete(self, stream_id: str) -> None:
        """Forget the snapshot of ``stream_id``, if any."""
        self._snapshots.pop(stream_id, None)


_HOLDS_SETS: dict[type, bool] = {}


def _holds_sets(event_class: type[Event]) -> bool:
    """Whether the class's schema has a set anywhere (nested models and unions included)."""
    found = _HOLDS_SETS.get(event_class)
    if found is None:
        found = _HOLDS_SETS[event_class] = _schema_holds_sets(event_class)
    return found


def _schema_holds_sets(event_class: type[Event]) -> bool:
    pending: list[object] = [event_class.__pydantic_core_schema__]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") in ("set", "frozenset"):
                return True
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
    return False
