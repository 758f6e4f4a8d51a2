"""Order fulfilment, choreographed: each event leads to the next command, refusals compensate.

OrderCreated -> reserve every line (InventoryReserved) -> OrderStockReserved -> charge the
wallet (PaymentCompleted) -> the order is paid. Out of stock, a refused payment (PaymentFailed),
or no payment within the timeout cancel the order (OrderCancelled); a cancelled order releases
its stock (InventoryReleased) and refunds its payment. Shipping an order moves its reserved
stock to shipped.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from eventtape import (
    AggregateNotFound,
    Deadline,
    RecordedEvent,
    Repository,
    Saga,
    SagaContext,
    on_deadline,
    reacts_to,
)

from .domain import (
    IllegalTransition,
    InsufficientFunds,
    InsufficientStock,
    Order,
    OrderCancelled,
    OrderCreated,
    OrderShipped,
    OrderStockReserved,
    PaymentCompleted,
    Product,
    Wallet,
)


class Fulfillment(Saga):
    """The order saga; acts as ``system:fulfillment``."""

    name = "fulfillment"
    categories = ("order", "wallet")

    def __init__(
        self,
        orders: Repository[Order],
        products: Repository[Product],
        wallets: Repository[Wallet],
        payment_timeout: timedelta,
    ) -> None:
        self.orders, self.products, self.wallets = orders, products, wallets
        self.payment_timeout = payment_timeout

    @reacts_to(OrderCreated)
    async def reserve_stock(self, record: RecordedEvent[OrderCreated], ctx: SagaContext) -> None:
        event = record.event
        if (await self.orders.load(event.order_id)).status != "placed":
            return  # cancelled before the saga got to it: nothing to reserve
        await ctx.schedule("payment_timeout", event.order_id, after=self.payment_timeout)
        try:
            for line in event.lines:
                await ctx.scope(f"reserve:{line.sku}").execute(
                    self.products, line.sku, lambda p, q=line.quantity: p.reserve(event.order_id, q)
                )
        except InsufficientStock as refusal:
            reason = f"out of stock: {refusal}"
            with contextlib.suppress(IllegalTransition):  # cancelled meanwhile: same outcome
                await ctx.scope("cancel").execute(
                    self.orders, event.order_id, lambda o: o.cancel(reason)
                )
            return
        # Cancelled meanwhile? Then its OrderCancelled, handled next, releases what we reserved.
        with contextlib.suppress(IllegalTransition):
            await ctx.scope("reserved").execute(
                self.orders, event.order_id, lambda o: o.stock_reserved()
            )

    @reacts_to(OrderStockReserved)
    async def charge(self, record: RecordedEvent[OrderStockReserved], ctx: SagaContext) -> None:
        order = await self.orders.load(record.stream_id.removeprefix("order-"))
        if order.status != "reserved":
            return
        try:
            await ctx.execute(
                self.wallets, order.user_id, lambda w: w.charge(order.id, order.amount)
            )
        except (InsufficientFunds, AggregateNotFound) as refusal:
            # In the customer's words: never an internal stream name such as 'wallet-42'.
            reason = str(refusal) if isinstance(refusal, InsufficientFunds) else "no wallet"
            with contextlib.suppress(IllegalTransition):
                await ctx.execute(self.orders, order.id, lambda o: o.payment_failed(reason))

    @reacts_to(PaymentCompleted)
    async def mark_paid(self, record: RecordedEvent[PaymentCompleted], ctx: SagaContext) -> None:
        order = await self.orders.load(record.event.order_id)
        if order.status == "reserved":
            try:
                await ctx.execute(self.orders, order.id, lambda o: o.pay(record.event.amount))
            except IllegalTransition:  # cancelled meanwhile: give the money back
                await ctx.scope("refund").execute(
                    self.wallets, order.user_id, lambda w: w.refund(order.id)
                )
                return
            await ctx.cancel("payment_timeout", order.id)
        elif order.status == "cancelled":  # charged after it was cancelled: give it back
            await ctx.execute(self.wallets, order.user_id, lambda w: w.refund(order.id))

    @reacts_to(OrderShipped)
    async def ship_stock(self, record: RecordedEvent[OrderShipped], ctx: SagaContext) -> None:
        order = await self.orders.load(record.stream_id.removeprefix("order-"))
        for line in order.lines:
            await ctx.scope(f"ship:{line.sku}").execute(
                self.products, line.sku, lambda p: p.ship(order.id)
            )

    @reacts_to(OrderCancelled)
    async def compensate(self, record: RecordedEvent[OrderCancelled], ctx: SagaContext) -> None:
        order = await self.orders.load(record.stream_id.removeprefix("order-"))
        for line in order.lines:
            await ctx.scope(f"release:{line.sku}").execute(
                self.products, line.sku, lambda p: p.release(order.id)
            )
        try:
            await ctx.scope("refund").execute(
                self.wallets, order.user_id, lambda w: w.refund(order.id)
            )
        except AggregateNotFound:
            pass  # no wallet: nothing was charged
        await ctx.scope("timeout").cancel("payment_timeout", order.id)

    @on_deadline("payment_timeout")
    async def cancel_unpaid(self, deadline: Deadline, ctx: SagaContext) -> None:
        order = await self.orders.load(deadline.key)
        if order.status in ("placed", "reserved"):
            with contextlib.suppress(IllegalTransition):
                await ctx.execute(self.orders, order.id, lambda o: o.cancel("payment timeout"))
