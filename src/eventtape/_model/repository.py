"""The repository: loads aggregates from their events (and snapshots) and saves new events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Generic, TypeVar

from .._core.conditions import AppendResult
from .._core.context import current_metadata
from .._core.errors import AggregateNotFound, InvalidArgument, SerializationError, StreamNotFound
from .._core.events import Event, Metadata, RecordedEvent
from .._core.snapshots import EveryNEvents, Snapshot, SnapshotPolicy, SnapshotStore
from .._core.store import EventStore
from .._core.stream_ids import validate_stream_id
from .aggregate import Aggregate

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)
logger = logging.getLogger("eventtape")

DEFAULT_SNAPSHOT_POLICY = EveryNEvents(100)


class Repository(Generic[A]):
    """Loads and saves aggregates of one type.

    ``Repository(store, Order)`` is a ``Repository[Order]``: :meth:`load` returns an ``Order``.
    The aggregate with id ``12345`` lives in stream ``order-12345`` (its class's
    ``stream_category``, a dash, the id).

    Args:
        store: The event store.
        aggregate_type: The aggregate class, constructible as ``aggregate_type(id)``.
        snapshots: Where to keep snapshots; without one, every load replays the whole stream.
        snapshot_policy: When to take a snapshot after a save (default: every 100 events when
            a snapshot store is given).
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        *,
        snapshots: SnapshotStore | None = None,
        snapshot_policy: SnapshotPolicy | None = None,
    ) -> None:
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            raise InvalidArgument(f"{aggregate_type!r} is not an eventtape.Aggregate subclass")
        if snapshot_policy is not None and snapshots is None:
            raise ValueError("a snapshot_policy needs a snapshots store")
        if (
            snapshots is not None
            and getattr(store, "holds_personal_data", False)
            and not getattr(snapshots, "seals_personal_data", False)
        ):
            # Aggregate state copies personal fields: stored as is, a snapshot would keep
            # them readable after the subject is forgotten.
            raise InvalidArgument(
                "a private event store needs a private snapshot store: pass"
                " eventtape.privacy.PrivateSnapshotStore(snapshots, store)"
            )
        self._store = store
        self._type = aggregate_type
        self._snapshots = snapshots
        self._policy = snapshot_policy or (DEFAULT_SNAPSHOT_POLICY if snapshots else None)
        self._prefix = f"{aggregate_type.stream_category}-"

    @property
    def store(self) -> EventStore:
        """The event store this repository reads and writes."""
        return self._store

    def stream_id(self, aggregate_id: str) -> str:
        """Return the stream id of the aggregate with ``aggregate_id``.

        Raises:
            InvalidStreamId: If the resulting stream id is invalid.
        """
        if not isinstance(aggregate_id, str):
            raise InvalidArgument(f"aggregate ids are str, not {type(aggregate_id).__name__}")
        return validate_stream_id(self._prefix + aggregate_id)

    async def load(self, aggregate_id: str, *, version: int | None = None) -> A:
        """Rebuild an aggregate from its snapshot (if any) and the events after it.

        Args:
            aggregate_id: The aggregate's id.
            version: Load it as it was at this version (time travel) instead of the latest.

        Raises:
            AggregateNotFound: If it has no events, or never had ``version``.
        """
        if version is not None and (
            not isinstance(version, int) or isinstance(version, bool) or version < 1
        ):
            raise InvalidArgument(f"version must be an int >= 1, not {version!r}")
        stream_id = self.stream_id(aggregate_id)
        aggregate = await self._from_snapshot(aggregate_id, stream_id, version)
        if aggregate is None:
            aggregate = self._type(aggregate_id)
        apply = aggregate._apply
        position = aggregate._position
        try:
            async for record in self._store.read_stream(
                stream_id,
                from_version=aggregate.version + 1,
                to_version=version,
                position_hint=position,
            ):
                apply(record.event)
                position = record.position
        except StreamNotFound:
            raise AggregateNotFound(stream_id) from None
        aggregate._position = position
        if aggregate.version == 0:
            raise AggregateNotFound(stream_id)
        if version is not None and aggregate.version < version:
            raise AggregateNotFound(stream_id, version, aggregate.version)
        return aggregate

    async def _from_snapshot(
        self, aggregate_id: str, stream_id: str, version: int | None
    ) -> A | None:
        if self._snapshots is None:
            return None
        snapshot = await self._snapshots.load(stream_id)
        if snapshot is None or (version is not None and snapshot.version > version):
            return None
        aggregate_type = self._type
        if (
            snapshot.aggregate_type != aggregate_type.__qualname__
            or snapshot.snapshot_version != aggregate_type.__snapshot_version__
        ):
            # Taken by another class or an older shape of this one: never restore it wrong.
            return None
        try:
            aggregate = aggregate_type.from_snapshot(aggregate_id, snapshot.version, snapshot.state)
        except SerializationError:
            logger.warning("ignoring snapshot of %s that no longer fits", stream_id, exc_info=True)
            return None
        aggregate._position = snapshot.position
        return aggregate

    async def save(
        self,
        aggregate: A,
        *,
        actor: str | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult | None:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        Who and why come from the arguments, then the current :func:`eventtape.metadata_scope`.
        Without a correlation id, the first event's id starts a new business transaction.
        Saving again after a failure (a timeout, say) re-sends the same event ids, so an append
        that did reach the store is not duplicated.

        Returns:
            Where the events went, or ``None`` if there was nothing to save.

        Raises:
            ConcurrencyError: If someone else saved the aggregate since it was loaded; load it
                again and retry the command.
        """
        if not isinstance(aggregate, self._type):
            raise InvalidArgument(
                f"this repository saves {self._type.__name__} aggregates, not {aggregate!r}"
            )
        pending = aggregate.pending_events
        if not pending:
            return None
        metadata = current_metadata()
        if any(value is not None for value in (actor, causation_id, correlation_id, headers)):
            given = dict(headers) if isinstance(headers, Mapping) else headers or {}
            metadata = metadata.merged(Metadata(actor, causation_id, correlation_id, given))
        if metadata.correlation_id is None:
            metadata = Metadata(
                metadata.actor, metadata.causation_id, str(pending[0].event_id), metadata.headers
            )
        previous = aggregate.version - len(pending)
        result = await self._store.append(
            self.stream_id(aggregate.id), pending, expected_version=previous, metadata=metadata
        )
        aggregate.mark_saved()
        aggregate._position = result.position
        if self._policy is not None and self._policy.should_snapshot(previous, aggregate.version):
            try:
                await self.take_snapshot(aggregate)
            except Exception:
                # The events are stored; a missing snapshot only makes the next load slower.
                logger.warning("snapshot of %s failed", self.stream_id(aggregate.id), exc_info=True)
        return result

    async def take_snapshot(self, aggregate: A) -> Snapshot:
        """Snapshot a saved aggregate now.

        Raises:
            ValueError: If there is no snapshot store, or the aggregate has unsaved events.
            SerializationError: If its state cannot be snapshotted.
        """
        if self._snapshots is None:
            raise ValueError("this repository has no snapshot store")
        if aggregate.pending_events:
            raise ValueError("save the aggregate before snapshotting it")
        snapshot = Snapshot(
            stream_id=self.stream_id(aggregate.id),
            version=aggregate.version,
            aggregate_type=type(aggregate).__qualname__,
            snapshot_version=type(aggregate).__snapshot_version__,
            state=aggregate.to_snapshot(),
            taken_at=datetime.now(UTC),
            position=aggregate._position,
        )
        await self._snapshots.save(snapshot)
        return snapshot

    async def history(self, aggregate_id: str) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield every event of the aggregate with its metadata: who did what, when and why.

        Raises:
            AggregateNotFound: If it has no events.
        """
        stream_id = self.stream_id(aggregate_id)
        try:
            async for record in self._store.read_stream(stream_id):
                yield record
        except StreamNotFound:
            raise AggregateNotFound(stream_id) from None
