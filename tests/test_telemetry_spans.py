"""Spans of a whole business transaction (SDK in-memory exporter): a process manager's steps
under the request's trace down to the read model, and deadlines firing in a trace of their
own, linked to the handling that scheduled them — also after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventtape import (
    EventStore,
    InMemoryEventStore,
    ManualClock,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    SagaRunner,
    handles,
    verify,
)
from eventtape._core import telemetry
from eventtape._core.wire import DEADLINE_TRACES_HEADER
from eventtape.sinks.sqlite import SqliteSink
from tests.shop import (
    SHOP_REGISTRY,
    Fulfillment,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    OrderProcess,
)
from tests.test_sagas import open_shop, place, settle
from tests.test_sharing import until
from tests.test_telemetry import spans

__all__ = ["spans"]  # the fixture, used by name below


class OrderLog(Projection[Any]):
    name = "order_log"
    categories = ("order",)
    tables = ("log",)

    async def create(self, tx: Any) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table('log')} (kind TEXT)")

    @handles(OrderPlaced, OrderCompleted, OrderCancelled)
    async def _log(self, record: RecordedEvent[Any], tx: Any) -> None:
        await tx.execute(f"INSERT INTO {self.table('log')} VALUES (?)", record.event_type)


def one(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (found,) = [span for span in finished if span.name == name]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def written_under(store: EventStore, stream_id: str, event_type: str) -> tuple[int, int]:
    """The (trace id, span id) an event's traceparent names."""
    (record,) = [r async for r in store.read_stream(stream_id) if r.event_type == event_type]
    _, trace_id, span_id, _ = record.headers["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


async def test_a_process_is_one_trace_from_request_to_read_model(
    spans: InMemorySpanExporter,
) -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    async with (
        SagaRunner(store, SqliteSink(":memory:"), [OrderProcess(shop)]) as sagas,
        ProjectionRunner(store, SqliteSink(":memory:"), [OrderLog()]) as projections,
    ):
        with trace.get_tracer("test").start_as_current_span("POST /orders") as request:
            await place(shop, "1", "rich")
        await settle(sagas, store)
        completed = [r async for r in store.read_stream("order-1")][-1]
        assert completed.event_type == "OrderCompleted"
        await projections.wait_until(completed.position, timeout=10)
    finished = spans.get_finished_spans()
    root = request.get_span_context()

    # POST /orders -> the process handling OrderPlaced -> its steps, in order.
    handling = one(finished, "saga orderprocess OrderPlaced")
    assert parent_of(handling) == root.span_id
    steps = [one(finished, f"process orderprocess step {s}") for s in ("reserve", "charge")]
    steps.append(one(finished, "process orderprocess step complete"))
    for step in steps:
        assert parent_of(step) == handling.context.span_id
        assert step.attributes is not None
        assert step.attributes["eventtape.process.instance"] == "orderprocess:1"
    assert [s.start_time for s in steps] == sorted(s.start_time for s in steps)
    reserve, charge, complete = steps

    # Each step's appends carry its own span on: stock, payment, completion.
    assert await written_under(store, "inventory-mug", "StockReserved") == (
        root.trace_id,
        reserve.context.span_id,
    )
    assert await written_under(store, "wallet-rich", "PaymentCharged") == (
        root.trace_id,
        charge.context.span_id,
    )
    # ... and the read model's update of the completion is a child of the "complete" step.
    logged = one(finished, "projection order_log OrderCompleted")
    assert parent_of(logged) == complete.context.span_id
    assert parent_of(one(finished, "projection order_log OrderPlaced")) == root.span_id
    traced = [s for s in finished if s.name != "POST /orders"]
    assert {s.context.trace_id for s in traced} == {root.trace_id}


async def test_a_refused_step_and_its_compensations_have_spans(
    spans: InMemorySpanExporter,
) -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    async with SagaRunner(store, SqliteSink(":memory:"), [OrderProcess(shop)]) as sagas:
        with trace.get_tracer("test").start_as_current_span("POST /orders"):
            await place(shop, "1", "poor")  # one euro: the charge is refused
        await settle(sagas, store)
    finished = spans.get_finished_spans()
    handling = one(finished, "saga orderprocess OrderPlaced")
    refused = one(finished, "process orderprocess step charge")
    assert refused.status.status_code is trace.StatusCode.ERROR  # the refusal, recorded
    undo = one(finished, "process orderprocess compensate reserve")
    assert parent_of(undo) == parent_of(refused) == handling.context.span_id
    assert await written_under(store, "inventory-mug", "StockReleased") == (
        handling.context.trace_id,
        undo.context.span_id,
    )


@pytest.fixture(params=["memory", "jetstream"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore(SHOP_REGISTRY)
        return
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    name = f"T{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"t.{name}", storage="memory")
    url = request.getfixturevalue("nats_url")
    js = await JetStreamEventStore.connect(url, SHOP_REGISTRY, config=config)
    try:
        yield js
    finally:
        await js.nc.jetstream().delete_stream(name)
        await js.aclose()


async def test_a_deadline_fires_in_its_own_trace_linked_to_what_scheduled_it(
    spans: InMemorySpanExporter, tmp_path: Path, store: EventStore
) -> None:
    checkpoints = str(tmp_path / "sagas.db")
    shop = await open_shop(store)
    clock = ManualClock()
    tracer = trace.get_tracer("test")
    async with SagaRunner(store, SqliteSink(checkpoints), [Fulfillment(shop)], clock=clock) as s:
        # Two requests at once: their deadlines are written by one writer, maybe in one
        # append, yet each remembers its own request.
        with tracer.start_as_current_span("POST /orders 1") as first:
            await place(shop, "1", "rich", pay_later=True)
        with tracer.start_as_current_span("POST /orders 2") as second:
            await place(shop, "2", "rich", pay_later=True)
        await settle(s, store)

    # A new runner (a restart) finds the deadlines in the store, with what scheduled them.
    spans.clear()
    async with (
        SagaRunner(store, SqliteSink(checkpoints), [Fulfillment(shop)], clock=clock) as sagas,
        ProjectionRunner(store, SqliteSink(":memory:"), [OrderLog()]) as projections,
    ):
        scheduled = {d.key: d.scheduled_by for d in sagas.pending_deadlines("fulfillment")}
        for key, request in (("1", first), ("2", second)):
            trace_id = int(scheduled[key]["traceparent"].split("-")[1], 16)
            assert trace_id == request.get_span_context().trace_id, f"deadline {key}"
        await clock.advance(minutes=16)
        await until(lambda: not sagas.pending_deadlines("fulfillment"))
        await settle(sagas, store)
        cancelled = [r async for r in store.read_stream("order-1")][-1]
        assert cancelled.event_type == "OrderCancelled"
        await projections.wait_until(cancelled.position, timeout=10)
    finished = spans.get_finished_spans()
    fired = [s for s in finished if s.name == "deadline fulfillment payment_timeout"]
    assert len(fired) == 2
    for span in fired:
        assert span.parent is None  # a trace of its own ...
        assert span.attributes is not None
        order_id = span.attributes["eventtape.deadline.key"]
        request = first if order_id == "1" else second
        (link,) = span.links  # ... linked to the saga's handling of the order's request
        assert link.context.trace_id == request.get_span_context().trace_id
        scheduling = scheduled[order_id]["traceparent"].split("-")[2]
        assert link.context.span_id == int(scheduling, 16)
        assert span.context.trace_id != request.get_span_context().trace_id
        # The cancellation it caused is in its trace, and so is the read model's update.
        stream = f"order-{order_id}"
        assert (await written_under(store, stream, "OrderCancelled"))[0] == span.context.trace_id
    logged = [s for s in finished if s.name == "projection order_log OrderCancelled"]
    assert {parent_of(s) for s in logged} == {s.context.span_id for s in fired}
    assert (await verify(store)).ok


async def test_without_a_tracer_provider_deadlines_carry_no_trace_context() -> None:
    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    clock = ManualClock()
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)], clock=clock) as s:
        await place(shop, "1", "rich", pay_later=True)
        await settle(s, store)
        await clock.advance(minutes=16)
        await until(lambda: not s.pending_deadlines("fulfillment"))
    assert [r async for r in store.read_all() if r.headers] == []


