"""Sagas suite: the 3-step order saga (reserve stock, charge, complete) end to end.

- ``saga_throughput_memory`` / ``saga_throughput_jetstream``: completed sagas/s when a backlog
  of orders is handed to the choreographed saga, side by side with the same three steps done
  by direct calls in one process on the same store (the ceiling: no events to react to, no
  checkpoints, no idempotency checks).
- ``saga_latency_p50`` / ``saga_latency_p99``: from the ``OrderPlaced`` event to the
  ``OrderCompleted`` event it leads to (their recorded times), with orders placed at a steady
  200/s on the in-memory store; ``saga_latency_p50_jetstream`` / ``_p99_jetstream`` the same on
  JetStream at 50/s (below its saga throughput, so the figure is latency, not queueing).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from decimal import Decimal
from typing import Any
from uuid import uuid4

from tests.shop import SHOP_REGISTRY, Fulfillment, Inventory, Order, Shop, Wallet

from eventtape import EventStore, InMemoryEventStore, SagaRunner
from eventtape.sinks.sqlite import SqliteSink

from ._harness import emit
from .jetstream import nats_server

SUITE = "sagas"
KEYS = 100
PRICE = Decimal("2.50")


async def open_shop(store: EventStore) -> Shop:
    shop = Shop(store)
    for n in range(KEYS):
        await shop.inventory.save(Inventory.stock(f"sku{n}", 10**9))
        await shop.wallets.save(Wallet.open(f"u{n}", Decimal(10**12)))
    return shop


async def place(shop: Shop, n: int, run: str) -> None:
    order = Order.place(f"{run}x{n}", f"u{n % KEYS}", f"sku{n % KEYS}", 1, PRICE)
    await shop.orders.save(order)


async def completed(store: EventStore, run: str) -> int:
    return len(
        [
            r
            async for r in store.read_all(categories=["order"], event_types=["OrderCompleted"])
            if r.stream_id.startswith(f"order-{run}")
        ]
    )


async def settle(runner: SagaRunner, store: EventStore) -> None:
    """Wait until the saga has handled everything, including what it caused."""
    while True:
        head = await store.head_position()
        await runner.wait_until(head, timeout=600)
        if await store.head_position() == head:
            return


async def saga_rate(store: EventStore, shop: Shop, orders: int) -> float:
    run = uuid4().hex[:8]
    for n in range(orders):
        await place(shop, n, run)
    start = time.perf_counter()
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        await settle(runner, store)
        elapsed = time.perf_counter() - start
    done = await completed(store, run)
    if done != orders:
        raise AssertionError(f"{done} of {orders} sagas completed")
    return orders / elapsed


async def direct_rate(shop: Shop, orders: int) -> float:
    """The same three steps as plain calls: the ceiling a saga can approach."""
    run = uuid4().hex[:8]
    for n in range(orders):
        await place(shop, n, run)
    start = time.perf_counter()
    for n in range(orders):
        order = await shop.orders.load(f"{run}x{n}")
        inventory = await shop.inventory.load(order.sku)
        inventory.reserve(order.id, order.quantity)
        await shop.inventory.save(inventory)
        wallet = await shop.wallets.load(order.user_id)
        wallet.charge(order.id, order.amount)
        await shop.wallets.save(wallet)
        order.complete()
        await shop.orders.save(order)
    return orders / (time.perf_counter() - start)


async def latencies(store: EventStore, shop: Shop, seconds: float, rate: int) -> list[float]:
    """Place ``rate`` orders/s for ``seconds``; return each saga's end-to-end time in ms."""
    run = uuid4().hex[:8]
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        count = int(seconds * rate)
        start = time.perf_counter()
        for n in range(count):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await place(shop, n, run)
        await settle(runner, store)
    if await completed(store, run) != count:
        raise AssertionError("not every saga completed")
    placed: dict[str, Any] = {}
    lags = []
    async for record in store.read_all(categories=["order"]):
        if not record.stream_id.startswith(f"order-{run}"):
            continue
        if record.event_type == "OrderPlaced":
            placed[record.stream_id] = record.recorded_at
        elif record.event_type == "OrderCompleted":
            lags.append((record.recorded_at - placed[record.stream_id]).total_seconds() * 1000)
    return lags


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def main(quick: bool) -> None:
    orders, seconds = (300, 2.0) if quick else (2000, 10.0)
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    ours = await saga_rate(store, shop, orders)
    direct_store = InMemoryEventStore(SHOP_REGISTRY)
    ceiling = await direct_rate(await open_shop(direct_store), orders)
    emit(SUITE, "saga_throughput_memory", "sagas/s", "higher", ours, ("direct calls", ceiling))
    memory_store = InMemoryEventStore(SHOP_REGISTRY)
    lags = await latencies(memory_store, await open_shop(memory_store), seconds, 200)
    emit(SUITE, "saga_latency_p50", "ms", "lower", percentile(lags, 50))
    emit(SUITE, "saga_latency_p99", "ms", "lower", percentile(lags, 99))

    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    with nats_server() as url:

        async def fresh() -> tuple[JetStreamEventStore, Shop]:
            name = f"Y{uuid4().hex[:10]}"
            config = JetStreamConfig(stream=name, subject_prefix=f"saga.{name}")
            js_store = await JetStreamEventStore.connect(url, SHOP_REGISTRY, config=config)
            return js_store, await open_shop(js_store)

        async def drop(js_store: JetStreamEventStore) -> None:
            await js_store.nc.jetstream().delete_stream(js_store.config.stream)
            await js_store.aclose()

        # Each measurement on a stream of its own: a saga started on a store with history
        # would first work through it.
        js_store, js_shop = await fresh()
        ours = await saga_rate(js_store, js_shop, orders // 2)
        await drop(js_store)
        js_store, js_shop = await fresh()
        ceiling = await direct_rate(js_shop, orders // 2)
        await drop(js_store)
        emit(
            SUITE, "saga_throughput_jetstream", "sagas/s", "higher", ours, ("direct calls", ceiling)
        )
        js_store, js_shop = await fresh()
        lags = await latencies(js_store, js_shop, seconds, 50)
        await drop(js_store)
        emit(SUITE, "saga_latency_p50_jetstream", "ms", "lower", percentile(lags, 50))
        emit(SUITE, "saga_latency_p99_jetstream", "ms", "lower", percentile(lags, 99))


def run(*, quick: bool) -> None:
    """Print every figure of the sagas suite."""
    asyncio.run(main(quick))
