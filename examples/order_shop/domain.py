"""The shop's domain: orders, inventory per SKU, wallets. Pure and synchronous; money is Decimal.

Event names follow the story the shop tells (OrderCreated, InventoryReserved, PaymentCompleted /
PaymentFailed, InventoryReleased, OrderCancelled); the names the first version stored
(OrderPlaced, StockReserved, StockReleased, PaymentCharged) stay readable as aliases.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from eventtape import Aggregate, DomainError, Event, EventRegistry, applies
from eventtape.privacy import Personal


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal


class Delivery(BaseModel):
    """Who an order goes to, and where: the customer's personal data."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    email: str | None = None
    address: str | None = None


# -- events ----------------------------------------------------------------------------------


class ProductCreated(Event):
    sku: str
    name: str
    price: Decimal


class ProductRestocked(Event):
    quantity: int


class InventoryReserved(Event):
    order_id: str
    quantity: int


class InventoryReleased(Event):
    order_id: str
    quantity: int


class StockShipped(Event):
    order_id: str
    quantity: int


class MoneyDeposited(Event):
    amount: Decimal
    deposit_key: str | None = None
    """The client's Idempotency-Key, when it gave one: a retry with it deposits nothing more."""


class PaymentCompleted(Event):
    order_id: str
    amount: Decimal


class PaymentRefunded(Event):
    order_id: str
    amount: Decimal


class OrderCreated(Event):
    """An order placed by customer ``user_id``; where it goes is the customer's personal data.

    The name, e-mail and delivery address are stored encrypted with the customer's key
    (``customer:<user_id>``): erasing the customer destroys the key, and from then on they read
    as ``[forgotten]`` while the order itself (lines, amount, who did what) stays.
    """

    __data_subject__ = "customer:{user_id}"

    order_id: str
    user_id: str
    lines: tuple[Line, ...]
    amount: Decimal
    customer_name: Annotated[str | None, Personal] = None
    email: Annotated[str | None, Personal] = None
    delivery_address: Annotated[str | None, Personal] = None


class OrderStockReserved(Event):
    pass


class PaymentFailed(Event):
    """The customer's wallet refused the charge (recorded on the order, before its cancellation)."""

    reason: str


class OrderPaid(Event):
    amount: Decimal


class OrderShipped(Event):
    tracking_number: str


class OrderCancelled(Event):
    reason: str


class CustomerErased(Event):
    """An admin erased a customer's personal data (recorded on ``customer-<id>``, once)."""

    customer_id: str


REGISTRY = EventRegistry(
    [
        ProductCreated,
        ProductRestocked,
        InventoryReserved,
        InventoryReleased,
        StockShipped,
        MoneyDeposited,
        PaymentCompleted,
        PaymentRefunded,
        OrderCreated,
        OrderStockReserved,
        PaymentFailed,
        OrderPaid,
        OrderShipped,
        OrderCancelled,
        CustomerErased,
    ]
)
# The names the first version of the shop stored: still read, never written.
RENAMED: dict[str, type[Event]] = {
    "OrderPlaced": OrderCreated,
    "StockReserved": InventoryReserved,
    "StockReleased": InventoryReleased,
    "PaymentCharged": PaymentCompleted,
}
for _old_name, _event_type in RENAMED.items():
    REGISTRY.register(name=_old_name)(_event_type)

# -- errors ----------------------------------------------------------------------------------


class ShopError(DomainError):
    """A command the shop's rules refuse."""


class InsufficientStock(ShopError):
    pass


class InsufficientFunds(ShopError):
    pass


class KeyReused(ShopError):
    """An idempotency key given again with a different request."""


