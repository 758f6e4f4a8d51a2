"""Sagas suite: the 3-step order saga (reserve stock, charge, complete) end to end.

- ``saga_throughput_memory`` / ``saga_throughput_jetstream``: completed sagas/s when a backlog
  of orders is handed to the choreographed saga, side by side with the same commands (schedule
  the payment timeout, reserve, charge, complete, cancel the timeout, with the same loads)
  issued by a direct caller, all orders at once (64 in flight, the runner's default
  concurrency), on a fresh store of the same kind in the same run. Target on JetStream: ≥ 0.9.
- ``saga_burst_p99_jetstream``: 100 orders posted back to back (one writer, each append
  awaited) while the saga runs: p99 of each order's ``OrderPlaced`` → ``OrderCompleted``
  (their recorded times). Target ≤ 250 ms.
- ``saga_latency_p50`` / ``saga_latency_p99``: from the ``OrderPlaced`` event to the
  ``OrderCompleted`` event it leads to (their recorded times), with orders placed at a steady
  200/s on the in-memory store; ``saga_latency_p50_jetstream`` / ``_p99_jetstream`` the same on
  JetStream at 50/s (below its saga throughput, so the figure is latency, not queueing).
- ``saga_throughput_otel_api_no_provider``: the in-memory saga throughput with the
  OpenTelemetry API installed but no tracer or meter provider set, against the same sagas with
  the hooks switched off (as if the API were not installed), rounds interleaved. A ratio near
  1.0 is the promise: telemetry costs nothing measurable until it is set up.
- ``saga_throughput_otel_sdk_on_memory`` / ``_jetstream``: the same with the OpenTelemetry SDK
  set up (a tracer provider making every span, exporting none; a meter provider with an
  in-memory reader), against the hooks switched off: what tracing and metrics cost, mostly
  the SDK's own work. Run last: a provider can be set only once per process.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from tests.shop import SHOP_REGISTRY, Fulfillment, Inventory, Order, Shop, Wallet

from eventtape import EventStore, InMemoryEventStore, SagaRunner
from eventtape._core.system_events import DeadlineCancelled, DeadlineScheduled
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


async def direct_rate(shop: Shop, orders: int, in_flight: int = 64) -> float:
    """The saga's commands issued by a direct caller, many orders at once: the ceiling."""
    run = uuid4().hex[:8]
    for n in range(orders):
        await place(shop, n, run)
    slots = asyncio.Semaphore(in_flight)

    async def fulfil(n: int) -> None:
        async with slots:
            order_id = f"{run}x{n}"
            timeouts = f"deadline-{order_id}"  # one stream per order: appends never race
            order = await shop.orders.load(order_id)
            due = datetime.now(UTC) + timedelta(minutes=15)
            scheduled = DeadlineScheduled(saga="d", name="t", key=order_id, due_at=due)
            await shop.store.append(timeouts, [scheduled])
            inventory = await shop.inventory.load(order.sku)
            inventory.reserve(order.id, order.quantity)
            await shop.inventory.save(inventory)
            order = await shop.orders.load(order_id)
            wallet = await shop.wallets.load(order.user_id)
            wallet.charge(order.id, order.amount)
            await shop.wallets.save(wallet)
            order = await shop.orders.load(order_id)
            order.complete()
            await shop.orders.save(order)
            await shop.store.append(timeouts, [DeadlineCancelled(saga="d", name="t", key=order_id)])

    start = time.perf_counter()
    await asyncio.gather(*(fulfil(n) for n in range(orders)))
    return orders / (time.perf_counter() - start)


async def completion_ms(store: EventStore, run: str) -> list[float]:
    """Each order's ``OrderPlaced`` → ``OrderCompleted`` time in ms (recorded times)."""
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


async def burst(store: EventStore, shop: Shop, orders: int) -> list[float]:
    """Post ``orders`` back to back while the saga runs; return each one's completion time."""
    run = uuid4().hex[:8]
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        for n in range(orders):
            await place(shop, n, run)
        await settle(runner, store)
    lags = await completion_ms(store, run)
    if len(lags) != orders:
        raise AssertionError(f"{len(lags)} of {orders} sagas completed")
    return lags


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
    return await completion_ms(store, run)


