"""What the JetStream store promises beyond the shared contract, on a real nats-server."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from uuid import uuid4

import nats
import pytest

from eventtape import (
    ConcurrencyError,
    EveryNEvents,
    NewEvent,
    Repository,
    SerializationError,
    StoreConfigurationError,
    StreamState,
    UnknownEventType,
)
from eventtape.stores.jetstream import (
    MAX_EVENTS_PER_APPEND,
    JetStreamConfig,
    JetStreamEventStore,
    JetStreamSnapshotStore,
)
from tests.domain import REGISTRY, Order, OrderCancelled, item
from tests.test_contract_jetstream import fresh_store


def cancelled(n: int) -> list[NewEvent[OrderCancelled]]:
    return [NewEvent(OrderCancelled(reason=f"r{i}")) for i in range(n)]


async def test_one_message_per_append(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await store.append("order-1", cancelled(3))
        await store.append("order-1", cancelled(1))
        info = await store.nc.jetstream().stream_info(store.config.stream)
        assert info.state.messages == 2
        records = [r async for r in store.read_stream("order-1")]
        assert [r.version for r in records] == [1, 2, 3, 4]
        assert records[1].position == records[0].position + 1
        assert records[3].position > records[2].position
        assert records[0].recorded_at.tzinfo is not None


async def test_too_many_events_for_one_message(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        with pytest.raises(ValueError, match="at most"):
            await store.append("order-1", cancelled(MAX_EVENTS_PER_APPEND + 1))
        assert await store.stream_version("order-1") == 0


async def test_retry_after_a_lost_ack_from_another_process(nats_url: str) -> None:
    """The first try was stored but its ack never arrived; the retry comes from a fresh store."""
    async with fresh_store(nats_url, REGISTRY) as store:
        await store.append("order-1", cancelled(2))
        batch = cancelled(2)
        original = await store.append("order-1", batch, expected_version=2)
        later = await store.append("order-1", cancelled(1))
        retry_store = await JetStreamEventStore.open(store.nc, REGISTRY, config=store.config)
        # Server-side the expectation fails before de-duplication: the store must notice the
        # stored append is this one, whether it is the last message or not.
        assert await retry_store.append("order-1", batch, expected_version=2) == original
        await retry_store.append("order-1", cancelled(1), expected_version=later.version)
        newest = cancelled(1)
        first = await store.append("order-1", newest, expected_version=later.version + 1)
        assert (
            await retry_store.append("order-1", newest, expected_version=first.version - 1) == first
        )
        assert await store.stream_version("order-1") == 7
        await retry_store.aclose()


async def test_retry_with_a_stale_tail_in_the_same_store(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await store.append("order-1", cancelled(1))
        stale = store._appender.tails["order-1"]
        batch = cancelled(1)
        original = await store.append("order-1", batch, expected_version=1)
        store._appender.tails["order-1"] = (
            stale  # as if the ack (and the cache update) had been lost
        )
        assert await store.append("order-1", batch, expected_version=1) == original
        store._appender.tails["order-1"] = stale
        assert await store.append("order-1", batch) == original  # ANY: de-duplicated
        assert await store.stream_version("order-1") == 2


async def test_racing_appenders_on_separate_connections(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as first:
        stores = [first] + [
            await JetStreamEventStore.connect(nats_url, REGISTRY, config=first.config)
            for _ in range(4)
        ]
        await first.append("order-race", cancelled(1))

        async def attempt(store: JetStreamEventStore, expected: int) -> bool:
            try:
                await store.append("order-race", cancelled(1), expected_version=expected)
            except ConcurrencyError:
                return False
            return True

        for version in range(1, 11):
            tries = [attempt(store, version) for store in stores for _ in range(5)]
            assert sum(await asyncio.gather(*tries)) == 1
        assert await first.stream_version("order-race") == 11
        for store in stores[1:]:
            await store.aclose()


async def test_any_appends_from_many_connections_all_land(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as first:
        stores = [first] + [
            await JetStreamEventStore.connect(nats_url, REGISTRY, config=first.config)
            for _ in range(3)
        ]
        await asyncio.gather(
            *(store.append("order-any", cancelled(2)) for store in stores for _ in range(10))
        )
        records = [r async for r in first.read_stream("order-any")]
        assert [r.version for r in records] == list(range(1, 81))
        assert len({r.event_id for r in records}) == 80
        for store in stores[1:]:
            await store.aclose()


async def test_stream_exists_expectation(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        with pytest.raises(ConcurrencyError):
            await store.append("order-1", cancelled(1), expected_version=StreamState.STREAM_EXISTS)
        await store.append("order-1", cancelled(1))
        other = await JetStreamEventStore.open(store.nc, REGISTRY, config=store.config)
        await other.append("order-1", cancelled(1))  # `store`'s cached tail is now stale
        result = await store.append(
            "order-1", cancelled(1), expected_version=StreamState.STREAM_EXISTS
        )
        assert result.version == 3
        await other.aclose()


async def test_foreign_and_corrupt_messages_are_reported_with_their_place(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        js = store.nc.jetstream()
        subject = store.config.subject("order", "order-junk")
        await js.publish(subject, b"not json at all")
        with pytest.raises(SerializationError, match="order-junk") as caught:
            [r async for r in store.read_stream("order-junk")]
        assert "position" in str(caught.value)
        body = {"stream": "order-x", "version": 1, "events": [{"id": str(uuid4())}]}
        await js.publish(store.config.subject("order", "order-x"), json.dumps(body).encode())
        with pytest.raises(SerializationError, match="order-x"):
            [r async for r in store.read_stream("order-x")]
        # A message claiming another stream than its subject's is refused too.
        await js.publish(store.config.subject("order", "order-y"), json.dumps(body).encode())
        with pytest.raises(SerializationError, match="does not match its subject"):
            [r async for r in store.read_stream("order-y")]


async def test_unknown_event_type_names_type_stream_and_position(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        event = {"id": str(uuid4()), "type": "OrderTeleported", "schema": 1, "data": {}}
        body = {"stream": "order-7", "version": 1, "events": [event]}
        await store.nc.jetstream().publish(
            store.config.subject("order", "order-7"), json.dumps(body).encode()
        )
        with pytest.raises(UnknownEventType) as caught:
            [r async for r in store.read_stream("order-7")]
        assert caught.value.type_name == "OrderTeleported"
        assert caught.value.stream_id == "order-7"
        assert caught.value.position is not None
        assert caught.value.position >= 1000


async def test_a_wrong_position_hint_only_costs_time(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        for _ in range(5):
            await store.append("order-1", cancelled(2))
        await store.append("order-2", cancelled(1))
        records = [r async for r in store.read_stream("order-1")]
        late = records[-1].position
        for hint in (records[4].position, late, late + 5000, 1):
            got = [
                r.version
                async for r in store.read_stream("order-1", from_version=4, position_hint=hint)
            ]
            assert got == list(range(4, 11))


async def test_provisioning_is_idempotent_and_checks_the_existing_stream(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        again = await JetStreamEventStore.connect(nats_url, REGISTRY, config=store.config)
        await again.aclose()
        name = f"X{uuid4().hex[:10]}"
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().add_stream(name=name, subjects=[f"x.{name}.>"], allow_direct=False)
            config = JetStreamConfig(stream=name, subject_prefix=f"x.{name}")
            with pytest.raises(StoreConfigurationError, match="allow_direct"):
                await JetStreamEventStore.open(nc, REGISTRY, config=config)
            await nc.jetstream().delete_stream(name)
        finally:
            await nc.close()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="stream name"):
        JetStreamConfig(stream="has.dot")
    with pytest.raises(ValueError, match="subject_prefix"):
        JetStreamConfig(subject_prefix="a.*")
    with pytest.raises(ValueError, match="replicas"):
        JetStreamConfig(replicas=2)


async def test_snapshots_on_jetstream(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        prefix = f"s.{uuid4().hex[:10]}"
        snapshots = await JetStreamSnapshotStore.open(
            store.nc, stream=f"S{uuid4().hex[:10]}", subject_prefix=prefix
        )
        orders = Repository(store, Order, snapshots=snapshots, snapshot_policy=EveryNEvents(10))
        order = Order.place("1", "u", [item(price="1.10")])
        await orders.save(order)
        for n in range(24):
            order.add_item(item(f"s{n}", price="0.01"))
            await orders.save(order)
        snapshot = await snapshots.load("order-1")
        assert snapshot is not None
        assert (snapshot.version, snapshot.aggregate_type) == (20, "Order")
        assert snapshot.position is not None
        loaded = await orders.load("1")
        assert (loaded.version, loaded.total) == (25, order.total)
        assert isinstance(loaded.paid, Decimal)
        await snapshots.delete("order-1")
        assert await snapshots.load("order-1") is None
        assert (await orders.load("1")).version == 25
        await snapshots.aclose()


async def test_a_subscription_wakes_on_each_append_not_on_its_poll(nats_url: str) -> None:
    """Live events arrive on the stored message's wake-up, long before the poll interval."""
    async with (
        fresh_store(nats_url, REGISTRY, poll_interval=60.0) as store,
        store.subscribe() as subscription,
    ):
        events = aiter(subscription)
        for n in range(3):
            waiting = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)  # the subscription has read everything and sleeps
            assert not waiting.done()
            await store.append(f"order-w{n}", [OrderCancelled(reason=str(n))])
            async with asyncio.timeout(5):  # a missed wake-up would wait 60 s
                record = await waiting
            assert record.stream_id == f"order-w{n}"