class IllegalTransition(ShopError):
    """The order is not in a state that allows this; carries the current state."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


# -- aggregates -----------------------------------------------------------------------------


class Product(Aggregate):
    """A SKU: its price and its stock (available, reserved per order, shipped)."""

    stream_category = "product"
    name: str
    price: Decimal
    available: int
    reserved: dict[str, int]
    shipped: int

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.name, self.price = "", Decimal(0)
        self.available, self.reserved, self.shipped = 0, {}, 0

    @classmethod
    def create(cls, sku: str, name: str, price: Decimal) -> Product:
        if price <= 0:
            raise ShopError("a price must be positive")
        product = cls(sku)
        product.record(ProductCreated(sku=sku, name=name, price=price))
        return product

    def restock(self, quantity: int) -> None:
        if quantity <= 0:
            raise ShopError("restock a positive quantity")
        self.record(ProductRestocked(quantity=quantity))

    def reserve(self, order_id: str, quantity: int) -> None:
        if order_id in self.reserved:
            return
        if quantity > self.available:
            raise InsufficientStock(f"{self.id}: {quantity} wanted, {self.available} available")
        self.record(InventoryReserved(order_id=order_id, quantity=quantity))

    def release(self, order_id: str) -> None:
        if order_id in self.reserved:
            self.record(InventoryReleased(order_id=order_id, quantity=self.reserved[order_id]))

    def ship(self, order_id: str) -> None:
        if order_id in self.reserved:
            self.record(StockShipped(order_id=order_id, quantity=self.reserved[order_id]))

    @applies(ProductCreated)
    def _created(self, event: ProductCreated) -> None:
        self.name, self.price = event.name, event.price

    @applies(ProductRestocked)
    def _restocked(self, event: ProductRestocked) -> None:
        self.available += event.quantity

    @applies(InventoryReserved)
    def _reserved(self, event: InventoryReserved) -> None:
        self.available -= event.quantity
        self.reserved[event.order_id] = event.quantity

    @applies(InventoryReleased)
    def _released(self, event: InventoryReleased) -> None:
        self.available += self.reserved.pop(event.order_id)

    @applies(StockShipped)
    def _shipped(self, event: StockShipped) -> None:
        self.shipped += self.reserved.pop(event.order_id)


class Wallet(Aggregate):
    """A customer's money: balance, charges per order, and the deposits' idempotency keys."""

    __snapshot_version__ = 2  # 2: deposit_keys
    balance: Decimal
    charges: dict[str, Decimal]
    deposit_keys: dict[str, Decimal]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance, self.charges, self.deposit_keys = Decimal(0), {}, {}

    def deposit(self, amount: Decimal, key: str | None = None) -> None:
        """Add money; a deposit with a key already used is a no-op (a retry), or refused if
        its amount differs."""
        if amount <= 0:
            raise ShopError("deposit a positive amount")
        if key is not None and key in self.deposit_keys:
            if self.deposit_keys[key] != amount:
                raise KeyReused("this Idempotency-Key was used for another deposit")
            return
        self.record(MoneyDeposited(amount=amount, deposit_key=key))

    def charge(self, order_id: str, amount: Decimal) -> None:
        if order_id in self.charges:
            return
        if amount > self.balance:
            raise InsufficientFunds(f"{amount} wanted, {self.balance} available")
        self.record(PaymentCompleted(order_id=order_id, amount=amount))

    def refund(self, order_id: str) -> None:
        if order_id in self.charges:
            self.record(PaymentRefunded(order_id=order_id, amount=self.charges[order_id]))

    @applies(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount
        if event.deposit_key is not None:
            self.deposit_keys[event.deposit_key] = event.amount

    @applies(PaymentCompleted)
    def _charged(self, event: PaymentCompleted) -> None:
        self.balance -= event.amount
        self.charges[event.order_id] = event.amount

    @applies(PaymentRefunded)
    def _refunded(self, event: PaymentRefunded) -> None:
        self.balance += self.charges.pop(event.order_id)


class Order(Aggregate):
    """placed -> reserved -> paid -> shipped; cancelled from any state but shipped."""

    status: str
    user_id: str
    lines: tuple[Line, ...]
    amount: Decimal
    tracking_number: str | None
    cancel_reason: str | None
    customer_name: str | None
    email: str | None
    delivery_address: str | None

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status, self.user_id, self.lines = "new", "", ()
        self.amount, self.tracking_number, self.cancel_reason = Decimal(0), None, None
        self.customer_name = self.email = self.delivery_address = None

    @classmethod
    def place(
        cls,
        order_id: str,
        user_id: str,
        lines: list[Line],
        delivery: Delivery | None = None,
    ) -> Order:
        """Create an order; lines of one SKU are merged into one.

        Stock is reserved once per order and SKU, so two lines of one SKU would be charged for
        both and reserve only one: merging keeps what is charged and what is reserved equal.
        """
        if not lines:
            raise ShopError("an order needs at least one line")
        merged: dict[str, Line] = {}
        for line in lines:
            if line.quantity <= 0:
                raise ShopError("order a positive quantity")
            seen = merged.get(line.sku)
            if seen is not None and seen.price != line.price:
                raise ShopError(f"two prices for {line.sku}")
            quantity = line.quantity + (seen.quantity if seen else 0)
            merged[line.sku] = Line(sku=line.sku, quantity=quantity, price=line.price)
        order = cls(order_id)
        final = tuple(merged.values())
        amount = sum((line.price * line.quantity for line in final), Decimal(0))
        to = delivery or Delivery()
        order.record(
            OrderCreated(
                order_id=order_id,
                user_id=user_id,
                lines=final,
                amount=amount,
                customer_name=to.name,
                email=to.email,
                delivery_address=to.address,
            )
        )
        return order

    def _require(self, *statuses: str, action: str) -> None:
        if self.status not in statuses:
            raise IllegalTransition(f"cannot {action} an order that is {self.status}", self.status)

    def stock_reserved(self) -> None:
        self._require("placed", action="reserve stock for")
        self.record(OrderStockReserved())

    def pay(self, amount: Decimal) -> None:
        self._require("reserved", action="pay")
        self.record(OrderPaid(amount=amount))

    def ship(self, tracking_number: str) -> None:
        self._require("paid", action="ship")
        self.record(OrderShipped(tracking_number=tracking_number))

    def cancel(self, reason: str) -> None:
        self._require("placed", "reserved", "paid", action="cancel")
        self.record(OrderCancelled(reason=reason))

    def payment_failed(self, reason: str) -> None:
        """The wallet refused the charge: record why, and cancel (one append)."""
        self._require("reserved", action="refuse the payment of")
        self.record(PaymentFailed(reason=reason))
        self.record(OrderCancelled(reason=f"payment refused: {reason}"))

    @applies(OrderCreated)
    def _placed(self, event: OrderCreated) -> None:
        self.status, self.user_id = "placed", event.user_id
        self.lines, self.amount = event.lines, event.amount
        self.customer_name, self.email = event.customer_name, event.email
        self.delivery_address = event.delivery_address

    @applies(OrderStockReserved)
    def _reserved(self, event: OrderStockReserved) -> None:
        self.status = "reserved"

    @applies(PaymentFailed)
    def _payment_failed(self, event: PaymentFailed) -> None:
        pass  # the OrderCancelled recorded with it changes the status

    @applies(OrderPaid)
    def _paid(self, event: OrderPaid) -> None:
        self.status = "paid"

    @applies(OrderShipped)
    def _shipped(self, event: OrderShipped) -> None:
        self.status, self.tracking_number = "shipped", event.tracking_number

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status, self.cancel_reason = "cancelled", event.reason