def test_a_malformed_trace_context_on_a_deadline_is_ignored(
    spans: InMemorySpanExporter,
) -> None:
    from eventtape._core.telemetry import deadline_span

    for junk in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "x" * 8192):
        with deadline_span("s", "n", "k", {"traceparent": junk}):
            pass
    fired = spans.get_finished_spans()
    assert [s.name for s in fired] == ["deadline s n"] * 3
    assert all(not s.links and s.parent is None for s in fired)


async def test_deadlines_written_in_one_append_each_keep_their_own_trace(
    spans: InMemorySpanExporter, store: EventStore
) -> None:
    from eventtape._sagas.deadlines import Deadline, DeadlineBook

    clock = ManualClock()
    book = DeadlineBook(store, "s", clock)
    tracer = trace.get_tracer("test")
    requests = {}

    async def schedule(key: str) -> None:
        with tracer.start_as_current_span(f"request {key}") as request:
            requests[key] = request.get_span_context()
            due = clock.now() + timedelta(minutes=1)
            deadline = Deadline("s", "t", key, due, None, telemetry.trace_headers())
            await book.schedule(deadline, uuid4())

    # Queued before the writer runs: one append, three traces.
    await asyncio.gather(*(schedule(key) for key in "abc"))
    records = [r async for r in store.read_stream("deadline-s")]
    assert len(records) == 3
    assert len({r.headers[DEADLINE_TRACES_HEADER] for r in records}) == 1  # one append's
    assert "traceparent" not in records[0].headers  # no one trace is the append's
    reloaded = DeadlineBook(store, "s", clock)
    await reloaded.load()
    for deadline in reloaded.pending.values():
        _, trace_id, span_id, _ = deadline.scheduled_by["traceparent"].split("-")
        context = requests[deadline.key]
        assert (int(trace_id, 16), int(span_id, 16)) == (context.trace_id, context.span_id)

    # One trace alone: the append carries it as the events' own traceparent too.
    await schedule("d")
    (last,) = [r async for r in store.read_stream("deadline-s", from_version=4)]
    assert last.headers["traceparent"].split("-")[1] == f"{requests['d'].trace_id:032x}"
    assert (await verify(store, "deadline-s")).ok  # the headers are in the hash chain
