"""Projections into SQLite and PostgreSQL from the in-memory store: batches, checkpoints,
failures, rebuilds, partitions. Every test runs against both sinks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from eventtape import (
    InMemoryEventStore,
    ProjectionFailed,
    ProjectionRunner,
    ProjectionTimeout,
    Repository,
    RunnerOptions,
)
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, Order, OrderCancelled, item
from tests.projections import OrderSummary, Poisoned


class Backend:
    """Makes sinks of one kind, all on the same database, and projections in its dialect."""

    def __init__(self, kind: str, tmp_path: Path, postgres_url: str | None) -> None:
        self.kind = kind
        self.mark = "?" if kind == "sqlite" else "$"
        self._path = tmp_path / "read.db"
        self._url = postgres_url
        self._schema = f"t{uuid4().hex[:12]}"
        self.sinks: list[Any] = []

    def sink(self) -> Any:
        if self.kind == "sqlite":
            sink: Any = SqliteSink(self._path)
        else:
            from eventtape.sinks.postgres import PostgresSink

            assert self._url is not None
            sink = PostgresSink(self._url, schema=self._schema)
        self.sinks.append(sink)
        return sink

    def summary(self) -> OrderSummary:
        return OrderSummary(self.mark)

    def poisoned(self) -> Poisoned:
        return Poisoned(self.mark)

    async def tables(self, sink: Any) -> set[str]:
        if self.kind == "sqlite":
            rows = await sink.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = await sink.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
                sink.schema,
            )
        return {row[0] for row in rows}


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = Backend(request.param, tmp_path, url)
    yield made
    for sink in made.sinks:
        await sink.aclose()


async def place(orders: Repository[Order], order_id: str, extra_items: int = 0) -> int:
    order = Order.place(order_id, f"user-{order_id}", [item()])
    for n in range(extra_items):
        order.add_item(item(f"s{n}"))
    result = await orders.save(order)
    assert result is not None
    return result.position


async def rows(sink: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await sink.fetch("SELECT * FROM orders ORDER BY order_id")]


async def test_catch_up_then_live_with_read_your_writes(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(5):
        await place(orders, str(n), extra_items=n)
    sink = backend.sink()
    async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
        await runner.wait_until(await store.head_position(), timeout=5)
        assert [r[0] for r in await rows(sink)] == ["0", "1", "2", "3", "4"]
        position = await place(orders, "live", extra_items=2)
        await runner.wait_until(position, timeout=5)  # returns as soon as it is applied
        (live,) = [r for r in await rows(sink) if r[0] == "live"]
        assert live == ("live", "user-live", "placed", 3, 3)
        (status,) = await runner.status()
        assert (status.name, status.state, status.checkpoint) == (
            "order_summary",
            "running",
            position,
        )
        assert (status.lag_events, status.lag_seconds) == (0, 0.0)
        assert await sink.fetch("SELECT * FROM applied__g1 WHERE times <> 1") == []


async def test_restart_resumes_from_the_checkpoint(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    await place(orders, "a", 3)
    sink = backend.sink()
    async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
        await runner.wait_until(await store.head_position())
    await place(orders, "b", 1)
    order = await orders.load("a")
    order.cancel("no")
    await orders.save(order)
    sink = backend.sink()
    async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
        await runner.wait_until(await store.head_position())
        assert [(r[0], r[2], r[3]) for r in await rows(sink)] == [
            ("a", "cancelled", 4),
            ("b", "placed", 2),
        ]
        applied = await sink.fetch("SELECT count(*), max(times) FROM applied__g1")
        assert tuple(applied[0]) == (await store.head_position(), 1)


async def test_wait_until_times_out_with_a_clear_error(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    async with ProjectionRunner(store, backend.sink(), [backend.summary()]) as runner:
        with pytest.raises(ProjectionTimeout, match=r"order_summary.*position 7") as caught:
            await runner.wait_until(7, timeout=0.1)
        assert caught.value.checkpoint == 0


async def test_a_poisoned_event_stops_its_projection_only(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryEventStore(REGISTRY)
    for reason in ("ok-1", "poison", "ok-2"):
        await store.append("order-1", [OrderCancelled(reason=reason)])
    sink = backend.sink()
    options = RunnerOptions(max_attempts=3, backoff=0.001)
    with caplog.at_level(logging.WARNING, logger="eventtape.projections"):
        async with ProjectionRunner(
            store, sink, [backend.poisoned(), backend.summary()], options
        ) as runner:
            with pytest.raises(ProjectionFailed) as caught:
                await runner.wait_until(3, projections=["poisoned"], timeout=5)
            failure = caught.value
            assert (failure.projection, failure.event_type, failure.position) == (
                "poisoned",
                "OrderCancelled",
                2,
            )
            assert "cannot digest this" in str(failure)
            await runner.wait_until(3, projections=["order_summary"], timeout=5)
            statuses = {s.name: s for s in await runner.status()}
            assert statuses["poisoned"].state == "failed"
            assert statuses["poisoned"].checkpoint == 1
            assert statuses["order_summary"].state == "running"
    # The event before the poison was applied once; the poison's writes were rolled back.
    assert [r[0] for r in await sink.fetch("SELECT reason FROM reasons ORDER BY reason")] == [
        "ok-1"
    ]
    assert caplog.text.count("failed on OrderCancelled at position 2") == 3


async def test_parking_keeps_the_projection_going(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    for reason in ("ok-1", "poison", "ok-2"):
        await store.append("order-1", [OrderCancelled(reason=reason)])
    sink = backend.sink()
    options = RunnerOptions(max_attempts=2, backoff=0.001, park_failures=True)
    async with ProjectionRunner(store, sink, [backend.poisoned()], options) as runner:
        await runner.wait_until(3, timeout=5)
        (parked,) = await sink.parked("poisoned")
        assert (parked.position, parked.event_type, parked.stream_id) == (
            2,
            "OrderCancelled",
            "order-1",
        )
        assert "cannot digest this" in parked.error
    assert [r[0] for r in await sink.fetch("SELECT reason FROM reasons ORDER BY reason")] == [
        "ok-1",
        "ok-2",
    ]


async def test_rebuild_in_place_and_blue_green(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(20):
        await place(orders, str(n), 2)
    sink = backend.sink()
    async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
        await runner.wait_until(await store.head_position())
        before = await rows(sink)
        # Corrupt the read model, as a buggy handler would have, then rebuild in place.
        async with sink.transaction() as tx:
            await tx.execute("DELETE FROM orders__g1 WHERE order_id = '3'")
        await runner.rebuild("order_summary")
        await runner.wait_until(await store.head_position())
        assert await rows(sink) == before

        # Blue/green: generation 2 is filled while generation 1 keeps answering queries.
        serving: list[int] = []

        async def query_while_rebuilding() -> None:
            for _ in range(50):
                serving.append(len(await rows(sink)))
                await asyncio.sleep(0)

        querying = asyncio.create_task(query_while_rebuilding())
        await runner.rebuild("order_summary", blue_green=True)
        await querying
        assert min(serving) >= 20  # never an empty or partial read model
        await place(orders, "after", 0)
        await runner.wait_until(await store.head_position())
        assert len(await rows(sink)) == 21
        (status,) = await runner.status()
        assert status.generation == 2
        tables = await backend.tables(sink)
        assert "orders__g2" in tables
        assert "orders__g1" not in tables
    assert await sink.active_generation("order_summary") == 2
    # A restart keeps serving generation 2.
    sink = backend.sink()
    async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
        (status,) = await runner.status()
        assert (status.generation, status.checkpoint) == (2, await store.head_position())


async def test_batches_are_bounded(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(30):
        await place(orders, str(n), 3)
    sink = backend.sink()
    transactions = 0
    original = sink.transaction

    def counting() -> Any:
        nonlocal transactions
        transactions += 1
        return original()

    sink.transaction = counting  # type: ignore[method-assign]
    async with ProjectionRunner(
        store, sink, [backend.summary()], RunnerOptions(batch_size=7)
    ) as runner:
        await runner.wait_until(await store.head_position())
    assert 120 // 7 <= transactions <= 120 // 7 + 5  # 120 events, at most 7 per transaction


async def test_partitions_split_the_streams(backend: Backend) -> None:
    from eventtape import Partition

    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(40):
        await place(orders, str(n))
    sink = backend.sink()
    runners = [
        ProjectionRunner(store, sink, [backend.summary()], RunnerOptions(partition=Partition(i, 3)))
        for i in range(3)
    ]
    for runner in runners:
        await runner.start()
    for runner in runners:
        await runner.wait_until(await store.head_position())
    assert len(await rows(sink)) == 40
    checkpoints = await sink.fetch("SELECT partition FROM eventtape_checkpoints ORDER BY partition")
    assert [r[0] for r in checkpoints] == ["0/3", "1/3", "2/3"]
    for runner in runners:
        await runner.aclose()
    with pytest.raises(ValueError, match="index"):
        Partition(3, 3)


async def test_on_the_jetstream_store(nats_url: str, backend: Backend) -> None:
    """The same runner on JetStream: category filter on the server, live wake-ups, rebuild."""
    from tests.test_contract_jetstream import fresh_store

    async with fresh_store(nats_url, REGISTRY, poll_interval=0.2) as store:
        orders = Repository(store, Order)
        for n in range(10):
            await place(orders, str(n), 1)
        await store.append("cart-1", [OrderCancelled(reason="not an order stream")])
        sink = backend.sink()
        async with ProjectionRunner(store, sink, [backend.summary()]) as runner:
            await runner.wait_until(await store.head_position() - 1000, timeout=10)
            position = await place(orders, "live", 2)
            await runner.wait_until(position, timeout=10)
            assert len(await rows(sink)) == 11
            await runner.rebuild("order_summary", blue_green=True)
            assert len(await rows(sink)) == 11
            (status,) = await runner.status()
            assert (status.generation, status.lag_events) == (2, 0)
        applied = await sink.fetch("SELECT count(*), max(times) FROM applied__g2")
        assert tuple(applied[0]) == (23, 1)  # 10 orders of 2 events and one of 3
