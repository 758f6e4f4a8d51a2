"""For any history, the read model is the same however it was built: live, rebuilt, or
stopped and restarted at random points, and it equals one clean replay."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventtape import (
    AggregateNotFound,
    ConcurrencyError,
    InMemoryEventStore,
    ProjectionRunner,
    Repository,
    RunnerOptions,
)
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, Order, OrderError, item
from tests.projections import OrderSummary

commands = st.lists(
    st.tuples(
        st.sampled_from(["place", "add", "pay", "cancel"]),
        st.integers(0, 4),  # which order
    ),
    min_size=1,
    max_size=40,
)


async def apply_commands(orders: Repository[Order], steps: list[tuple[str, int]]) -> None:
    for command, key in steps:
        order_id = str(key)
        try:
            if command == "place":
                await orders.save(Order.place(order_id, f"u{key}", [item()]))
                continue
            order = await orders.load(order_id)
            if command == "add":
                order.add_item(item("extra"))
            elif command == "pay":
                order.pay(order.total)
            else:
                order.cancel("changed my mind")
            await orders.save(order)
        except (OrderError, AggregateNotFound, ConcurrencyError):
            pass  # a rule refused it, the order does not exist, or it exists already


async def read_model(sink: SqliteSink) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await sink.fetch("SELECT * FROM orders ORDER BY order_id")]


async def check(steps: list[tuple[str, int]], stops: list[int], batch_size: int) -> None:
    options = RunnerOptions(batch_size=batch_size)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        store = InMemoryEventStore(REGISTRY)
        orders = Repository(store, Order)

        # Live: the runner is already running while the history is written.
        live_sink = SqliteSink(root / "live.db")
        live = ProjectionRunner(store, live_sink, [OrderSummary()], options)
        await live.start()
        await apply_commands(orders, steps)
        head = await store.head_position()
        await live.wait_until(head)
        live_rows = await read_model(live_sink)

        # Rebuilt in place, and blue/green.
        await live.rebuild("order_summary")
        await live.wait_until(head)
        rebuilt_rows = await read_model(live_sink)
        await live.rebuild("order_summary", blue_green=True)
        blue_green_rows = await read_model(live_sink)
        await live.aclose()
        await live_sink.aclose()

        # Stopped and restarted at random positions.
        restart_sink = SqliteSink(root / "restarts.db")
        for stop in [*sorted({min(max(s, 1), head) for s in stops}), head]:
            runner = ProjectionRunner(store, restart_sink, [OrderSummary()], options)
            await runner.start()
            await runner.wait_until(stop)
            await runner.aclose()
        restarted_rows = await read_model(restart_sink)
        never_twice = await restart_sink.fetch("SELECT * FROM applied__g1 WHERE times <> 1")
        await restart_sink.aclose()

        # One clean replay, in one batch.
        clean_sink = SqliteSink(root / "clean.db")
        clean = ProjectionRunner(
            store, clean_sink, [OrderSummary()], RunnerOptions(batch_size=10_000)
        )
        await clean.start()
        await clean.wait_until(head)
        clean_rows = await read_model(clean_sink)
        await clean.aclose()
        await clean_sink.aclose()

    assert live_rows == clean_rows
    assert rebuilt_rows == clean_rows
    assert blue_green_rows == clean_rows
    assert restarted_rows == clean_rows
    assert never_twice == []


@settings(max_examples=25, deadline=None)
@given(
    steps=commands,
    stops=st.lists(st.integers(1, 200), max_size=4),
    batch_size=st.integers(1, 8),
)
def test_read_model_is_independent_of_how_it_was_built(
    steps: list[tuple[str, int]], stops: list[int], batch_size: int
) -> None:
    if not any(command == "place" for command, _ in steps):
        steps = [("place", 0), *steps]
    asyncio.run(check(steps, stops, batch_size))
