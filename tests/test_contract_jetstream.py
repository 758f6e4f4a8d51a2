"""The event store contract suite against the JetStream store on a real nats-server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from eventtape import EventRegistry
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from eventtape.testing import EventStoreContract


@contextlib.asynccontextmanager
async def fresh_store(
    url: str, registry: EventRegistry, **settings: object
) -> AsyncIterator[JetStreamEventStore]:
    """A store on its own JetStream stream, deleted afterwards."""
    name = f"T{uuid4().hex[:12]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"t.{name}", **settings)  # type: ignore[arg-type]
    store = await JetStreamEventStore.connect(url, registry, config=config)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            await store.nc.jetstream().delete_stream(name)
        await store.aclose()


class TestJetStreamStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_url: str) -> None:
        self.url = nats_url

    def make_store(
        self, registry: EventRegistry
    ) -> contextlib.AbstractAsyncContextManager[JetStreamEventStore]:
        return fresh_store(self.url, registry, poll_interval=0.2)
