"""The runners' gauges through the OpenTelemetry metrics API (SDK in-memory reader): projection
lag, saga backlog and lag, parked events, pending and overdue deadlines; and nothing at all
without a meter provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eventtape import (
    Deadline,
    EventStore,
    InMemoryEventStore,
    InMemoryLeases,
    ManualClock,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    RunnerOptions,
    Saga,
    SagaContext,
    SagaOptions,
    SagaRunner,
    Sharing,
    handles,
    on_deadline,
    reacts_to,
)
from eventtape._core.runner_metrics import INSTRUMENTS
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, Order
from tests.projections import OrderSummary
from tests.shop import SHOP_REGISTRY, OrderPlaced
from tests.test_projections import place as place_order
from tests.test_sagas import open_shop, place
from tests.test_sharing import until
from tests.test_telemetry import meter_reader
from tests.test_telemetry_spans import store

__all__ = ["meter_reader", "store"]  # the fixtures (memory and JetStream), used by name below


def gauges(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, Any]], int]]:
    """Every runner gauge's series: name -> {attributes: value}."""
    found: dict[str, dict[frozenset[tuple[str, Any]], int]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in INSTRUMENTS:
                    found[metric.name] = {
                        frozenset((p.attributes or {}).items()): int(p.value)
                        for p in metric.data.data_points
                    }
    return found


def series(**attributes: str) -> frozenset[tuple[str, Any]]:
    return frozenset({f"eventtape.{k.replace('_', '.')}": v for k, v in attributes.items()}.items())


class Gated:
    """A gate handlers wait at, and a count of the handlers that reached it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.reached = 0

    async def passing(self) -> None:
        self.reached += 1
        await self.open.wait()

    async def until_reached(self, count: int) -> None:
        await until(lambda: self.reached >= count)


class SlowLog(Projection[Any]):
    """Logs placed orders, waiting at a gate; fails on order "bad" (to be parked)."""

    name = "slow_log"
    categories = ("order",)
    tables = ("log",)

    def __init__(self, gate: Gated) -> None:
        self.gate = gate

    async def create(self, tx: Any) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table('log')} (id TEXT)")

    @handles(OrderPlaced)
    async def _log(self, record: RecordedEvent[OrderPlaced], tx: Any) -> None:
        if record.event.order_id == "bad":
            raise RuntimeError("cannot log this one")
        await self.gate.passing()
        await tx.execute(f"INSERT INTO {self.table('log')} VALUES (?)", record.event.order_id)


class Reminder(Saga):
    """Schedules a reminder per order; both the reaction and the reminder wait at gates."""

    name = "reminder"
    categories = ("order",)

    def __init__(self, reacting: Gated, reminding: Gated) -> None:
        self.reacting, self.reminding = reacting, reminding

    @reacts_to(OrderPlaced)
    async def remember(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        if record.event.order_id == "bad":
            raise RuntimeError("cannot remember this one")
        await ctx.schedule("remind", record.event.order_id, after=timedelta(minutes=1))
        await self.reacting.passing()

    @on_deadline("remind")
    async def remind(self, deadline: Deadline, ctx: SagaContext) -> None:
        await self.reminding.passing()


async def test_gauges_follow_lag_backlog_parked_and_deadlines(
    meter_reader: InMemoryMetricReader, store: EventStore
) -> None:
    shop = await open_shop(store)
    logging_gate, reacting, reminding = Gated(), Gated(), Gated()
    clock = ManualClock()
    projection_options = RunnerOptions(max_attempts=1, park_failures=True, batch_size=1)
    saga_options = SagaOptions(max_attempts=1, concurrency=1, backoff=0)
    async with (
        ProjectionRunner(
            store, SqliteSink(":memory:"), [SlowLog(logging_gate)], projection_options
        ) as projections,
        SagaRunner(
            store,
            SqliteSink(":memory:"),
            [Reminder(reacting, reminding)],
            clock=clock,
            options=saga_options,
        ) as sagas,
    ):
        try:
            await place(shop, "bad", "rich")  # parked by both
            for order in ("1", "2", "3"):
                await place(shop, order, "rich")
            await logging_gate.until_reached(1)
            await reacting.until_reached(1)
            bad = await anext(store.read_stream("order-bad"))
            await until(lambda: sagas.checkpoint("reminder") >= bad.position)
            await projections.refresh_metrics()
            await sagas.refresh_metrics()
            found = gauges(meter_reader)

            # The projection holds order 1 at its gate: 1, 2 and 3 are not applied yet.
            assert found["eventtape.projection.lag"] == {
                series(handler_name="slow_log", partition="all"): 3
            }
            # The saga (one lane) holds order 1: it and the two queued behind it wait.
            assert found["eventtape.saga.backlog"] == {series(handler_name="reminder"): 3}
            # Its "done" checkpoint is past the parked event: orders 1, 2 and 3 are behind it.
            assert found["eventtape.saga.lag"] == {series(handler_name="reminder"): 3}
            assert found["eventtape.events.parked"] == {
                series(handler_kind="projection", handler_name="slow_log", partition="all"): 1,
                series(handler_kind="saga", handler_name="reminder"): 1,
            }
            assert found["eventtape.deadlines.pending"] == {series(handler_name="reminder"): 1}
            assert found["eventtape.deadlines.overdue"] == {series(handler_name="reminder"): 0}

            logging_gate.open.set()
            reacting.open.set()
            last_order = [r async for r in store.read_stream("order-3")][-1].position
            await projections.wait_until(last_order, timeout=10)
            await sagas.wait_until(await store.head_position(), timeout=10)
            await clock.advance(minutes=2)  # three reminders due; the first one waits at its gate
            await reminding.until_reached(1)
            await projections.refresh_metrics()
            await sagas.refresh_metrics()
            found = gauges(meter_reader)
            assert found["eventtape.projection.lag"] == {
                series(handler_name="slow_log", partition="all"): 0
            }
            assert found["eventtape.saga.backlog"] == {series(handler_name="reminder"): 0}
            assert found["eventtape.deadlines.pending"] == {series(handler_name="reminder"): 3}
            assert found["eventtape.deadlines.overdue"] == {series(handler_name="reminder"): 3}

            reminding.open.set()
            await until(lambda: not sagas.pending_deadlines("reminder"))
            await sagas.refresh_metrics()
            found = gauges(meter_reader)
            assert found["eventtape.deadlines.pending"] == {series(handler_name="reminder"): 0}
            assert found["eventtape.deadlines.overdue"] == {series(handler_name="reminder"): 0}
        finally:  # a failed assertion must not leave the runners' handlers waiting forever
            for gate in (logging_gate, reacting, reminding):
                gate.open.set()
    # Closed runners leave no series behind.
    assert all(not points for points in gauges(meter_reader).values())


async def test_runners_measure_by_themselves_every_interval(
    meter_reader: InMemoryMetricReader,
) -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    gate = Gated()
    options = RunnerOptions(metrics_interval=0.01)
    async with ProjectionRunner(store, SqliteSink(":memory:"), [SlowLog(gate)], options):
        await place(shop, "1", "rich")
        await gate.until_reached(1)
        lagging = {series(handler_name="slow_log", partition="all"): 1}
        await until(lambda: gauges(meter_reader).get("eventtape.projection.lag") == lagging)
        gate.open.set()


def _metric_tasks() -> Iterator[asyncio.Task[Any]]:
    return (t for t in asyncio.all_tasks() if t.get_name().startswith("eventtape-metrics-"))


async def test_without_a_meter_provider_runners_measure_nothing() -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    gate, reacting, reminding = Gated(), Gated(), Gated()
    gate.open.set()
    reacting.open.set()
    async with (
        ProjectionRunner(store, SqliteSink(":memory:"), [SlowLog(gate)]) as projections,
        SagaRunner(store, SqliteSink(":memory:"), [Reminder(reacting, reminding)]) as sagas,
    ):
        await place(shop, "1", "rich")
        assert list(_metric_tasks()) == []
        await projections.refresh_metrics()  # a no-op, not an error
        await sagas.refresh_metrics()
        assert projections._metrics.points == {}
        assert sagas._metrics.points == {}


async def test_metrics_interval_must_be_positive() -> None:
    from eventtape import InvalidArgument

    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="metrics_interval"):
            RunnerOptions(metrics_interval=bad)
        with pytest.raises(InvalidArgument):
            SagaOptions(metrics_interval=bad)
    with pytest.raises(InvalidArgument):
        SagaOptions(metrics_interval="5")  # type: ignore[arg-type]


async def test_runners_sharing_partitions_each_report_only_their_own(
    meter_reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(12):
        await place_order(orders, str(n))
    leases = InMemoryLeases(ttl=0.3)
    sinks = [SqliteSink(tmp_path / "read.db") for _ in range(2)]
    a, b = (
        ProjectionRunner(store, sink, [OrderSummary()], sharing=Sharing(leases, 6, member=m))
        for sink, m in zip(sinks, "ab", strict=True)
    )
    await a.start()
    await b.start()
    try:
        await until(lambda: bool(b.owned()) and len(a.owned()) + len(b.owned()) == 6)
        await a.refresh_metrics()
        await b.refresh_metrics()
        reported = [
            {dict(attributes)["eventtape.partition"] for _, attributes in runner_points}
            for runner_points in (
                a._metrics.points["eventtape.projection.lag"],
                b._metrics.points["eventtape.projection.lag"],
            )
        ]
        assert reported == [{p for _, p in a.owned()}, {p for _, p in b.owned()}]
        assert not reported[0] & reported[1]
        assert len(reported[0] | reported[1]) == 6
        lag = gauges(meter_reader)["eventtape.projection.lag"]
        assert len(lag) == 6  # one series per partition, from whichever runner owns it
    finally:
        await a.aclose()
        await b.aclose()
        for sink in sinks:
            await sink.aclose()
