"""The shop's HTTP API (FastAPI; OpenAPI at /docs). Amounts travel as strings.

Who may do what: a request carries ``Authorization: Bearer <token>``; the token names the
actor (``user:<id>`` or ``admin:<name>``), and that actor — never the request body — is recorded
on every event the request causes. A customer asking for another customer's order gets the same
404 as for an order that does not exist, so order ids cannot be probed.

Bodies are checked before parsing (`http_guard.BodyGuard`: size, media type, strict JSON) and
validated with strict types (`schemas`); errors speak the API's terms, never the store's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, HTTPException, Query
from pydantic import AwareDatetime

from eventtape import (
    Aggregate,
    AggregateNotFound,
    ConcurrencyError,
    Metadata,
    RecordedEvent,
    Repository,
    StreamNotFound,
    metadata_scope,
)

from .api_common import BODY, Actor, answers, event_out, install_error_handlers
from .console import mount_console
from .coupons import CouponRefused, Coupons, register_coupon_events
from .domain import (
    REGISTRY,
    CustomerErased,
    Delivery,
    Line,
    MoneyDeposited,
    Order,
    OrderCreated,
    Product,
    Wallet,
)
from .http_guard import MAX_BODY_BYTES, BodyGuard
from .metrics import mount_metrics
from .runtime import Settings, Shop
from .schemas import (
    CancelIn,
    Deposited,
    DepositIn,
    Erased,
    Health,
    IdempotencyKey,
    OrderAccepted,
    OrderChain,
    OrderHistory,
    OrderId,
    OrderIn,
    OrderOut,
    OrderPage,
    OrderThen,
    ProductHistory,
    ProductIn,
    ProductOut,
    ProductWritten,
    RestockIn,
    ShipIn,
    Sku,
    Status,
    UserId,
    WalletHistory,
    WalletOut,
)

A = TypeVar("A", bound=Aggregate)

MinPosition = Annotated[
    int | None, Query(ge=0, le=2**62, description="read your writes: wait for this position")
]


def idempotent_order_id(user_id: str, key: str) -> str:
    """The order id a customer's Idempotency-Key stands for: the same key, the same order.

    Derived, not stored: the order's own creation is the durable record of the key, so a
    retry after a crash or a restart finds it, and two racing requests with one key meet
    on one stream (one of them loses the append and finds the other's order).
    """
    return hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()[:32]


def create_app(
    settings: Settings | None = None, shop: Shop | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """Build the API around a shop (started and stopped with the app)."""
    shop = shop or Shop(settings or Settings.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await shop.start()
        try:
            yield
        finally:
            await shop.stop()

    # No redirects to the slash-less path: their Location is built from the Host header,
    # which the client chooses (an open redirect to any host).
    app = FastAPI(title="eventtape order shop", lifespan=lifespan, redirect_slashes=False)
    app.state.shop = shop
    register_coupon_events(REGISTRY)
    coupons = app.state.coupons = Coupons()
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes, exempt=("/console",))
    mount_console(app, shop)  # the web console for admins, at /console
    mount_metrics(app, shop)  # Prometheus GET /metrics for admins (eventtape[prometheus])

    install_error_handlers(app)

    def require_admin(who: str) -> None:
        if not who.startswith("admin:"):
            raise HTTPException(403, "only an admin may do this")

    def require_owner(who: str, user_id: str) -> None:
        if not owns(who, user_id):
            raise HTTPException(403, "this belongs to another customer")

    def owns(who: str, user_id: str) -> bool:
        return who.startswith("admin:") or who == f"user:{user_id}"

    async def command(
        who: str, repository: Repository[A], aggregate_id: str, change: Callable[[A], None]
    ) -> int:
        """Load, change, save as ``who``; reload and retry when another writer got first."""
        for _ in range(10):
            aggregate = await repository.load(aggregate_id)
            change(aggregate)
            try:
                with metadata_scope(actor=who, correlation_id=str(uuid.uuid4())):
                    result = await repository.save(aggregate)
            except ConcurrencyError:
                continue
            return result.position if result else 0
        raise ConcurrencyError(repository.stream_id(aggregate_id), 0, 0)

    async def create(who: str, repository: Repository[A], aggregate: A) -> int | None:
        """Save a new aggregate; ``None`` if one with its id exists already."""
        with metadata_scope(actor=who, correlation_id=str(uuid.uuid4())):
            try:
                result = await repository.save(aggregate)
            except ConcurrencyError:
                return None
        assert result is not None
        return result.position

    async def read(sql: str, *args: Any, min_position: int | None, projection: str) -> list[Any]:
        if min_position:
            if min_position > await shop.store.head_position():
                # Nobody was given this position: waiting for it would only hold a task for 5 s.
                raise HTTPException(422, f"no write has reached position {min_position}")
            # Only the projection that serves the query: the others never see P.
            await shop.projections.wait_until(min_position, projections=[projection], timeout=5)
        return list(await shop.sink.fetch(sql, *args))

    m = shop.mark
    prices: dict[str, Any] = {}

    # -- products --------------------------------------------------------------------------

    @app.post(
        "/products",
        status_code=201,
        response_model=ProductWritten,
        responses=answers(401, 403, 409, *BODY),
    )
    async def create_product(body: ProductIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        position = await create(who, shop.products, Product.create(body.sku, body.name, body.price))
        if position is None:
            raise HTTPException(409, f"product {body.sku} exists already")
        return {"sku": body.sku, "position": position}

    @app.post(
        "/products/{sku}/restock",
        response_model=ProductWritten,
        responses=answers(401, 403, 404, 409, *BODY),
    )
    async def restock(sku: Sku, body: RestockIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        position = await command(who, shop.products, sku, lambda p: p.restock(body.quantity))
        return {"sku": sku, "position": position}

    @app.get("/products/{sku}", response_model=ProductOut, responses=answers(401, 404, 422, 504))
    async def product(sku: Sku, who: Actor, min_position: MinPosition = None) -> dict[str, Any]:
        rows = await read(
            f"SELECT * FROM stock WHERE sku = {m(1)}",
            sku,
            min_position=min_position,
            projection="stock_view",
        )
        if not rows:
            raise HTTPException(404, f"no product {sku}")
        return dict(rows[0])

    @app.get(
        "/products/{sku}/history",
        response_model=ProductHistory,
        responses=answers(401, 403, 404, 422),
    )
    async def product_history(sku: Sku, who: Actor) -> dict[str, Any]:
        """Every stock movement: restocks, reservations, releases (compensations), shipments."""
        require_admin(who)  # it names every order that touched the product
        events = [event_out(r) async for r in shop.products.history(sku)]
        return {"sku": sku, "events": events}

    # -- wallets -----------------------------------------------------------------------------

    @app.post(
        "/wallets/{user_id}/deposit",
        response_model=Deposited,
        responses=answers(401, 403, 409, *BODY),
    )
    async def deposit(
        user_id: UserId,
        body: DepositIn,
        who: Actor,
        idempotency_key: Annotated[
            IdempotencyKey | None,
            Header(
                alias="Idempotency-Key",
                description="a retry with the same key and amount deposits nothing more; "
                "with another amount, a 409",
            ),
        ] = None,
    ) -> dict[str, Any]:
        require_owner(who, user_id)
        key = idempotency_key
        for _ in range(3):  # the first deposit creates the wallet: racing ones meet here
            try:
                position = await command(
                    who, shop.wallets, user_id, lambda w: w.deposit(body.amount, key)
                )
            except AggregateNotFound:
                wallet = Wallet(user_id)
                wallet.deposit(body.amount, key)
                created = await create(who, shop.wallets, wallet)
                if created is None:
                    continue  # another deposit created it first: deposit into it
                position = created
            if position == 0 and key is not None:  # a retry: answer with the first deposit
                async for record in shop.wallets.history(user_id):
                    event = record.event
                    if isinstance(event, MoneyDeposited) and event.deposit_key == key:
                        position = record.position
            return {"user_id": user_id, "position": position}
        raise HTTPException(409, "changed concurrently; retry")

    @app.get("/wallets/{user_id}", response_model=WalletOut, responses=answers(401, 403, 404, 422))
    async def wallet(user_id: UserId, who: Actor) -> dict[str, Any]:
        require_owner(who, user_id)
        try:
            found = await shop.wallets.load(user_id)
        except AggregateNotFound:
            raise HTTPException(404, f"no wallet for customer {user_id}") from None
        return {
            "user_id": user_id,
            "balance": str(found.balance),
            "charges": {order: str(amount) for order, amount in found.charges.items()},
        }

    @app.get(
        "/wallets/{user_id}/history",
        response_model=WalletHistory,
        responses=answers(401, 403, 404, 422),
    )
    async def wallet_history(user_id: UserId, who: Actor) -> dict[str, Any]:
        """Deposits, charges (PaymentCompleted) and refunds (compensations)."""
        require_owner(who, user_id)
        try:
            events = [event_out(r) async for r in shop.wallets.history(user_id)]
        except AggregateNotFound:
            raise HTTPException(404, f"no wallet for customer {user_id}") from None
        return {"user_id": user_id, "events": events}

    # -- orders ------------------------------------------------------------------------------

    @app.post(
        "/orders",
        status_code=202,
        response_model=OrderAccepted,
        responses=answers(401, 403, 409, *BODY),
    )
    async def place_order(
        body: OrderIn,
        who: Actor,
        idempotency_key: Annotated[
            IdempotencyKey | None,
            Header(
                alias="Idempotency-Key",
                description="the same key with the same body gives the same order; "
                "with another body, a 409",
            ),
        ] = None,
    ) -> dict[str, Any]:
        if not who.startswith("user:"):
            raise HTTPException(403, "orders are placed by customers")
        lines = []
        for item in body.items:
            price = prices.get(item.sku)
            if price is None:  # a product's price never changes: look it up once
                try:
                    price = prices[item.sku] = (await shop.products.load(item.sku)).price
                except AggregateNotFound:
                    raise HTTPException(422, f"unknown sku {item.sku}") from None
            lines.append(Line(sku=item.sku, quantity=item.quantity, price=price))
        user_id = who.removeprefix("user:")
        if idempotency_key is None:
            order_id = uuid.uuid4().hex[:12]
        else:
            order_id = idempotent_order_id(user_id, idempotency_key)
        delivery = None
        if body.delivery is not None:
            to = body.delivery
            delivery = Delivery(name=to.name, email=to.email, address=to.address)
        order = Order.place(order_id, user_id, lines, delivery)
        if any(line.quantity > 1000 for line in order.lines):
            raise HTTPException(422, "at most 1000 of one SKU per order")
        if body.coupon is not None:  # a rule across customers: a DCB decision (coupons.py)
            try:
                await coupons.redeem(shop.store, body.coupon, user_id, order_id, actor=who)  # type: ignore[arg-type]
            except CouponRefused as error:
                raise HTTPException(409, str(error)) from None
        position = await create(who, shop.orders, order)
        if position is None:
            if idempotency_key is None:
                raise HTTPException(409, "changed concurrently; retry")
            return await replayed(order)
        return {"order_id": order_id, "position": position}

    async def replayed(wanted: Order) -> dict[str, Any]:
        """The answer to a retried order: the stored one, if the retry asks for the same."""
        events = [r async for r in shop.orders.history(wanted.id)]  # an order has a few
        first = events[0]
        created = first.event
        assert isinstance(created, OrderCreated)
        if {(x.sku, x.quantity) for x in created.lines} != {
            (x.sku, x.quantity) for x in wanted.lines
        }:
            raise HTTPException(409, "this Idempotency-Key was used for a different order")
        return {"order_id": wanted.id, "position": first.position}

    async def owned_order(order_id: str, who: str, version: int | None = None) -> Order:
        """The order, if the caller may see it; else the same 404 as for no order at all."""
        try:
            order = await shop.orders.load(order_id, version=version)
        except AggregateNotFound:
            raise HTTPException(404, f"no order {order_id}") from None
        if not owns(who, order.user_id):
            raise HTTPException(404, f"no order {order_id}")
        return order

    @app.post(
        "/orders/{order_id}/cancel",
        status_code=202,
        response_model=OrderAccepted,
        responses=answers(401, 404, 409, *BODY),
    )
    async def cancel(order_id: OrderId, body: CancelIn, who: Actor) -> dict[str, Any]:
        await owned_order(order_id, who)
        position = await command(who, shop.orders, order_id, lambda o: o.cancel(body.reason))
        return {"order_id": order_id, "position": position}

    @app.post(
        "/orders/{order_id}/ship",
        status_code=202,
        response_model=OrderAccepted,
        responses=answers(401, 403, 404, 409, *BODY),
    )
    async def ship(order_id: OrderId, body: ShipIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        await owned_order(order_id, who)
        position = await command(who, shop.orders, order_id, lambda o: o.ship(body.tracking_number))
        return {"order_id": order_id, "position": position}

    def order_json(row: Any) -> dict[str, Any]:
        data = dict(row)
        data["items"] = json.loads(data["items"])
        return data

    async def order_then(order_id: str, who: str, version: int) -> dict[str, Any]:
        current = await owned_order(order_id, who)
        then = await owned_order(order_id, who, version=version)
        return {
            "order_id": order_id,
            "version": then.version,
            "latest_version": current.version,
            "status": then.status,
            "user_id": then.user_id,
            "amount": str(then.amount),
            "items": [line.model_dump(mode="json") for line in then.lines],
            "customer_name": then.customer_name,
            "email": then.email,
            "delivery_address": then.delivery_address,
        }

    @app.get(
        "/orders/{order_id}",
        response_model=OrderOut | OrderThen,
        responses=answers(401, 404, 422, 504),
    )
    async def get_order(
        order_id: OrderId,
        who: Actor,
        min_position: MinPosition = None,
        as_of_version: Annotated[
            int | None, Query(ge=1, le=2**31, description="the order as it was at version N")
        ] = None,
        as_of: Annotated[
            AwareDatetime | None,
            Query(description="the order as it was at this time (ISO 8601, with a timezone)"),
        ] = None,
    ) -> dict[str, Any]:
        if as_of_version is not None and as_of is not None:
            raise HTTPException(422, "give as_of or as_of_version, not both")
        if as_of_version is not None:
            return await order_then(order_id, who, as_of_version)
        if as_of is not None:
            await owned_order(order_id, who)
            version = await version_at(order_id, as_of)
            if version is None:
                raise HTTPException(404, f"order {order_id} did not exist at {as_of.isoformat()}")
            return await order_then(order_id, who, version)
        rows = await read(
            f"SELECT * FROM orders WHERE order_id = {m(1)}",
            order_id,
            min_position=min_position,
            projection="orders_view",
        )
        if not rows or not owns(who, rows[0]["user_id"]):
            raise HTTPException(404, f"no order {order_id}")
        return order_json(rows[0])

    async def version_at(order_id: str, when: datetime) -> int | None:
        version = None
        async for record in shop.orders.history(order_id):
            if record.recorded_at > when:
                break
            version = record.version
        return version

    @app.get("/orders", response_model=OrderPage, responses=answers(401, 403, 422, 504))
    async def list_orders(
        who: Actor,
        user_id: UserId | None = None,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: OrderId | None = None,
        min_position: MinPosition = None,
    ) -> dict[str, Any]:
        if not who.startswith("admin:"):
            own = who.removeprefix("user:")
            if user_id not in (None, own):
                raise HTTPException(403, "customers list their own orders")
            user_id = own
        conditions: list[str] = []
        args: list[Any] = []
        for column, value in (("user_id", user_id), ("status", status)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = {m(len(args))}")
        if cursor:
            args.append(cursor)
            conditions.append(f"order_id > {m(len(args))}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(limit + 1)
        rows = await read(
            f"SELECT * FROM orders {where} ORDER BY order_id LIMIT {m(len(args))}",
            *args,
            min_position=min_position,
            projection="orders_view",
        )
        page = [order_json(row) for row in rows[:limit]]
        return {"orders": page, "next_cursor": page[-1]["order_id"] if len(rows) > limit else None}

    @app.get(
        "/orders/{order_id}/history",
        response_model=OrderHistory,
        responses=answers(401, 404, 422),
    )
    async def history(order_id: OrderId, who: Actor) -> dict[str, Any]:
        await owned_order(order_id, who)
        events = [event_out(r) async for r in shop.orders.history(order_id)]
        return {"order_id": order_id, "events": events}

    @app.get(
        "/orders/{order_id}/chain",
        response_model=OrderChain,
        responses=answers(401, 404, 422),
    )
    async def chain(
        order_id: OrderId,
        who: Actor,
        correlation_id: Annotated[
            str | None,
            Query(max_length=100, description="only the chain of this correlation id"),
        ] = None,
    ) -> dict[str, Any]:
        """The support view: every event this order set off, across order, stock and wallet.

        An event belongs to the chain when it shares a correlation id with one of the order's
        own events: the saga passes the id on from each event to the commands it causes, so
        reservations, charges and their compensations all carry one. With ``correlation_id``,
        only that chain (say, what one cancellation undid). Reads the order's products' and
        wallet's streams: a support tool, not a hot path.
        """
        order = await owned_order(order_id, who)
        own = [r async for r in shop.orders.history(order_id)]
        correlations = sorted({r.correlation_id for r in own if r.correlation_id})
        if correlation_id is not None:
            if correlation_id not in correlations:
                raise HTTPException(404, f"order {order_id} has no chain {correlation_id!r}")
            correlations = [correlation_id]
            own = [r for r in own if r.correlation_id == correlation_id]
        found = [("order", order_id, r) for r in own]
        related: list[tuple[str, str, Repository[Any]]] = [
            ("product", line.sku, shop.products) for line in order.lines
        ]
        related.append(("wallet", order.user_id, shop.wallets))
        for kind, aggregate_id, repository in related:
            with contextlib.suppress(AggregateNotFound):  # no wallet: nothing was charged
                async for r in repository.history(aggregate_id):
                    if r.correlation_id in correlations:
                        found.append((kind, aggregate_id, r))
        found.sort(key=lambda item: item[2].position)
        events = [
            {**event_out(r), "aggregate": kind, "id": aggregate_id}
            for kind, aggregate_id, r in found
        ]
        return {"order_id": order_id, "correlation_ids": correlations, "events": events}

    # -- customers' personal data ---------------------------------------------------------------

    async def erasure_of(user_id: str) -> RecordedEvent[Any] | None:
        """The customer's recorded erasure, if any (there is at most one)."""
        try:
            async for record in shop.store.read_stream(f"customer-{user_id}", limit=1):
                return record
        except StreamNotFound:
            pass
        return None

    async def known_customer(user_id: str) -> bool:
        """Whether the shop holds anything of this customer: a key, a wallet or an order."""
        if await shop.keys.existing_key(f"customer:{user_id}") is not None:
            return True
        if await shop.store.stream_version(shop.wallets.stream_id(user_id)) > 0:
            return True
        rows = await shop.sink.fetch(
            f"SELECT 1 FROM orders WHERE user_id = {m(1)} LIMIT 1", user_id
        )
        return bool(rows)

    @app.post(
        "/customers/{user_id}/erase",
        response_model=Erased,
        responses=answers(401, 403, 404, *BODY),
    )
    async def erase_customer(user_id: UserId, who: Actor) -> dict[str, Any]:
        """Erase a customer's personal data (the right to erasure): admins only, idempotent.

        Destroys the customer's key, so their names, e-mails and delivery addresses read as
        ``[forgotten]`` everywhere (history, chain, the console, the read model), then records
        who erased them, once. Orders, amounts and who did what stay.
        """
        require_admin(who)
        erased = await erasure_of(user_id)
        if erased is None and not await known_customer(user_id):
            raise HTTPException(404, f"no customer {user_id}")
        # The key first: a crash after it leaves the data erased, and a retry records it.
        # Recorded after: the read model masks its copies when it sees the erasure, by which
        # time every read of the events is masked too.
        await shop.store.forget(f"customer:{user_id}")
        if erased is None:
            with contextlib.suppress(ConcurrencyError):  # another admin's erasure got first
                await shop.store.append(
                    f"customer-{user_id}",
                    [CustomerErased(customer_id=user_id)],
                    expected_version=0,
                    metadata=Metadata(actor=who, correlation_id=str(uuid.uuid4())),
                )
            erased = await erasure_of(user_id)
            assert erased is not None
        return {
            "user_id": user_id,
            "erased_by": erased.actor,
            "erased_at": erased.recorded_at,
            "position": erased.position,
        }

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        head = await shop.store.head_position()
        projections = [
            {
                "name": s.name,
                "state": s.state,
                "lag_events": s.lag_events,
                "lag_seconds": s.lag_seconds,
            }
            for s in await shop.projections.status()
        ]
        return {
            "store": "ok",
            "head_position": head,
            "read_model": projections,
            "saga_backlog_events": shop.sagas.backlog("fulfillment"),
            "parked_saga_events": len(await shop.sagas.parked("fulfillment")),
        }

    return app
