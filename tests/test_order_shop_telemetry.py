"""The shop's telemetry: one ``POST /orders`` is one trace through reservation, payment and the
read models; Prometheus ``GET /metrics`` after an order shows appends, projection lag and saga
backlog; only admins may read it; without the packages (or switched off) it answers 503 saying
why, and the shop works as before."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("opentelemetry.exporter.prometheus")

from examples.order_shop.app import create_app
from examples.order_shop.metrics import MISSING
from examples.order_shop.runtime import Settings, Shop
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client.parser import text_string_to_metric_families

from eventtape import StoreUnavailable
from eventtape._core import runner_metrics, telemetry
from tests.test_order_shop import ADMIN, ALICE, Client, auth
from tests.test_telemetry import spans

__all__ = ["spans"]  # the fixture, used by name below


@pytest.fixture(autouse=True)
def fresh_meter_provider() -> Iterator[None]:
    """The shop sets the process's meter provider: forget it after each test."""

    def reset() -> None:
        metrics._internal._METER_PROVIDER_SET_ONCE = Once()
        metrics._internal._METER_PROVIDER = None
        telemetry._reset_for_tests()
        runner_metrics._reset_for_tests()

    reset()
    yield
    provider = metrics._internal._METER_PROVIDER
    if provider is not None:
        provider.shutdown()  # type: ignore[attr-defined]
    reset()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Client]:
    shop = Shop(settings)
    app = create_app(shop=shop)
    await shop.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            yield Client(shop, http)
    finally:
        await shop.stop()


async def one_order(client: Client) -> None:
    await client.product("mug")
    await client.post("/wallets/789/deposit", {"amount": "50.00"}, ALICE)
    placed = await client.post("/orders", {"items": [{"sku": "mug", "quantity": 2}]}, ALICE)
    assert placed.status_code == 202, placed.text
    await client.settle()
    assert (await client.order(placed.json()["order_id"], ALICE))["status"] == "paid"


