"""The read side: orders by id, user and status (with paging), and stock per product."""

from __future__ import annotations

import json
from typing import Any

from eventtape import Event, Projection, RecordedEvent, handles
from eventtape.privacy import FORGOTTEN

from .domain import (
    CustomerErased,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCreated,
    OrderPaid,
    OrderShipped,
    OrderStockReserved,
    ProductCreated,
    ProductRestocked,
    StockShipped,
)


class _Dialect(Projection[Any]):
    def __init__(self, postgres: bool = False) -> None:
        super().__init__()
        self.postgres = postgres

    def marks(self, count: int) -> list[str]:
        return [f"${n}" for n in range(1, count + 1)] if self.postgres else ["?"] * count


PERSONAL_COLUMNS = ("customer_name", "email", "delivery_address")
"""The orders' personal data: masked when the customer is erased, and on every rebuild after."""


class OrdersView(_Dialect):
    """``orders``: one row per order, as the API's queries want it."""

    name = "orders_view"
    categories = ("order", "customer")
    tables = ("orders",)

    async def create(self, tx: Any) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table('orders')} ("
            " order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, items TEXT NOT NULL,"
            " amount TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, tracking_number TEXT,"
            " version INTEGER NOT NULL, position BIGINT NOT NULL, updated_at TEXT NOT NULL)"
        )
        await tx.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table('orders')}_user"
            f" ON {self.table('orders')} (user_id, order_id)"
        )
        # Read models made before orders carried delivery details get the columns.
        orders = self.table("orders")
        if self.postgres:
            for column in PERSONAL_COLUMNS:
                await tx.execute(f"ALTER TABLE {orders} ADD COLUMN IF NOT EXISTS {column} TEXT")
        else:
            have = {row[1] for row in await tx.fetch(f"PRAGMA table_info({orders})")}
            for column in PERSONAL_COLUMNS:
                if column not in have:
                    await tx.execute(f"ALTER TABLE {orders} ADD COLUMN {column} TEXT")

    @handles(OrderCreated)
    async def _placed(self, record: RecordedEvent[OrderCreated], tx: Any) -> None:
        e = record.event
        items = json.dumps([line.model_dump(mode="json") for line in e.lines])
        m = self.marks(10)
        await tx.execute(
            f"INSERT INTO {self.table('orders')} (order_id, user_id, items, amount, status,"
            f" version, position, updated_at, customer_name, email, delivery_address)"
            f" VALUES ({m[0]}, {m[1]}, {m[2]}, {m[3]}, 'placed', {m[4]}, {m[5]}, {m[6]},"
            f" {m[7]}, {m[8]}, {m[9]})",
            e.order_id,
            e.user_id,
            items,
            str(e.amount),
            record.version,
            record.position,
            record.recorded_at.isoformat(),
            e.customer_name,
            e.email,
            e.delivery_address,
        )

    @handles(CustomerErased)
    async def _erased(self, record: RecordedEvent[CustomerErased], tx: Any) -> None:
        # The events already read as FORGOTTEN (the key went first); this row copied them before.
        m = self.marks(len(PERSONAL_COLUMNS) + 1)
        masked = ", ".join(
            f"{column} = CASE WHEN {column} IS NULL THEN NULL ELSE {mark} END"
            for column, mark in zip(PERSONAL_COLUMNS, m, strict=False)
        )
        await tx.execute(
            f"UPDATE {self.table('orders')} SET {masked} WHERE user_id = {m[-1]}",
            *[FORGOTTEN] * len(PERSONAL_COLUMNS),
            record.event.customer_id,
        )

    @handles(OrderStockReserved, OrderPaid, OrderShipped, OrderCancelled)
    async def _changed(self, record: RecordedEvent[Event], tx: Any) -> None:
        event = record.event
        status = {
            OrderStockReserved: "reserved",
            OrderPaid: "paid",
            OrderShipped: "shipped",
            OrderCancelled: "cancelled",
        }[type(event)]
        reason = event.reason if isinstance(event, OrderCancelled) else None
        tracking = event.tracking_number if isinstance(event, OrderShipped) else None
        m = self.marks(7)
        await tx.execute(
            f"UPDATE {self.table('orders')} SET status = {m[0]},"
            f" reason = COALESCE({m[1]}, reason),"
            f" tracking_number = COALESCE({m[2]}, tracking_number),"
            f" version = {m[3]}, position = {m[4]}, updated_at = {m[5]} WHERE order_id = {m[6]}",
            status,
            reason,
            tracking,
            record.version,
            record.position,
            record.recorded_at.isoformat(),
            record.stream_id.removeprefix("order-"),
        )


class StockView(_Dialect):
    """``stock``: per product, its price and units available, reserved and shipped."""

    name = "stock_view"
    categories = ("product",)
    tables = ("stock",)

    async def create(self, tx: Any) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table('stock')} (sku TEXT PRIMARY KEY,"
            " name TEXT NOT NULL, price TEXT NOT NULL, available INTEGER NOT NULL,"
            " reserved INTEGER NOT NULL, shipped INTEGER NOT NULL)"
        )

    @handles(ProductCreated)
    async def _created(self, record: RecordedEvent[ProductCreated], tx: Any) -> None:
        e = record.event
        m = self.marks(3)
        await tx.execute(
            f"INSERT INTO {self.table('stock')} VALUES ({m[0]}, {m[1]}, {m[2]}, 0, 0, 0)",
            e.sku,
            e.name,
            str(e.price),
        )

    @handles(ProductRestocked, InventoryReserved, InventoryReleased, StockShipped)
    async def _moved(self, record: RecordedEvent[Event], tx: Any) -> None:
        e: Any = record.event
        available, reserved, shipped = {
            ProductRestocked: (1, 0, 0),
            InventoryReserved: (-1, 1, 0),
            InventoryReleased: (1, -1, 0),
            StockShipped: (0, -1, 1),
        }[type(e)]
        q = e.quantity
        m = self.marks(4)
        await tx.execute(
            f"UPDATE {self.table('stock')} SET available = available + {m[0]},"
            f" reserved = reserved + {m[1]}, shipped = shipped + {m[2]} WHERE sku = {m[3]}",
            available * q,
            reserved * q,
            shipped * q,
            record.stream_id.removeprefix("product-"),
        )
