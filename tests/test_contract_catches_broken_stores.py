"""The contract suite is only worth something if it fails on a broken store: show that it does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from eventtape import (
    AppendResult,
    Event,
    EventRegistry,
    ExpectedVersion,
    InMemoryEventStore,
    Metadata,
    NewEvent,
    StreamState,
)
from eventtape.testing import EventStoreContract


class IgnoresExpectedVersion(InMemoryEventStore):
    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        return await super().append(stream_id, events, metadata=metadata)


class ForgetsEventIds(InMemoryEventStore):
    """Re-ids every event, so a retry duplicates instead of being absorbed."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        fresh = [NewEvent(e.event if isinstance(e, NewEvent) else e) for e in events]
        return await super().append(
            stream_id, fresh, expected_version=expected_version, metadata=metadata
        )


class HalfAppends(InMemoryEventStore):
    """Stores the first event of a batch before checking the rest (not atomic)."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        if len(events) > 1:
            await super().append(
                stream_id, events[:1], expected_version=expected_version, metadata=metadata
            )
            return await super().append(stream_id, events[1:], metadata=metadata)
        return await super().append(
            stream_id, events, expected_version=expected_version, metadata=metadata
        )


class DropsLiveEvents(InMemoryEventStore):
    """Its subscriptions skip every event at a position divisible by seven (a gap)."""

    def subscribe(self, **kwargs: Any) -> Any:
        return _Skipping(super().subscribe(**kwargs))


class _Skipping:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __aiter__(self) -> _Skipping:
        return self

    async def __anext__(self) -> Any:
        record = await self._inner.__anext__()
        if record.position % 7 == 0:
            record = await self._inner.__anext__()
        return record

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Skipping:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def contract_for(store_type: type[InMemoryEventStore]) -> EventStoreContract:
    class Contract(EventStoreContract):
        @contextlib.asynccontextmanager
        async def make_store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
            yield store_type(registry)

    return Contract()


# A contract test "fails" by raising: an assertion, pytest's DID NOT RAISE, or an error the real
# store never raises (test_contract_passes_on_the_real_store shows the same tests pass there).
FAILED = (Exception, pytest.fail.Exception, BaseExceptionGroup)


@pytest.mark.parametrize(
    ("store_type", "test_name"),
    [
        (IgnoresExpectedVersion, "test_expected_version_exact"),
        (IgnoresExpectedVersion, "test_expected_no_stream"),
        (IgnoresExpectedVersion, "test_racing_appenders_one_winner_per_version"),
        (IgnoresExpectedVersion, "test_store_behaves_like_the_model"),
        (ForgetsEventIds, "test_retry_with_same_ids_stores_nothing_new"),
        (ForgetsEventIds, "test_append_then_read_stream"),
        (ForgetsEventIds, "test_store_behaves_like_the_model"),
        (HalfAppends, "test_failed_append_changes_nothing"),
        (DropsLiveEvents, "test_subscription_catches_up_then_follows_live_appends"),
    ],
)
def test_contract_fails_on_broken_store(
    store_type: type[InMemoryEventStore], test_name: str
) -> None:
    contract = contract_for(store_type)
    with pytest.raises(FAILED):
        getattr(contract, test_name)()


@pytest.mark.parametrize(
    "test_name", [name for name in dir(EventStoreContract) if name.startswith("test_")]
)
def test_contract_passes_on_the_real_store(test_name: str) -> None:
    getattr(contract_for(InMemoryEventStore), test_name)()
