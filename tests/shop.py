"""A small order / inventory / payment domain for the saga tests (the full shop is
examples/order_shop): one SKU per order, money as Decimal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from eventtape import (
    Aggregate,
    Deadline,
    DomainError,
    Event,
    EventRegistry,
    EventStore,
    ProcessManager,
    RecordedEvent,
    Repository,
    Saga,
    SagaContext,
    Step,
    applies,
    on_deadline,
    reacts_to,
)

# -- events -------------------------------------------------------------------------------


class OrderPlaced(Event):
    order_id: str
    user_id: str
    sku: str
    quantity: int
    amount: Decimal
    pay_later: bool = False


class OrderCompleted(Event):
    pass


class OrderCancelled(Event):
    reason: str


class StockAdded(Event):
    quantity: int


class StockReserved(Event):
    order_id: str
    quantity: int


class StockReleased(Event):
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


SHOP_REGISTRY = EventRegistry(
    [
        OrderPlaced,
        OrderCompleted,
        OrderCancelled,
        StockAdded,
        StockReserved,
        StockReleased,
        MoneyDeposited,
        PaymentCharged,
        PaymentRefunded,
    ]
)


class InsufficientStock(DomainError):
    pass


class InsufficientFunds(DomainError):
    pass


class IllegalTransition(DomainError):
    pass


# -- aggregates -----------------------------------------------------------------------------


class Order(Aggregate):
    status: str
    user_id: str
    sku: str
    quantity: int
    amount: Decimal
    pay_later: bool

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.user_id = self.sku = ""
        self.quantity = 0
        self.amount = Decimal(0)
        self.pay_later = False

    @classmethod
    def place(
        cls,
        order_id: str,
        user_id: str,
        sku: str,
        quantity: int,
        amount: Decimal,
        pay_later: bool = False,
    ) -> Order:
        order = cls(order_id)
        order.record(
            OrderPlaced(
                order_id=order_id,
                user_id=user_id,
                sku=sku,
                quantity=quantity,
                amount=amount,
                pay_later=pay_later,
            )
        )
        return order

    def complete(self) -> None:
        if self.status != "placed":
            raise IllegalTransition(f"cannot complete a {self.status} order")
        self.record(OrderCompleted())

    def cancel(self, reason: str) -> None:
        if self.status != "placed":
            raise IllegalTransition(f"cannot cancel a {self.status} order")
        self.record(OrderCancelled(reason=reason))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status = "placed"
        self.user_id, self.sku, self.quantity = event.user_id, event.sku, event.quantity
        self.amount, self.pay_later = event.amount, event.pay_later

    @applies(OrderCompleted)
    def _completed(self, event: OrderCompleted) -> None:
        self.status = "completed"

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


class Inventory(Aggregate):
    available: int
    reservations: dict[str, int]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.available = 0
        self.reservations = {}

    @classmethod
    def stock(cls, sku: str, quantity: int) -> Inventory:
        inventory = cls(sku)
        inventory.record(StockAdded(quantity=quantity))
        return inventory

    def reserve(self, order_id: str, quantity: int) -> None:
        if order_id in self.reservations:
            return  # already reserved for this order
        if quantity > self.available:
            raise InsufficientStock(f"{self.id}: {quantity} asked, {self.available} available")
        self.record(StockReserved(order_id=order_id, quantity=quantity))

    def release(self, order_id: str) -> None:
        if order_id in self.reservations:
            self.record(StockReleased(order_id=order_id, quantity=self.reservations[order_id]))

    @applies(StockAdded)
    def _added(self, event: StockAdded) -> None:
        self.available += event.quantity

    @applies(StockReserved)
    def _reserved(self, event: StockReserved) -> None:
        self.available -= event.quantity
        self.reservations[event.order_id] = event.quantity

    @applies(StockReleased)
    def _released(self, event: StockReleased) -> None:
        self.available += event.quantity
        del self.reservations[event.order_id]


class Wallet(Aggregate):
    balance: Decimal
    charges: dict[str, Decimal]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = Decimal(0)
        self.charges = {}

    @classmethod
    def open(cls, user_id: str, amount: Decimal) -> Wallet:
        wallet = cls(user_id)
        wallet.record(MoneyDeposited(amount=amount))
        return wallet

    def charge(self, order_id: str, amount: Decimal) -> None:
        if order_id in self.charges:
            return
        if amount > self.balance:
            raise InsufficientFunds(f"{self.id}: {amount} asked, {self.balance} available")
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
        self.balance += event.amount
        del self.charges[event.order_id]


class Shop:
    """Repositories of the three aggregates on one store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.orders = Repository(store, Order)
        self.inventory = Repository(store, Inventory)
        self.wallets = Repository(store, Wallet)


