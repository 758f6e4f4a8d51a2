"""The core of eventtape in one minute: who cancelled order 12345, when, and what was it before?

Run it with ``python examples/core_demo.py``. It uses the in-memory store; the order shop in
``examples/order_shop`` tells the same story over HTTP on NATS JetStream.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from eventtape import (
    Aggregate,
    ConcurrencyError,
    DomainError,
    Event,
    EventRegistry,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    Repository,
    applies,
    metadata_scope,
)

# -- the domain: pure, synchronous, no I/O ------------------------------------------------


class LineItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal


class OrderPlaced(Event):
    order_id: str
    user_id: str
    items: tuple[LineItem, ...]


class OrderPaid(Event):
    amount: Decimal
    payment_ref: str


class OrderCancelled(Event):
    reason: str


class OrderError(DomainError):
    """A command the order's rules refuse."""


class Order(Aggregate):
    status: str
    user_id: str
    items: tuple[LineItem, ...]
    paid: Decimal

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.user_id = ""
        self.items = ()
        self.paid = Decimal(0)

    @property
    def total(self) -> Decimal:
        return sum((item.price * item.quantity for item in self.items), Decimal(0))

    @classmethod
    def place(cls, order_id: str, user_id: str, items: list[LineItem]) -> Order:
        if not items:
            raise OrderError("an order needs at least one item")
        order = cls(order_id)
        order.record(OrderPlaced(order_id=order_id, user_id=user_id, items=tuple(items)))
        return order

    def pay(self, amount: Decimal, payment_ref: str) -> None:
        if self.status != "placed":
            raise OrderError(f"cannot pay an order that is {self.status}")
        if amount != self.total:
            raise OrderError(f"expected {self.total}, got {amount}")
        self.record(OrderPaid(amount=amount, payment_ref=payment_ref))

    def cancel(self, reason: str) -> None:
        if self.status == "cancelled":
            raise OrderError("the order is already cancelled")
        self.record(OrderCancelled(reason=reason))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status = "placed"
        self.user_id = event.user_id
        self.items = event.items

    @applies(OrderPaid)
    def _paid(self, event: OrderPaid) -> None:
        self.status = "paid"
        self.paid = event.amount

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


registry = EventRegistry([OrderPlaced, OrderPaid, OrderCancelled])

# -- the story -----------------------------------------------------------------------------


async def main() -> None:
    store = InMemoryEventStore(registry)
    orders = Repository(
        store, Order, snapshots=InMemorySnapshotStore(), snapshot_policy=EveryNEvents(100)
    )

    with metadata_scope(actor="user:789", correlation_id="checkout-1"):
        order = Order.place(
            "12345", "789", [LineItem(sku="mug", quantity=2, price=Decimal("7.50"))]
        )
        await orders.save(order)

    with metadata_scope(actor="system:payment-gateway", correlation_id="checkout-1"):
        order = await orders.load("12345")
        order.pay(Decimal("15.00"), payment_ref="pay_8f2c")
        await orders.save(order)

    with metadata_scope(actor="admin:support-001"):
        order = await orders.load("12345")
        order.cancel("customer called: duplicate order")
        await orders.save(order, causation_id="ticket-4411")

    print("The customer says order 12345 was cancelled and they did not do it. Its history:\n")
    async for record in orders.history("12345"):
        when = record.recorded_at.strftime("%H:%M:%S")
        fields = ", ".join(f"{k}={v}" for k, v in record.event.model_dump(mode="json").items())
        print(
            f"  v{record.version}  {when}  {record.event_type:<15} by {record.actor:<24} {fields}"
        )

    before = await orders.load("12345", version=2)
    now = await orders.load("12345")
    print(f"\nBefore the cancellation (version 2) it was {before.status}, paid {before.paid}.")
    print(f"Now (version {now.version}) it is {now.status}.")

    try:
        now.cancel("again")
    except OrderError as error:
        print(f"\nA rule refused a command and nothing was recorded: {error}")

    # Two support agents act on the same version: the second save is refused, not lost.
    placed = Order.place("777", "42", [LineItem(sku="tea", quantity=1, price=Decimal("3"))])
    await orders.save(placed)
    first, second = await orders.load("777"), await orders.load("777")
    first.cancel("agent A")
    second.cancel("agent B")
    await orders.save(first, actor="admin:agent-a")
    try:
        await orders.save(second, actor="admin:agent-b")
    except ConcurrencyError as error:
        print(f"Optimistic concurrency caught a lost update: {error}")


if __name__ == "__main__":
    asyncio.run(main())