def samples(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Parse the exposition (strictly: a malformed one raises) into name -> labels -> value."""
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def labelled(series: dict[frozenset[tuple[str, str]], float], **labels: str) -> list[float]:
    wanted = {(f"eventtape_{k}", v) for k, v in labels.items()}
    return [value for key, value in series.items() if wanted <= key]


@pytest.mark.parametrize("store", ["memory", "embedded"])
async def test_after_an_order_metrics_show_appends_lag_and_backlog(
    store: str, tmp_path: Path
) -> None:
    async with running(Settings(store=store, data_dir=tmp_path, metrics=True)) as client:
        await one_order(client)
        response = await client.get("/metrics", ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)
    backend = "memory" if store == "memory" else "jetstream"
    appended = found["eventtape_events_appended_total"]
    assert labelled(appended, category="order", store=backend) == [3.0]  # created, reserved, paid
    assert labelled(appended, category="wallet", store=backend) == [2.0]  # deposit, charge
    assert labelled(found["eventtape_append_duration_seconds_count"], category="order")
    lag = found["eventtape_projection_lag"]
    assert labelled(lag, handler_name="orders_view", partition="all") == [0.0]
    assert labelled(found["eventtape_saga_backlog"], handler_name="fulfillment") == [0.0]
    assert len(found["eventtape_saga_backlog"]) == 1
    assert labelled(found["eventtape_events_parked"], handler_name="fulfillment") == [0.0]
    assert labelled(found["eventtape_deadlines_pending"], handler_name="fulfillment") == [0.0]


async def test_metrics_are_for_admins_only(tmp_path: Path) -> None:
    async with running(Settings(store="memory", data_dir=tmp_path, metrics=True)) as client:
        await one_order(client)
        anonymous = await client.http.get("/metrics")
        wrong = await client.http.get("/metrics", headers=auth("not-a-token"))
        customer = await client.get("/metrics", ALICE)
        query = await client.http.get("/metrics?token=demo-admin")  # no token in the query
    assert (anonymous.status_code, wrong.status_code, customer.status_code) == (401, 401, 403)
    assert query.status_code == 401
    for refused in (anonymous, wrong, customer, query):
        assert "eventtape_" not in refused.text


async def test_switched_off_it_answers_503_and_the_shop_works(tmp_path: Path) -> None:
    async with running(Settings(store="memory", data_dir=tmp_path)) as client:
        await one_order(client)
        response = await client.get("/metrics", ADMIN)
        anonymous = await client.http.get("/metrics")
    assert response.status_code == 503
    assert "ORDER_SHOP_METRICS" in response.json()["detail"]
    assert anonymous.status_code == 401  # not even whether metrics are on
    assert metrics._internal._METER_PROVIDER is None  # the shop set nothing


async def test_without_the_packages_it_answers_503_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if opentelemetry-exporter-prometheus were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    async with running(Settings(store="memory", data_dir=tmp_path, metrics=True)) as client:
        await one_order(client)
        response = await client.get("/metrics", ADMIN)
    assert response.status_code == 503
    assert response.json()["detail"] == MISSING
    assert "eventtape[prometheus]" in MISSING
    assert metrics._internal._METER_PROVIDER is None


async def test_a_meter_provider_set_by_the_application_is_left_alone(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    theirs = MeterProvider()
    metrics.set_meter_provider(theirs)
    async with running(Settings(store="memory", data_dir=tmp_path, metrics=True)) as client:
        response = await client.get("/metrics", ADMIN)
    assert response.status_code == 503
    assert "set before the shop" in response.json()["detail"]
    assert metrics._internal._METER_PROVIDER is theirs


@pytest.mark.parametrize("store", ["memory", "embedded"])
async def test_post_orders_is_one_trace_through_reservation_payment_and_read_models(
    store: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with running(Settings(store=store, data_dir=tmp_path)) as client:
        await client.product("mug")
        await client.post("/wallets/789/deposit", {"amount": "50.00"}, ALICE)
        await client.settle()
        spans.clear()
        # FastAPI (0.165 on) starts a server span for the request itself; without it, this
        # span (a client's) stands for it. Either way, one span named "POST /orders" is the root.
        with trace.get_tracer("test").start_as_current_span("POST /orders"):
            body = {"items": [{"sku": "mug", "quantity": 2}]}
            placed = await client.post("/orders", body, ALICE)
        assert placed.status_code == 202, placed.text
        await client.settle()
        assert (await client.order(placed.json()["order_id"], ALICE))["status"] == "paid"
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}

    def one(name: str) -> ReadableSpan:
        (found,) = [s for s in finished if s.name == name]
        return found

    def parent(span: ReadableSpan) -> int | None:
        return span.parent.span_id if span.parent is not None else None

    def root_of(span: ReadableSpan) -> ReadableSpan:
        while span.parent is not None:
            span = by_id[span.parent.span_id]
        return span

    # request -> reservation -> payment -> marked paid, each caused by the one before ...
    reserve = one("saga fulfillment OrderCreated")
    charge = one("saga fulfillment OrderStockReserved")
    paid = one("saga fulfillment PaymentCompleted")
    root = root_of(reserve)
    assert root.name == "POST /orders"
    assert parent(charge) == reserve.context.span_id
    assert parent(paid) == charge.context.span_id
    # ... and every read-model update of the order hangs under what appended its event.
    assert root_of(one("projection orders_view OrderCreated")) is root
    assert parent(one("projection orders_view OrderStockReserved")) == reserve.context.span_id
    assert parent(one("projection orders_view OrderPaid")) == paid.context.span_id
    stock = [s for s in finished if s.name.startswith("projection stock_view ")]
    assert stock, "the stock view's update of the reservation is in the trace"
    assert {parent(s) for s in stock} == {reserve.context.span_id}
    ours = [s for s in finished if s.name.startswith(("saga ", "projection "))]
    assert {s.context.trace_id for s in ours} == {root.context.trace_id}


async def test_with_the_store_away_metrics_answer_with_the_last_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(Settings(store="memory", data_dir=tmp_path, metrics=True)) as client:
        await one_order(client)
        assert (await client.get("/metrics", ADMIN)).status_code == 200

        async def away() -> int:
            raise StoreUnavailable("the store is away")

        monkeypatch.setattr(client.shop.store, "head_position", away)
        response = await client.get("/metrics", ADMIN)
    assert response.status_code == 200
    found = samples(response.text)
    assert labelled(found["eventtape_saga_backlog"], handler_name="fulfillment") == [0.0]
    assert labelled(found["eventtape_events_appended_total"], category="order")