# -- choreography -------------------------------------------------------------------------

PAYMENT_TIMEOUT = timedelta(minutes=15)


class Fulfillment(Saga):
    """OrderPlaced -> reserve stock -> StockReserved -> charge -> PaymentCharged -> complete.
    Refusals compensate; an order not paid within 15 minutes is cancelled."""

    name = "fulfillment"
    categories = ("order", "inventory", "wallet")

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    @reacts_to(OrderPlaced)
    async def reserve_stock(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        event = record.event
        # Handled again after a crash, this must not act on an order that moved on meanwhile
        # (other orders' sagas run concurrently: stock refused then may be free now).
        if (await self.shop.orders.load(event.order_id)).status != "placed":
            return
        await ctx.schedule("payment_timeout", event.order_id, after=PAYMENT_TIMEOUT)
        try:
            await ctx.execute(
                self.shop.inventory, event.sku, lambda i: i.reserve(event.order_id, event.quantity)
            )
        except InsufficientStock as refusal:
            reason = str(refusal)
            await ctx.execute(self.shop.orders, event.order_id, lambda o: o.cancel(reason))

    @reacts_to(StockReserved)
    async def charge(self, record: RecordedEvent[StockReserved], ctx: SagaContext) -> None:
        order = await self.shop.orders.load(record.event.order_id)
        if order.status != "placed" or order.pay_later:
            return
        try:
            await ctx.execute(
                self.shop.wallets, order.user_id, lambda w: w.charge(order.id, order.amount)
            )
        except InsufficientFunds as refusal:
            reason = str(refusal)
            await ctx.execute(self.shop.inventory, order.sku, lambda i: i.release(order.id))
            await ctx.execute(self.shop.orders, order.id, lambda o: o.cancel(reason))

    @reacts_to(PaymentCharged)
    async def complete(self, record: RecordedEvent[PaymentCharged], ctx: SagaContext) -> None:
        order = await self.shop.orders.load(record.event.order_id)
        if order.status == "placed":
            await ctx.execute(self.shop.orders, order.id, lambda o: o.complete())
        elif order.status == "cancelled":  # paid too late: give the money back
            await ctx.execute(self.shop.wallets, order.user_id, lambda w: w.refund(order.id))
        await ctx.cancel("payment_timeout", order.id)

    @reacts_to(OrderCancelled)
    async def forget_timeout(self, record: RecordedEvent[OrderCancelled], ctx: SagaContext) -> None:
        await ctx.cancel("payment_timeout", record.stream_id.removeprefix("order-"))

    @on_deadline("payment_timeout")
    async def cancel_unpaid(self, deadline: Deadline, ctx: SagaContext) -> None:
        order = await self.shop.orders.load(deadline.key)
        if order.status != "placed":
            return
        await ctx.execute(self.shop.inventory, order.sku, lambda i: i.release(order.id))
        await ctx.execute(self.shop.orders, order.id, lambda o: o.cancel("payment timeout"))


# -- orchestration ------------------------------------------------------------------------


class OrderProcess(ProcessManager):
    """The same business transaction, orchestrated: reserve, charge, complete."""

    name = "orderprocess"
    categories = ("order",)
    starts_on = (OrderPlaced,)
    steps = (
        Step("reserve", compensation="release"),
        Step("charge", compensation="refund"),
        Step("complete"),
    )

    def __init__(self, shop: Shop) -> None:
        super().__init__(shop.store)
        self.shop = shop

    def key_for(self, record: RecordedEvent[Event]) -> str:
        return record.stream_id.removeprefix("order-")

    async def reserve(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        e = record.event
        await ctx.execute(self.shop.inventory, e.sku, lambda i: i.reserve(e.order_id, e.quantity))

    async def release(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        e = record.event
        await ctx.execute(self.shop.inventory, e.sku, lambda i: i.release(e.order_id))

    async def charge(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        e = record.event
        await ctx.execute(self.shop.wallets, e.user_id, lambda w: w.charge(e.order_id, e.amount))

    async def refund(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        e = record.event
        await ctx.execute(self.shop.wallets, e.user_id, lambda w: w.refund(e.order_id))

    async def complete(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        await ctx.execute(self.shop.orders, record.event.order_id, lambda o: o.complete())

    async def on_compensated(self, record: RecordedEvent[Event], ctx: SagaContext) -> None:
        order_id = record.stream_id.removeprefix("order-")
        await ctx.execute(self.shop.orders, order_id, lambda o: o.cancel("could not be fulfilled"))
