"""A small order aggregate for the core tests (the full shop lives in examples/order_shop)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from eventtape import Aggregate, DomainError, Event, EventRegistry, applies


class LineItem(BaseModel):
    """A value inside events: events may nest frozen pydantic models."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal


class OrderPlaced(Event):
    order_id: str
    user_id: str
    items: tuple[LineItem, ...]


class ItemAdded(Event):
    item: LineItem


class OrderPaid(Event):
    amount: Decimal


class OrderCancelled(Event):
    __event_type__ = "OrderCancelled"
    reason: str


class OrderError(DomainError):
    pass


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

    def add_item(self, item: LineItem) -> None:
        if self.status != "placed":
            raise OrderError(f"cannot add items to a {self.status} order")
        self.record(ItemAdded(item=item))

    def pay(self, amount: Decimal) -> None:
        if self.status != "placed":
            raise OrderError(f"cannot pay a {self.status} order")
        if amount != self.total:
            raise OrderError(f"expected {self.total}, got {amount}")
        self.record(OrderPaid(amount=amount))

    def cancel(self, reason: str) -> None:
        if self.status == "cancelled":
            raise OrderError("already cancelled")
        self.record(OrderCancelled(reason=reason))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status = "placed"
        self.user_id = event.user_id
        self.items = event.items

    @applies(ItemAdded)
    def _item_added(self, event: ItemAdded) -> None:
        self.items = (*self.items, event.item)

    @applies(OrderPaid)
    def _paid(self, event: OrderPaid) -> None:
        self.status = "paid"
        self.paid = event.amount

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


REGISTRY = EventRegistry([OrderPlaced, ItemAdded, OrderPaid, OrderCancelled])


def item(sku: str = "sku-1", quantity: int = 1, price: str = "9.99") -> LineItem:
    return LineItem(sku=sku, quantity=quantity, price=Decimal(price))
