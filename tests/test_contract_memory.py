"""The event store contract suite against the in-memory store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from eventtape import EventRegistry, InMemoryEventStore
from eventtape.testing import EventStoreContract


class TestInMemoryStore(EventStoreContract):
    @contextlib.asynccontextmanager
    async def make_store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
        async with InMemoryEventStore(registry) as store:
            yield store


class TestInMemoryStoreWithoutRoundTrip(EventStoreContract):
    @contextlib.asynccontextmanager
    async def make_store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
        async with InMemoryEventStore(registry, round_trip=False) as store:
            yield store
