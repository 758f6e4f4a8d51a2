"""OpenTelemetry: one request is one trace through the saga and the read model; metrics count
appends and conflicts; without a provider nothing is recorded or added to events.

Uses the SDK's in-memory exporters. A tracer provider can be set only once per process, so the
fixtures reset the API's globals afterwards (the documented way tests do it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from eventtape import (
    ConcurrencyError,
    InMemoryEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    SagaRunner,
    handles,
)
from eventtape._core import runner_metrics, telemetry
from eventtape.sinks.sqlite import SqliteSink
from tests.shop import SHOP_REGISTRY, OrderCompleted, OrderPlaced
from tests.test_sagas import open_shop, place, settle


class OrderLog(Projection[Any]):
    """Counts orders placed and completed (what matters here is that it runs)."""

    name = "order_log"
    categories = ("order",)
    tables = ("log",)

    async def create(self, tx: Any) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table('log')} (kind TEXT)")

    @handles(OrderPlaced, OrderCompleted)
    async def _log(self, record: RecordedEvent[Any], tx: Any) -> None:
        await tx.execute(f"INSERT INTO {self.table('log')} VALUES (?)", record.event_type)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def meter_reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics.set_meter_provider(provider)
    telemetry._reset_for_tests()
    runner_metrics._reset_for_tests()
    yield reader
    provider.shutdown()
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None
    telemetry._reset_for_tests()
    runner_metrics._reset_for_tests()


def _by_name(finished: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name.startswith(prefix)]


async def test_one_request_is_one_trace_through_saga_and_read_model(
    spans: InMemorySpanExporter,
) -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    tracer = trace.get_tracer("test")
    async with (
        SagaRunner(store, SqliteSink(":memory:"), [_fulfillment(shop)]) as sagas,
        ProjectionRunner(store, SqliteSink(":memory:"), [OrderLog()]) as projections,
    ):
        with tracer.start_as_current_span("POST /orders") as request:
            await place(shop, "1", "rich")
        await settle(sagas, store)
        last_order_event = [r async for r in store.read_stream("order-1")][-1]
        await projections.wait_until(last_order_event.position, timeout=10)
    root = request.get_span_context()
    finished = spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}

    # The order's events remember the request; the saga's commands carry its trace onward.
    placed = await anext(store.read_stream("order-1"))
    assert placed.headers["traceparent"].split("-")[1] == f"{root.trace_id:032x}"

    saga_spans = _by_name(finished, "saga fulfillment ")
    projection_spans = _by_name(finished, "projection order_log ")
    assert {s.name.rpartition(" ")[2] for s in saga_spans} >= {"OrderPlaced", "StockReserved"}
    assert {s.name.rpartition(" ")[2] for s in projection_spans} == {
        "OrderPlaced",
        "OrderCompleted",
    }
    for span in saga_spans + projection_spans:
        assert span.context.trace_id == root.trace_id, f"{span.name} left the request's trace"
        assert span.kind is trace.SpanKind.CONSUMER
        assert span.parent is not None
    # The saga's reaction to OrderPlaced is a child of the request itself ...
    (first,) = [s for s in saga_spans if s.name.endswith("OrderPlaced")]
    assert first.parent is not None
    assert first.parent.span_id == root.span_id
    assert first.attributes is not None
    assert first.attributes["eventtape.event.stream"] == "order-1"
    # ... and what it caused is handled under the saga span that appended it.
    (completed,) = [s for s in projection_spans if s.name.endswith("OrderCompleted")]
    assert completed.parent is not None
    assert by_id[completed.parent.span_id].name.startswith("saga fulfillment ")


async def test_without_a_tracer_provider_events_carry_no_trace_context() -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    async with SagaRunner(store, SqliteSink(":memory:"), [_fulfillment(shop)]) as runner:
        await place(shop, "1", "rich")
        await settle(runner, store)
    assert [r async for r in store.read_all() if "traceparent" in r.headers] == []


async def test_appends_and_conflicts_are_counted(meter_reader: InMemoryMetricReader) -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)  # three appends: stock and two wallets
    await place(shop, "1", "rich")
    with pytest.raises(ConcurrencyError):
        await place(shop, "1", "rich")  # a second "place" of the same order
    data = meter_reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    appended = {
        p.attributes["eventtape.category"]: p.value for p in points["eventtape.events.appended"]
    }
    assert appended == {"inventory": 1, "wallet": 2, "order": 1}
    (conflicts,) = points["eventtape.append.conflicts"]
    assert conflicts.value == 1
    assert conflicts.attributes["eventtape.category"] == "order"
    durations = {
        p.attributes["eventtape.outcome"]: p.count
        for p in points["eventtape.append.duration"]
        if p.attributes["eventtape.category"] == "order"
    }
    assert durations == {"ok": 1, "conflict": 1}
    # Buckets in seconds (50 µs to 10 s), not the SDK's default ones sized for milliseconds,
    # where every append would land in "0 to 5".
    (ok,) = [
        p
        for p in points["eventtape.append.duration"]
        if p.attributes["eventtape.category"] == "order"
        and p.attributes["eventtape.outcome"] == "ok"
    ]
    assert tuple(ok.explicit_bounds) == telemetry.APPEND_SECONDS_BUCKETS
    assert sum(ok.bucket_counts[:-1]) == 1  # under 10 s


def _fulfillment(shop: Any) -> Any:
    from tests.shop import Fulfillment

    return Fulfillment(shop)


async def test_jetstream_events_carry_the_trace_context(
    spans: InMemorySpanExporter, nats_url: str
) -> None:
    from uuid import uuid4

    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    name = f"T{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"t.{name}", storage="memory")
    store = await JetStreamEventStore.connect(nats_url, SHOP_REGISTRY, config=config)
    try:
        shop = await open_shop(store)
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await place(shop, "1", "rich")
        placed = await anext(store.read_stream("order-1"))
        trace_id = f"{request.get_span_context().trace_id:032x}"
        assert placed.headers["traceparent"].split("-")[1] == trace_id
        stock = await anext(store.read_stream("inventory-mug"))
        assert "traceparent" not in stock.headers  # appended outside any span
    finally:
        await store.nc.jetstream().delete_stream(name)
        await store.aclose()
