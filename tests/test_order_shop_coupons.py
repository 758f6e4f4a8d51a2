"""The shop's coupons, decided with DCB: racing redemptions over HTTP never exceed the limit,
and no customer redeems a coupon twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from examples.order_shop.app import create_app
from examples.order_shop.coupons import CouponRedeemed
from examples.order_shop.runtime import DEMO_TOKENS, Settings, Shop

from eventtape import Query

ADMIN = "demo-admin"
CUSTOMERS = {f"token-{n}": f"user:c{n}" for n in range(12)}


@pytest.mark.parametrize("store", ["memory", "embedded"])
async def test_racing_redemptions_never_exceed_the_limit(store: str, tmp_path: Path) -> None:
    shop = Shop(Settings(store=store, data_dir=tmp_path, tokens={**DEMO_TOKENS, **CUSTOMERS}))
    app = create_app(shop=shop)
    app.state.coupons.limits["RACE3"] = 3
    await shop.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:

            async def post(path: str, body: object, token: str) -> httpx.Response:
                return await http.post(
                    path, json=body, headers={"Authorization": f"Bearer {token}"}
                )

            assert (
                await post("/products", {"sku": "tea", "name": "tea", "price": "2.00"}, ADMIN)
            ).status_code == 201
            order = {"items": [{"sku": "tea", "quantity": 1}], "coupon": "RACE3"}
            # Every customer tries twice, all at once.
            responses = await asyncio.gather(
                *(post("/orders", order, token) for token in CUSTOMERS for _ in range(2))
            )
            codes = sorted(response.status_code for response in responses)
            assert codes.count(202) == 3, [r.text for r in responses]
            assert codes.count(409) == len(responses) - 3
            again = await post("/orders", {**order, "coupon": "NOPE"}, "token-0")
            assert again.status_code == 409
            bad = await post("/orders", {**order, "coupon": "bad coupon!"}, "token-0")
            assert bad.status_code == 422
        read = await shop.store.dcb_read(Query.of([CouponRedeemed], ["coupon:RACE3"]))  # type: ignore[attr-defined]
        redeemed = [item.event for item in read.events]
        assert len(redeemed) == 3
        assert len({event.user_id for event in redeemed}) == 3
        assert all(item.record.actor == f"user:{item.event.user_id}" for item in read.events)
    finally:
        await shop.stop()


async def test_histories_show_each_events_tags() -> None:
    """The order's history shows its stream tag; a coupon redemption shows the tags a DCB
    decision reads it by."""
    from examples.order_shop.coupons import CouponRedeemed

    from eventtape import Repository, tags_of

    event = CouponRedeemed(code="WELCOME10", user_id="789", order_id="o1")
    assert tags_of(event) == {"coupon:WELCOME10", "customer:789"}
    from examples.order_shop.api_common import event_out
    from examples.order_shop.domain import REGISTRY, Order

    from eventtape import InMemoryEventStore

    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    from decimal import Decimal

    from examples.order_shop.domain import Line

    await orders.save(Order.place("o1", "789", [Line(sku="tea", quantity=1, price=Decimal(3))]))
    [record] = [r async for r in store.read_stream("order-o1")]
    assert event_out(record)["tags"] == ["stream:order-o1"]
