"""The shop erases a customer: names, e-mails and addresses masked everywhere, the story kept.

In memory and on the embedded default (JetStream, keys in a JetStream KV bucket, SQLite).
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.order_shop.app import create_app
from examples.order_shop.read_model import OrdersView
from examples.order_shop.runtime import Settings, Shop

from eventtape import InMemoryEventStore, ProjectionRunner
from eventtape.privacy import FORGOTTEN, InMemoryKeyStore
from eventtape.sinks.sqlite import SqliteSink
from tests.test_order_shop import ADMIN, ALICE, BOB, Client, auth

ALICE_TO = {"name": "Alice Liddell", "email": "alice@example.org", "address": "1 Rabbit Hole"}
BOB_TO = {"name": "Bob Builder", "email": "bob@example.org", "address": "2 Yard Lane"}
SECRETS = [v.encode() for v in ALICE_TO.values()]


@pytest.fixture(params=["memory", "embedded"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(store=request.param, data_dir=tmp_path)
    shop = Shop(settings)
    app = create_app(shop=shop)
    await shop.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:
            yield Client(shop, http)
    finally:
        await shop.stop()


async def _story(client: Client) -> tuple[str, str]:
    """Alice orders to her address, an admin cancels it; Bob orders too. Returns both ids."""
    await client.product("mug")
    await client.post("/wallets/789/deposit", {"amount": "50.00"}, ALICE)
    await client.post("/wallets/42/deposit", {"amount": "50.00"}, BOB)
    body = {"items": [{"sku": "mug", "quantity": 1}]}
    alice = await client.post("/orders", {**body, "delivery": ALICE_TO}, ALICE)
    bob = await client.post("/orders", {**body, "delivery": BOB_TO}, BOB)
    assert alice.status_code == bob.status_code == 202, alice.text
    alice_id, bob_id = alice.json()["order_id"], bob.json()["order_id"]
    await client.settle()
    cancelled = await client.post(f"/orders/{alice_id}/cancel", {"reason": "fraud check"}, ADMIN)
    assert cancelled.status_code == 202
    await client.settle()
    return alice_id, bob_id


async def _raw_log(client: Client) -> bytes:
    """Every stored message of the shop's log, as the server (or memory) holds it."""
    inner = client.shop.store.inner
    if isinstance(inner, InMemoryEventStore):
        return b"\n".join([r.event.model_dump_json().encode() async for r in inner.read_all()])
    js = inner.nc.jetstream()  # type: ignore[attr-defined]
    info = await js.stream_info(client.shop.settings.stream)
    messages = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        messages.append(bytes((await js.get_msg(client.shop.settings.stream, sequence)).data))
    return b"\n".join(messages)


async def test_erasing_a_customer_masks_their_data_and_keeps_who_did_what(
    client: Client, tmp_path: Path
) -> None:
    alice_id, bob_id = await _story(client)
    before = await client.order(alice_id, ALICE)
    assert (before["customer_name"], before["email"]) == ("Alice Liddell", "alice@example.org")
    raw = await _raw_log(client)
    assert b"eventtape:aesgcm:v1:" in raw  # stored encrypted from the start
    for secret in SECRETS:
        assert secret not in raw

    erased = await client.post("/customers/789/erase", None, ADMIN)
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased_by"] == "admin:support-001"
    await client.settle()

    # The read model (GET /orders/{id}) masked its copy; the order itself is unchanged.
    order = await client.order(alice_id, ALICE)
    assert [order[f] for f in ("customer_name", "email", "delivery_address")] == [FORGOTTEN] * 3
    assert (order["status"], order["reason"], order["amount"]) == (
        "cancelled",
        "fraud check",
        "7.50",
    )
    listed = (await client.get("/orders", ADMIN, user_id="789")).json()["orders"]
    assert listed[0]["email"] == FORGOTTEN
    # The history still tells who cancelled what.
    history = (await client.get(f"/orders/{alice_id}/history", ALICE)).json()["events"]
    assert history[0]["data"]["customer_name"] == FORGOTTEN
    assert history[0]["data"]["delivery_address"] == FORGOTTEN
    assert (history[0]["data"]["user_id"], history[0]["data"]["amount"]) == ("789", "7.50")
    assert [(e["type"], e["actor"]) for e in history][-1] == ("OrderCancelled", "admin:support-001")
    then = (await client.get(f"/orders/{alice_id}?as_of_version=1", ALICE)).json()
    assert (then["status"], then["email"]) == ("placed", FORGOTTEN)
    chain = (await client.get(f"/orders/{alice_id}/chain", ADMIN)).json()["events"]
    assert chain[0]["data"]["email"] == FORGOTTEN
    page = (await client.http.get(f"/console/streams/order-{alice_id}", headers=auth(ADMIN))).text
    assert "OrderCancelled" in page
    assert "admin:support-001" in page
    assert html.escape(FORGOTTEN) in page or FORGOTTEN in page
    # Every answer above, and the raw log, hold none of Alice's data; Bob's stays.
    answers = json.dumps([order, listed, history, then, chain]).encode() + page.encode()
    for secret in SECRETS:
        assert secret not in answers
        assert secret not in await _raw_log(client)
    assert (await client.order(bob_id, BOB))["customer_name"] == "Bob Builder"

    # A read model rebuilt from the log holds none of it either (the file's bytes).
    path = tmp_path / "rebuilt.db"
    fresh = SqliteSink(path)
    async with ProjectionRunner(client.shop.store, fresh, [OrdersView()]) as replay:
        await replay.wait_until(await client.shop.store.head_position(), timeout=20)
    await fresh.aclose()
    rebuilt = path.read_bytes()
    assert b"Bob Builder" in rebuilt
    for secret in SECRETS:
        assert secret not in rebuilt