async def telemetry_idle(orders: int, rounds: int) -> None:
    """``saga_throughput_otel_api_no_provider`` (see the module docstring)."""
    from eventtape._core import telemetry

    if telemetry._trace is None:
        return  # the API is not installed: nothing to compare

    async def rate() -> float:
        store = InMemoryEventStore(SHOP_REGISTRY)
        return await saga_rate(store, await open_shop(store), orders)

    hooked = bare = 0.0
    for _ in range(rounds):
        hooked = max(hooked, await rate())
        saved = telemetry._trace, telemetry._metrics
        telemetry._trace, telemetry._metrics = None, None  # type: ignore[assignment]
        try:
            bare = max(bare, await rate())
        finally:
            telemetry._trace, telemetry._metrics = saved
    emit(
        SUITE,
        "saga_throughput_otel_api_no_provider",
        "sagas/s",
        "higher",
        hooked,
        ("same sagas, hooks off", bare),
    )


async def telemetry_on(store_kind: str, fresh: Any, orders: int, rounds: int) -> None:
    """``saga_throughput_otel_sdk_on_*`` (see the module docstring)."""
    from eventtape._core import telemetry

    if telemetry._trace is None:
        return
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return  # no SDK installed
    if telemetry._tracer_provider() is None:
        trace.set_tracer_provider(TracerProvider())
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    async def rate() -> float:
        store, shop, drop = await fresh()
        try:
            return await saga_rate(store, shop, orders)
        finally:
            await drop()

    on = off = 0.0
    for _ in range(rounds):
        on = max(on, await rate())
        saved = telemetry._trace, telemetry._metrics
        telemetry._trace, telemetry._metrics = None, None  # type: ignore[assignment]
        try:
            off = max(off, await rate())
        finally:
            telemetry._trace, telemetry._metrics = saved
    emit(
        SUITE,
        f"saga_throughput_otel_sdk_on_{store_kind}",
        "sagas/s",
        "higher",
        on,
        ("same sagas, hooks off", off),
    )


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def main(quick: bool) -> None:
    orders, seconds = (300, 2.0) if quick else (2000, 10.0)
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    ours = await saga_rate(store, shop, orders)
    direct_store = InMemoryEventStore(SHOP_REGISTRY)
    ceiling = await direct_rate(await open_shop(direct_store), orders)
    emit(
        SUITE,
        "saga_throughput_memory",
        "sagas/s",
        "higher",
        ours,
        ("direct calls, 64 at once", ceiling),
    )
    memory_store = InMemoryEventStore(SHOP_REGISTRY)
    lags = await latencies(memory_store, await open_shop(memory_store), seconds, 200)
    emit(SUITE, "saga_latency_p50", "ms", "lower", percentile(lags, 50))
    emit(SUITE, "saga_latency_p99", "ms", "lower", percentile(lags, 99))
    await telemetry_idle(orders, rounds=3)

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
        # would first work through it. Rounds interleaved, the best of each side kept (see
        # _harness): this machine's noise otherwise decides the ratio.
        ours = ceiling = 0.0
        for _ in range(3):
            js_store, js_shop = await fresh()
            ours = max(ours, await saga_rate(js_store, js_shop, orders // 2))
            await drop(js_store)
            js_store, js_shop = await fresh()
            ceiling = max(ceiling, await direct_rate(js_shop, orders // 2))
            await drop(js_store)
        emit(
            SUITE,
            "saga_throughput_jetstream",
            "sagas/s",
            "higher",
            ours,
            ("direct calls, 64 at once", ceiling),
        )
        js_store, js_shop = await fresh()
        lags = await burst(js_store, js_shop, 100)
        await drop(js_store)
        emit(SUITE, "saga_burst_p50_jetstream", "ms", "lower", percentile(lags, 50))
        emit(SUITE, "saga_burst_p99_jetstream", "ms", "lower", percentile(lags, 99))
        js_store, js_shop = await fresh()
        lags = await latencies(js_store, js_shop, seconds, 50)
        await drop(js_store)
        emit(SUITE, "saga_latency_p50_jetstream", "ms", "lower", percentile(lags, 50))
        emit(SUITE, "saga_latency_p99_jetstream", "ms", "lower", percentile(lags, 99))

        # Last: these set the process's OpenTelemetry providers for good.
        async def fresh_memory() -> tuple[EventStore, Shop, Any]:
            store = InMemoryEventStore(SHOP_REGISTRY)

            async def nothing() -> None:
                pass

            return store, await open_shop(store), nothing

        async def fresh_jetstream() -> tuple[EventStore, Shop, Any]:
            js_store, js_shop = await fresh()
            return js_store, js_shop, lambda: drop(js_store)

        await telemetry_on("memory", fresh_memory, orders, rounds=3)
        await telemetry_on("jetstream", fresh_jetstream, orders // 2, rounds=3)


def run(*, quick: bool) -> None:
    """Print every figure of the sagas suite."""
    asyncio.run(main(quick))
