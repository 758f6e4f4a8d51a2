"""A runner whose checkpoint lies beyond the store's head stops with HistoryLost instead of
carrying on over a shorter history (a stream lost and created again empty)."""

from __future__ import annotations

import pytest

from eventtape import HistoryLost, InMemoryEventStore, ProjectionRunner, SagaRunner
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, Order, item
from tests.projections import OrderSummary
from tests.shop import SHOP_REGISTRY, Fulfillment
from tests.test_sagas import open_shop, place, settle


async def test_a_projection_refuses_a_store_with_less_history(tmp_path: object) -> None:
    from eventtape import Repository

    sink = SqliteSink(":memory:")
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(3):
        await orders.save(Order.place(str(n), "u", [item()]))
    async with ProjectionRunner(store, sink, [OrderSummary()]) as runner:
        await runner.wait_until(await store.head_position())
    # The store is lost and comes back empty, with one new event: position 1 again.
    lost = InMemoryEventStore(REGISTRY)
    await Repository(lost, Order).save(Order.place("new", "u", [item()]))
    with pytest.raises(HistoryLost) as caught:
        async with ProjectionRunner(lost, sink, [OrderSummary()]):
            pass
    assert (caught.value.name, caught.value.checkpoint, caught.value.head) == (
        "order_summary",
        3,
        1,
    )


async def test_a_saga_refuses_a_store_with_less_history() -> None:
    sink = SqliteSink(":memory:")
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    async with SagaRunner(store, sink, [Fulfillment(shop)]) as runner:
        await place(shop, "1", "rich")
        await settle(runner, store)
    empty = InMemoryEventStore(SHOP_REGISTRY)
    with pytest.raises(HistoryLost, match="fulfillment"):
        async with SagaRunner(empty, sink, [Fulfillment(await open_shop(empty))]):
            pass
