"""What the in-memory store adds beyond the shared contract."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import field_serializer

from eventtape import Event, EventRegistry, InMemoryEventStore, SerializationError
from tests.domain import OrderCancelled


class Lossy(Event):
    """An event whose JSON form loses information: the kind of bug round-tripping catches."""

    value: float

    @field_serializer("value")
    def _truncate(self, value: float) -> Any:
        return "not a number"


async def test_round_trip_catches_what_a_real_store_could_not_keep() -> None:
    store = InMemoryEventStore(EventRegistry([Lossy]))
    with pytest.raises(SerializationError, match="Lossy"):
        await store.append("lossy-1", [Lossy(value=1.5)])
    assert await store.head_position() == 0
    lenient = InMemoryEventStore(EventRegistry([Lossy]), round_trip=False)
    await lenient.append("lossy-1", [Lossy(value=1.5)])


async def test_stored_events_are_copies(store: InMemoryEventStore) -> None:
    event = OrderCancelled(reason="r")
    await store.append("order-1", [event])
    (record,) = [r async for r in store.read_stream("order-1")]
    assert record.event == event
    assert record.event is not event


async def test_closing_the_store_ends_subscriptions_and_refuses_work(
    store: InMemoryEventStore,
) -> None:
    subscription = store.subscribe()

    async def consume() -> int:
        return len([r async for r in subscription])

    task = asyncio.create_task(consume())
    await store.append("order-1", [OrderCancelled(reason="r")])
    await asyncio.sleep(0.01)
    await store.aclose()
    assert await asyncio.wait_for(task, 5) == 1
    with pytest.raises(RuntimeError, match="closed"):
        await store.append("order-1", [OrderCancelled(reason="r")])


async def test_a_waiting_subscriber_is_woken_by_an_append(store: InMemoryEventStore) -> None:
    async with store.subscribe() as subscription:
        waiting = asyncio.ensure_future(subscription.__anext__())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await store.append("order-1", [OrderCancelled(reason="wake")])
        record = await asyncio.wait_for(waiting, 1)
        assert record.event == OrderCancelled(reason="wake")


async def test_filters_take_collections_not_strings(store: InMemoryEventStore) -> None:
    with pytest.raises(TypeError, match="categories"):
        store.subscribe(categories="order")
    with pytest.raises(TypeError, match="event_types"):
        [r async for r in store.read_all(event_types="OrderCancelled")]


async def test_an_id_stored_anywhere_in_the_batch_is_refused(store: InMemoryEventStore) -> None:
    """The in-memory store indexes every event id (JetStream checks an append's first id)."""
    from eventtape import DuplicateEventId, NewEvent

    stored = NewEvent(OrderCancelled(reason="a"))
    await store.append("order-1", [stored])
    with pytest.raises(DuplicateEventId, match="events before it are not"):
        await store.append("order-1", [NewEvent(OrderCancelled(reason="b")), stored])
    assert await store.stream_version("order-1") == 1
