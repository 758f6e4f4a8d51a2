"""Projections used by the tests, one per sink dialect (SQLite ``?``, PostgreSQL ``$n``)."""

from __future__ import annotations

from typing import Any

from eventtape import Projection, RecordedEvent, handles
from tests.domain import ItemAdded, OrderCancelled, OrderPaid, OrderPlaced

ORDER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {orders} (order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
    " status TEXT NOT NULL, items INTEGER NOT NULL, version INTEGER NOT NULL)"
)
# One row per event applied: applying an event twice would show as times = 2.
APPLIED_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {applied} (position BIGINT PRIMARY KEY, times INTEGER NOT NULL)"
)


class OrderSummary(Projection[Any]):
    """Orders by id, with how many times each event was applied. ``?`` placeholders."""

    name = "order_summary"
    categories = ("order",)
    tables = ("orders", "applied")

    def __init__(self, mark: str = "?") -> None:
        super().__init__()
        self.mark = mark

    def p(self, n: int) -> str:
        return "?" if self.mark == "?" else f"${n}"

    async def create(self, tx: Any) -> None:
        await tx.execute(ORDER_SCHEMA.format(orders=self.table("orders")))
        await tx.execute(APPLIED_SCHEMA.format(applied=self.table("applied")))

    async def _applied(self, record: RecordedEvent[Any], tx: Any) -> None:
        await tx.execute(
            f"INSERT INTO {self.table('applied')} (position, times) VALUES ({self.p(1)}, 1)"
            " ON CONFLICT (position) DO UPDATE SET times = "
            f"{self.table('applied')}.times + 1",
            record.position,
        )

    @handles(OrderPlaced)
    async def _placed(self, record: RecordedEvent[OrderPlaced], tx: Any) -> None:
        event = record.event
        await tx.execute(
            f"INSERT INTO {self.table('orders')} VALUES"
            f" ({self.p(1)}, {self.p(2)}, 'placed', {self.p(3)}, {self.p(4)})",
            event.order_id,
            event.user_id,
            len(event.items),
            record.version,
        )
        await self._applied(record, tx)

    @handles(ItemAdded)
    async def _item_added(self, record: RecordedEvent[ItemAdded], tx: Any) -> None:
        await tx.execute(
            f"UPDATE {self.table('orders')} SET items = items + 1, version = {self.p(1)}"
            f" WHERE order_id = {self.p(2)}",
            record.version,
            record.stream_id.partition("-")[2],
        )
        await self._applied(record, tx)

    @handles(OrderPaid, OrderCancelled)
    async def _status(self, record: RecordedEvent[Any], tx: Any) -> None:
        status = "paid" if isinstance(record.event, OrderPaid) else "cancelled"
        await tx.execute(
            f"UPDATE {self.table('orders')} SET status = {self.p(1)}, version = {self.p(2)}"
            f" WHERE order_id = {self.p(3)}",
            status,
            record.version,
            record.stream_id.partition("-")[2],
        )
        await self._applied(record, tx)


class Poisoned(Projection[Any]):
    """Records cancellation reasons; fails on every one whose reason is 'poison'."""

    name = "poisoned"
    tables = ("reasons",)

    def __init__(self, mark: str = "?") -> None:
        super().__init__()
        self.mark = mark

    async def create(self, tx: Any) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table('reasons')} (reason TEXT)")

    @handles(OrderCancelled)
    async def _cancelled(self, record: RecordedEvent[OrderCancelled], tx: Any) -> None:
        mark = "?" if self.mark == "?" else "$1"
        await tx.execute(
            f"INSERT INTO {self.table('reasons')} VALUES ({mark})", record.event.reason
        )
        if record.event.reason == "poison":
            raise ValueError("cannot digest this")
