"""The web console over HTTP (httpx against the shop's ASGI app, memory store)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from examples.order_shop.app import create_app
from examples.order_shop.runtime import Settings, Shop

from eventtape import StoreUnavailable
from eventtape._core.wire import CONSOLE_ACTIONS_STREAM

ADMIN, ALICE = "demo-admin", "demo-customer-789"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def settle(shop: Shop) -> None:
    head = await shop.store.head_position()
    await shop.sagas.wait_until(head, timeout=20)
    for _ in range(400):
        if all(s.lag_events == 0 for s in await shop.projections.status()):
            return
        await asyncio.sleep(0.01)


@pytest.fixture
async def shop_http() -> AsyncIterator[tuple[Shop, httpx.AsyncClient]]:
    shop = Shop(Settings(store="memory"))
    app = create_app(shop=shop)
    await shop.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:
            yield shop, http
    finally:
        await shop.stop()


async def story(shop: Shop, http: httpx.AsyncClient, reason: str = "fraud check") -> str:
    """A customer orders and pays; support cancels it. Returns the order id."""
    body: Any = {"sku": "mug", "name": "mug", "price": "7.50"}
    assert (await http.post("/products", json=body, headers=auth(ADMIN))).status_code == 201
    await http.post("/products/mug/restock", json={"quantity": 10}, headers=auth(ADMIN))
    await http.post("/wallets/789/deposit", json={"amount": "50.00"}, headers=auth(ALICE))
    placed = await http.post(
        "/orders", json={"items": [{"sku": "mug", "quantity": 2}]}, headers=auth(ALICE)
    )
    order_id = str(placed.json()["order_id"])
    await settle(shop)
    cancel = await http.post(
        f"/orders/{order_id}/cancel", json={"reason": reason}, headers=auth(ADMIN)
    )
    assert cancel.status_code == 202
    await settle(shop)
    return order_id


async def test_signing_in_is_required(shop_http: tuple[Shop, httpx.AsyncClient]) -> None:
    _, http = shop_http
    assert (await http.get("/console/")).status_code == 303
    assert (await http.get("/console/ops", headers=auth("wrong"))).status_code == 401
    refused = await http.post("/console/login", data={"token": "wrong"})
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers
    login = await http.post("/console/login", data={"token": ALICE})
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert (await http.get("/console/")).status_code == 200
    huge = await http.post("/console/login", content=b"token=" + b"x" * 1_000_000)
    assert huge.status_code == 401


async def test_who_cancelled_and_what_it_was_before(
    shop_http: tuple[Shop, httpx.AsyncClient],
) -> None:
    shop, http = shop_http
    order_id = await story(shop, http)
    page = (await http.get(f"/console/streams/order-{order_id}", headers=auth(ALICE))).text
    assert "OrderCancelled" in page
    assert "admin:support-001" in page
    assert "fraud check" in page
    # State before the cancellation was "paid"; the changed status row is marked.
    row = page[page.index('id="v4"') :]
    assert re.search(r'class="changed"><th>status</th><td><pre>&quot;paid&quot;', row)
    correlation = re.search(r'href="correlations/([^"]+)"', page)
    assert correlation is not None
    cancelled_corr = re.findall(r'href="correlations/([^"]+)"', row)[0]
    told = (await http.get(f"/console/correlations/{cancelled_corr}", headers=auth(ALICE))).text
    assert "OrderCancelled" in told
    assert "InventoryReleased" in told
    assert "PaymentRefunded" in told
    by_actor = await http.get(
        "/console/search", params={"actor": "admin:support-001"}, headers=auth(ALICE)
    )
    assert "OrderCancelled" in by_actor.text
    assert "OrderCreated" not in by_actor.text
    by_type = await http.get(
        "/console/search",
        params={"type": "OrderCreated", "since": "2000-01-01T00:00", "until": "2999-01-01"},
        headers=auth(ALICE),
    )
    assert by_type.text.count('class="type">OrderCreated<') == 1
    none_yet = await http.get(
        "/console/search",
        params={"type": "OrderCreated", "until": "2000-01-01"},
        headers=auth(ALICE),
    )
    assert "<p>0 events" in none_yet.text


async def test_event_data_is_escaped(shop_http: tuple[Shop, httpx.AsyncClient]) -> None:
    shop, http = shop_http
    order_id = await story(shop, http, reason=HOSTILE)
    response = await http.get(f"/console/streams/order-{order_id}", headers=auth(ADMIN))
    assert "<script>" not in response.text
    assert "<img" not in response.text
    assert "&lt;script&gt;alert(" in response.text
    assert "script-src 'none'" in response.headers["content-security-policy"]
    for token in shop.settings.tokens:  # no secrets in pages
        assert token not in response.text
    assert (await http.get("/console/streams/bad%20id*", headers=auth(ADMIN))).status_code == 422
    assert (await http.get("/console/streams/order-none", headers=auth(ADMIN))).status_code == 404


async def park_one(shop: Shop, http: httpx.AsyncClient) -> str:
    body: Any = {"sku": "mug", "name": "mug", "price": "7.50"}
    await http.post("/products", json=body, headers=auth(ADMIN))
    await http.post("/products/mug/restock", json={"quantity": 10}, headers=auth(ADMIN))
    await http.post("/wallets/789/deposit", json={"amount": "50.00"}, headers=auth(ALICE))
    wallets = shop.wallets
    working = wallets.load

    async def payment_service_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("payment service down")

    wallets.load = payment_service_down  # type: ignore[method-assign]
    placed = await http.post(
        "/orders", json={"items": [{"sku": "mug", "quantity": 1}]}, headers=auth(ALICE)
    )
    for _ in range(500):
        if await shop.sagas.parked("fulfillment"):
            break
        await asyncio.sleep(0.01)
    wallets.load = working  # type: ignore[method-assign]
    return str(placed.json()["order_id"])


async def test_admin_retries_a_parked_event_and_it_is_recorded(
    shop_http: tuple[Shop, httpx.AsyncClient],
) -> None:
    shop, http = shop_http
    order_id = await park_one(shop, http)
    [parked] = await shop.sagas.parked("fulfillment")
    fields = {"kind": "saga", "name": "fulfillment", "position": str(parked.position)}

    # A customer sees the parked event but gets no buttons, and a POST is refused.
    customer_page = (await http.get("/console/ops", headers=auth(ALICE))).text
    assert "payment service down" in customer_page
    assert "retry</button>" not in customer_page
    refused = await http.post(
        "/console/ops/parked/retry", data=fields | {"csrf": "x"}, headers=auth(ALICE)
    )
    assert refused.status_code == 403
    # An admin without the form's CSRF token is refused too.
    forged = await http.post("/console/ops/parked/retry", data=fields, headers=auth(ADMIN))
    assert forged.status_code == 403
    assert len(await shop.sagas.parked("fulfillment")) == 1

    admin_page = (await http.get("/console/ops", headers=auth(ADMIN))).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', admin_page)
    assert csrf is not None
    done = await http.post(
        "/console/ops/parked/retry", data=fields | {"csrf": csrf[1]}, headers=auth(ADMIN)
    )
    assert done.status_code == 303, done.text
    assert await shop.sagas.parked("fulfillment") == []
    await settle(shop)
    order = (await http.get(f"/orders/{order_id}", headers=auth(ADMIN))).json()
    assert order["status"] == "paid"
    [action] = [r async for r in shop.store.read_stream(CONSOLE_ACTIONS_STREAM)]
    assert action.actor == "admin:support-001"
    assert (action.event_type, action.event.target) == (
        "eventtape.ConsoleActionTaken",
        f"fulfillment@{parked.position}",
    )


async def test_admin_rebuilds_a_projection(shop_http: tuple[Shop, httpx.AsyncClient]) -> None:
    shop, http = shop_http
    await story(shop, http)
    admin_page = (await http.get("/console/ops", headers=auth(ADMIN))).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', admin_page)
    assert csrf is not None
    fields = {"kind": "projection", "name": "orders_view", "csrf": csrf[1]}
    done = await http.post("/console/ops/rebuild", data=fields, headers=auth(ADMIN))
    assert done.status_code == 303
    unknown = await http.post(
        "/console/ops/rebuild", data=fields | {"name": "nope"}, headers=auth(ADMIN)
    )
    assert unknown.status_code == 404
    actions = [r async for r in shop.store.read_stream(CONSOLE_ACTIONS_STREAM)]
    assert [(a.event.action, a.event.target) for a in actions] == [("rebuild", "orders_view")]


async def test_a_stream_the_aggregate_cannot_replay_still_shows_its_events(
    shop_http: tuple[Shop, httpx.AsyncClient],
) -> None:
    shop, http = shop_http
    from examples.order_shop.domain import ProductCreated

    await shop.store.append(
        "order-odd", [ProductCreated(sku="x", name="<i>odd</i>", price=Decimal("1.00"))]
    )
    page = await http.get("/console/streams/order-odd", headers=auth(ADMIN))
    assert page.status_code == 200
    assert "No state shown" in page.text
    assert "&lt;i&gt;odd&lt;/i&gt;" in page.text
    beyond = await http.get("/console/streams/order-odd?from=999999999999", headers=auth(ADMIN))
    assert beyond.status_code in (200, 404)
    assert (await http.get("/console/streams/order-odd?from=-5", headers=auth(ADMIN))).is_success


async def test_ops_shows_processes_in_flight_and_each_projections_rate(
    shop_http: tuple[Shop, httpx.AsyncClient],
) -> None:
    import asyncio

    from eventtape._core.system_events import ProcessFinished, ProcessStarted

    shop, http = shop_http
    await shop.store.append(
        "process-refund:o1", [ProcessStarted(process="refund", key="o1", started_by="x")]
    )
    await shop.store.append(
        "process-refund:o2",
        [
            ProcessStarted(process="refund", key="o2", started_by="x"),
            ProcessFinished(outcome="completed"),
        ],
    )
    first = (await http.get("/console/ops", headers=auth(ADMIN))).text
    assert "Process instances in flight (1)" in first
    assert "process-refund:o1" in first
    assert "process-refund:o2" not in first
    assert "rate (positions/s)" in first
    await asyncio.sleep(1.1)
    second = (await http.get("/console/ops", headers=auth(ADMIN))).text
    rates = re.findall(r'<td class="num">(-|[0-9.]+)</td><td>', second)
    assert rates
    assert all(rate != "-" for rate in rates)  # a second look a second later has a rate


async def test_a_time_that_is_not_a_time_is_a_400(
    shop_http: tuple[Shop, httpx.AsyncClient],
) -> None:
    _, http = shop_http
    for bad in ("yesterday", "2026-13-45", "x" * 5000, "<script>"):
        answer = await http.get("/console/search", params={"since": bad}, headers=auth(ADMIN))
        assert answer.status_code == 400
        assert "<script>" not in answer.text
    fine = await http.get("/console/search", params={"until": "2999-01-01"}, headers=auth(ADMIN))
    assert fine.status_code == 200
