"""Repository: load, save, time travel, who/why metadata, snapshots."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest

from eventtape import (
    AggregateNotFound,
    ConcurrencyError,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidStreamId,
    Repository,
    SerializationError,
    Snapshot,
    current_metadata,
    metadata_scope,
)
from tests.domain import Order, OrderCancelled, item


@pytest.fixture
def orders(store: InMemoryEventStore) -> Repository[Order]:
    return Repository(store, Order)


async def test_save_and_load(orders: Repository[Order]) -> None:
    order = Order.place("12345", "789", [item(price="2.50", quantity=2)])
    result = await orders.save(order)
    assert result is not None
    assert (result.stream_id, result.version) == ("order-12345", 1)
    assert order.pending_events == ()
    loaded = await orders.load("12345")
    assert (loaded.version, loaded.status, loaded.total) == (1, "placed", Decimal("5.00"))
    assert await orders.save(loaded) is None


async def test_missing_aggregate(orders: Repository[Order]) -> None:
    with pytest.raises(AggregateNotFound, match="order-nope"):
        await orders.load("nope")
    with pytest.raises(AggregateNotFound):
        [r async for r in orders.history("nope")]
    with pytest.raises(InvalidStreamId):
        await orders.load("a.b")
    with pytest.raises(TypeError):
        await orders.load(12345)  # type: ignore[arg-type]


async def test_concurrent_modification_is_detected(orders: Repository[Order]) -> None:
    await orders.save(Order.place("1", "u", [item()]))
    first, second = await orders.load("1"), await orders.load("1")
    first.cancel("one")
    second.cancel("two")
    await orders.save(first)
    with pytest.raises(ConcurrencyError) as caught:
        await orders.save(second)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    history = [r.event async for r in orders.history("1")]
    assert history[-1] == OrderCancelled(reason="one")


async def test_retried_save_does_not_duplicate(
    orders: Repository[Order], store: InMemoryEventStore
) -> None:
    order = Order.place("1", "u", [item()])
    pending = order.pending_events
    await orders.save(order)
    # The ack was "lost": the same events are sent again by a retry.
    again = await store.append("order-1", pending, expected_version=0)
    assert again.version == 1
    assert await store.stream_version("order-1") == 1


async def test_time_travel(orders: Repository[Order]) -> None:
    order = Order.place("1", "u", [item(price="1")])
    order.add_item(item("b", price="2"))
    order.cancel("changed my mind")
    await orders.save(order)
    v1, v2, v3 = [await orders.load("1", version=v) for v in (1, 2, 3)]
    assert [(o.version, o.status, o.total) for o in (v1, v2, v3)] == [
        (1, "placed", Decimal("1")),
        (2, "placed", Decimal("3")),
        (3, "cancelled", Decimal("3")),
    ]
    with pytest.raises(AggregateNotFound, match="has no version 4"):
        await orders.load("1", version=4)
    with pytest.raises(ValueError, match="version"):
        await orders.load("1", version=0)


async def test_who_and_why_land_on_every_event(orders: Repository[Order]) -> None:
    with metadata_scope(actor="user:789", correlation_id="req-1", headers={"tenant": "acme"}):
        order = Order.place("12345", "789", [item()])
        await orders.save(order)
        with metadata_scope(actor="admin:support-001"):
            order.cancel("fraud suspected")
            await orders.save(order, causation_id="ticket-42", headers={"via": "console"})
    assert current_metadata().actor is None
    history = [r async for r in orders.history("12345")]
    assert [(r.version, r.event_type, r.actor) for r in history] == [
        (1, "OrderPlaced", "user:789"),
        (2, "OrderCancelled", "admin:support-001"),
    ]
    assert [r.correlation_id for r in history] == ["req-1", "req-1"]
    assert [r.causation_id for r in history] == [None, "ticket-42"]
    assert dict(history[1].headers) == {"tenant": "acme", "via": "console"}


async def test_arguments_override_the_scope_and_correlation_defaults(
    orders: Repository[Order],
) -> None:
    order = Order.place("1", "u", [item()])
    with metadata_scope(actor="user:1"):
        await orders.save(order, actor="system:import")
    (record,) = [r async for r in orders.history("1")]
    assert record.actor == "system:import"
    # A save outside any transaction starts one: its first event's id.
    assert record.correlation_id == str(record.event_id)


async def test_scopes_do_not_leak_between_tasks(orders: Repository[Order]) -> None:
    async def place(user: str) -> None:
        with metadata_scope(actor=f"user:{user}"):
            await asyncio.sleep(0)
            await orders.save(Order.place(user, user, [item()]))

    await asyncio.gather(*(place(str(n)) for n in range(20)))
    for n in range(20):
        (record,) = [r async for r in orders.history(str(n))]
        assert record.actor == f"user:{n}"


async def test_repository_rejects_non_aggregates(store: InMemoryEventStore) -> None:
    with pytest.raises(TypeError):
        Repository(store, int)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="snapshots store"):
        Repository(store, Order, snapshot_policy=EveryNEvents(3))


# -- snapshots -----------------------------------------------------------------------------


class CountingStore(InMemoryEventStore):
    """Counts the events read from streams, to see what a snapshot saves."""

    read_count = 0

    async def read_stream(self, stream_id: str, **kwargs: Any) -> Any:  # type: ignore[override]
        async for record in super().read_stream(stream_id, **kwargs):
            self.read_count += 1
            yield record


async def grow(orders: Repository[Order], order_id: str, events: int) -> Order:
    order = Order.place(order_id, "u", [item(price="1.10")])
    await orders.save(order)
    for n in range(events - 1):
        order.add_item(item(f"s{n}", price="0.01"))
        await orders.save(order)
    return order


async def test_snapshots_every_n_events(registry: Any) -> None:
    store, snapshots = CountingStore(registry), InMemorySnapshotStore()
    orders = Repository(store, Order, snapshots=snapshots, snapshot_policy=EveryNEvents(10))
    saved = await grow(orders, "1", 25)
    snapshot = await snapshots.load("order-1")
    assert snapshot is not None
    assert snapshot.version == 20
    records = [r async for r in store.read_stream("order-1")]
    assert snapshot.position == records[19].position  # where the rest of the stream starts
    store.read_count = 0
    loaded = await orders.load("1")
    assert store.read_count == 5
    assert (loaded.version, loaded.items, loaded.total) == (saved.version, saved.items, saved.total)
    assert isinstance(loaded.paid, Decimal)
    # Time travel to before the snapshot replays from the start instead.
    old = await orders.load("1", version=15)
    assert (old.version, len(old.items)) == (15, 15)


async def test_snapshot_of_an_older_shape_is_ignored(registry: Any) -> None:
    store, snapshots = InMemoryEventStore(registry), InMemorySnapshotStore()
    orders = Repository(store, Order, snapshots=snapshots, snapshot_policy=EveryNEvents(5))
    await grow(orders, "1", 5)
    snapshot = await snapshots.load("order-1")
    assert snapshot is not None
    # A snapshot claiming the current shape but holding rubbish would be loaded wrong...
    await snapshots.save(snapshot.replace(state={**snapshot.state, "status": "cancelled"}))
    assert (await orders.load("1")).status == "cancelled"
    # ...so its snapshot version is what tells: an older shape is ignored and events replayed.
    await snapshots.save(snapshot.replace(snapshot_version=0, state={"status": "cancelled"}))
    assert (await orders.load("1")).status == "placed"
    await snapshots.save(snapshot.replace(aggregate_type="Cart", state={"status": "x"}))
    assert (await orders.load("1")).status == "placed"


async def test_snapshot_that_no_longer_fits_is_ignored(
    registry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, snapshots = InMemoryEventStore(registry), InMemorySnapshotStore()
    orders = Repository(store, Order, snapshots=snapshots)
    order = await grow(orders, "1", 3)
    snapshot = await orders.take_snapshot(order)
    await snapshots.save(snapshot.replace(state={**snapshot.state, "paid": "not money"}))
    with caplog.at_level(logging.WARNING, logger="eventtape"):
        loaded = await orders.load("1")
    assert loaded.total == order.total
    assert "no longer fits" in caplog.text


async def test_take_snapshot_needs_a_saved_aggregate(registry: Any) -> None:
    orders = Repository(InMemoryEventStore(registry), Order, snapshots=InMemorySnapshotStore())
    order = Order.place("1", "u", [item()])
    with pytest.raises(ValueError, match="save the aggregate"):
        await orders.take_snapshot(order)
    with pytest.raises(ValueError, match="no snapshot store"):
        await Repository(InMemoryEventStore(registry), Order).take_snapshot(order)


async def test_unannotated_state_cannot_be_snapshotted() -> None:
    from eventtape import Aggregate

    class Loose(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.secret = {1, 2}

    with pytest.raises(SerializationError, match="annotate secret"):
        Loose("1").to_snapshot()


async def test_failed_snapshot_does_not_fail_the_save(
    registry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(InMemorySnapshotStore):
        async def save(self, snapshot: Snapshot) -> None:
            raise OSError("disk full")

    orders = Repository(
        InMemoryEventStore(registry), Order, snapshots=Broken(), snapshot_policy=EveryNEvents(1)
    )
    with caplog.at_level(logging.WARNING, logger="eventtape"):
        await orders.save(Order.place("1", "u", [item()]))
    assert (await orders.load("1")).version == 1
    assert "snapshot of order-1 failed" in caplog.text


async def test_memory_snapshot_store_refuses_non_json_state() -> None:
    from datetime import UTC, datetime

    with pytest.raises(SerializationError, match="JSON"):
        await InMemorySnapshotStore().save(
            Snapshot("order-1", 1, "Order", 1, {"x": {1, 2}}, datetime.now(UTC))
        )
