"""The shop's domain: orders, inventory per SKU, wallets. Pure and synchronous; money is Decimal."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from eventtape import Aggregate, DomainError, Event, EventRegistry, applies


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal


# -- events ----------------------------------------------------------------------------------


class ProductCreated(Event):
    sku: str
    name: str
    price: Decimal


class ProductRestocked(Event):
    quantity: int


class StockReserved(Event):
    order_id: str
    quantity: int


class StockReleased(Event):
    order_id: str
    quantity: int


class StockShipped(Event):
    order_id: str
    quantity: int


class MoneyDeposited(Event):
    amount: Decimal


class PaymentCharged(Event):
    order_id: str
    amount: Decimal


class PaymentRefunded(Event):
    order_id: str
    amount: Decimal


class OrderPlaced(Event):
    order_id: str
    user_id: str
    lines: tuple[Line, ...]
    amount: Decimal


class OrderStockReserved(Event):
    pass


class OrderPaid(Event):
    amount: Decimal


class OrderShipped(Event):
    tracking_number: str


class OrderCancelled(Event):
    reason: str


REGISTRY = EventRegistry(
    [
        ProductCreated,
        ProductRestocked,
        StockReserved,
        StockReleased,
        StockShipped,
        MoneyDeposited,
        PaymentCharged,
        PaymentRefunded,
        OrderPlaced,
        OrderStockReserved,
        OrderPaid,
        OrderShipped,
        OrderCancelled,
    ]
)

# -- errors ----------------------------------------------------------------------------------


class ShopError(DomainError):
    """A command the shop's rules refuse."""


class InsufficientStock(ShopError):
    pass


class InsufficientFunds(ShopError):
    pass


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
        self.record(StockReserved(order_id=order_id, quantity=quantity))

    def release(self, order_id: str) -> None:
        if order_id in self.reserved:
            self.record(StockReleased(order_id=order_id, quantity=self.reserved[order_id]))

    def ship(self, order_id: str) -> None:
        if order_id in self.reserved:
            self.record(StockShipped(order_id=order_id, quantity=self.reserved[order_id]))

    @applies(ProductCreated)
    def _created(self, event: ProductCreated) -> None:
        self.name, self.price = event.name, event.price

    @applies(ProductRestocked)
    def _restocked(self, event: ProductRestocked) -> None:
        self.available += event.quantity

    @applies(StockReserved)
    def _reserved(self, event: StockReserved) -> None:
        self.available -= event.quantity
        self.reserved[event.order_id] = event.quantity

    @applies(StockReleased)
    def _released(self, event: StockReleased) -> None:
        self.available += self.reserved.pop(event.order_id)

    @applies(StockShipped)
    def _shipped(self, event: StockShipped) -> None:
        self.shipped += self.reserved.pop(event.order_id)


class Wallet(Aggregate):
    """A customer's money: balance, and charges per order."""

    balance: Decimal
    charges: dict[str, Decimal]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance, self.charges = Decimal(0), {}

    def deposit(self, amount: Decimal) -> None:
        if amount <= 0:
            raise ShopError("deposit a positive amount")
        self.record(MoneyDeposited(amount=amount))

    def charge(self, order_id: str, amount: Decimal) -> None:
        if order_id in self.charges:
            return
        if amount > self.balance:
            raise InsufficientFunds(f"{amount} wanted, {self.balance} available")
        self.record(PaymentCharged(order_id=order_id, amount=amount))

    def refund(self, order_id: str) -> None:
        if order_id in self.charges:
            self.record(PaymentRefunded(order_id=order_id, amount=self.charges[order_id]))

    @applies(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount

    @applies(PaymentCharged)
    def _charged(self, event: PaymentCharged) -> None:
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

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status, self.user_id, self.lines = "new", "", ()
        self.amount, self.tracking_number, self.cancel_reason = Decimal(0), None, None

    @classmethod
    def place(cls, order_id: str, user_id: str, lines: list[Line]) -> Order:
        if not lines:
            raise ShopError("an order needs at least one line")
        order = cls(order_id)
        amount = sum((line.price * line.quantity for line in lines), Decimal(0))
        order.record(
            OrderPlaced(order_id=order_id, user_id=user_id, lines=tuple(lines), amount=amount)
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

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status, self.user_id = "placed", event.user_id
        self.lines, self.amount = event.lines, event.amount

    @applies(OrderStockReserved)
    def _reserved(self, event: OrderStockReserved) -> None:
        self.status = "reserved"

    @applies(OrderPaid)
    def _paid(self, event: OrderPaid) -> None:
        self.status = "paid"

    @applies(OrderShipped)
    def _shipped(self, event: OrderShipped) -> None:
        self.status, self.tracking_number = "shipped", event.tracking_number

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status, self.cancel_reason = "cancelled", event.reason