async def test_erase_is_idempotent_and_new_personal_data_is_refused(client: Client) -> None:
    await _story(client)
    first = await client.post("/customers/789/erase", None, ADMIN)
    head = await client.shop.store.head_position()
    again = await client.post("/customers/789/erase", None, ADMIN)
    assert again.status_code == 200
    assert again.json() == first.json()  # the first erasure, not a second one
    assert await client.shop.store.head_position() == head
    body = {"items": [{"sku": "mug", "quantity": 1}]}
    refused = await client.post("/orders", {**body, "delivery": ALICE_TO}, ALICE)
    assert refused.status_code == 409
    assert await client.shop.store.head_position() == head
    plain = await client.post("/orders", body, ALICE)  # no personal data: still a customer
    assert plain.status_code == 202


async def test_keys_live_outside_the_log(client: Client) -> None:
    await _story(client)
    keys = client.shop.keys
    if client.shop.settings.store == "memory":
        assert isinstance(keys, InMemoryKeyStore)
    else:
        from eventtape.stores.jetstream import JetStreamKeyStore

        assert isinstance(keys, JetStreamKeyStore)
        assert keys._bucket == f"{client.shop.settings.stream}_KEYS"
    key = await keys.existing_key("customer:789")
    assert key is not None
    assert key not in await _raw_log(client)
    await client.post("/customers/789/erase", None, ADMIN)
    assert await keys.existing_key("customer:789") is None


async def test_hostile_erase_requests_change_nothing(client: Client) -> None:
    alice_id, _ = await _story(client)
    head = await client.shop.store.head_position()
    cases: list[tuple[str, dict[str, str], int]] = [
        ("/customers/789/erase", {}, 401),
        ("/customers/789/erase", auth("not-a-token"), 401),
        ("/customers/789/erase", auth(ALICE), 403),  # not even oneself: an admin erases
        ("/customers/42/erase", auth(BOB.replace("42", "789")), 403),
        ("/customers/nobody/erase", auth(ADMIN), 404),
        ("/customers/%00/erase", auth(ADMIN), 422),
        ("/customers/..%2F..%2Forders/erase", auth(ADMIN), 404),
        ("/customers/%C3%BCnicode/erase", auth(ADMIN), 422),
        ("/customers/" + "x" * 65 + "/erase", auth(ADMIN), 422),
        ("/customers/a*b/erase", auth(ADMIN), 422),
        ("/customers/789%0D%0AX:1/erase", auth(ADMIN), 422),
    ]
    for path, headers, status in cases:
        response = await client.http.post(path, headers=headers)
        assert response.status_code == status, (path, response.status_code, response.text)
        assert "customer-" not in response.text  # never a stream name
    get = await client.http.get("/customers/789/erase", headers=auth(ADMIN))
    assert get.status_code == 405
    huge = await client.http.post(
        "/customers/789/erase",
        content=b"x" * 100_000,
        headers={**auth(ADMIN), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert await client.shop.store.head_position() == head
    assert await client.shop.keys.existing_key("customer:789") is not None
    assert (await client.order(alice_id, ALICE))["customer_name"] == "Alice Liddell"


async def test_delivery_details_are_checked(client: Client) -> None:
    await client.product("mug")
    head = await client.shop.store.head_position()
    body: dict[str, Any] = {"items": [{"sku": "mug", "quantity": 1}]}
    for delivery in [
        {**ALICE_TO, "email": "no-at-sign"},
        {**ALICE_TO, "name": ""},
        {**ALICE_TO, "address": "x" * 501},
        {**ALICE_TO, "name": "Alice\x1b[2J"},
        {**ALICE_TO, "extra": "field"},
        {"name": "Alice"},
        {**ALICE_TO, "name": 7},
    ]:
        response = await client.post("/orders", {**body, "delivery": delivery}, ALICE)
        assert response.status_code == 422, (delivery, response.text)
    assert await client.shop.store.head_position() == head
