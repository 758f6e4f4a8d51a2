"""The shop's HTTP API (FastAPI; OpenAPI at /docs). Amounts travel as strings.

Who may do what: a request carries ``Authorization: Bearer <token>``; the token names the
actor (``user:<id>`` or ``admin:<name>``), and that actor — never the request body — is recorded
on every event the request causes.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field

from eventtape import (
    Aggregate,
    AggregateNotFound,
    ConcurrencyError,
    InvalidStreamId,
    ProjectionTimeout,
    Repository,
    metadata_scope,
)

from .console import mount_console
from .domain import IllegalTransition, Line, Order, Product, ShopError, Wallet
from .runtime import Settings, Shop

A = TypeVar("A", bound=Aggregate)


def _amount_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('amounts are JSON strings, such as "12.50"')
    return value


Amount = Annotated[
    Decimal, BeforeValidator(_amount_text), Field(gt=0, max_digits=12, decimal_places=2)
]
Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]


class ProductIn(BaseModel):
    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    price: Amount


class RestockIn(BaseModel):
    quantity: int = Field(gt=0, le=1_000_000)


class DepositIn(BaseModel):
    amount: Amount


class ItemIn(BaseModel):
    sku: Sku
    quantity: int = Field(gt=0, le=1000)


class OrderIn(BaseModel):
    items: list[ItemIn] = Field(min_length=1, max_length=50)


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class ShipIn(BaseModel):
    tracking_number: str = Field(min_length=1, max_length=100)


def _actor(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The authenticated actor, from the bearer token (401 without a valid one)."""
    scheme, _, token = (authorization or "").partition(" ")
    tokens = request.app.state.shop.settings.tokens
    found = tokens.get(token) if scheme.lower() == "bearer" else None
    if found is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    return str(found)


Actor = Annotated[str, Depends(_actor)]


def create_app(settings: Settings | None = None, shop: Shop | None = None) -> FastAPI:
    """Build the API around a shop (started and stopped with the app)."""
    shop = shop or Shop(settings or Settings.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await shop.start()
        try:
            yield
        finally:
            await shop.stop()

    app = FastAPI(title="eventtape order shop", lifespan=lifespan)
    app.state.shop = shop
    mount_console(app, shop)  # the web console for admins, at /console

    @app.exception_handler(IllegalTransition)
    async def illegal(request: Request, error: IllegalTransition) -> JSONResponse:
        return JSONResponse({"detail": str(error), "status": error.status}, status_code=409)

    @app.exception_handler(ShopError)
    async def refused(request: Request, error: ShopError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(AggregateNotFound)
    async def not_found(request: Request, error: AggregateNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(InvalidStreamId)
    async def bad_id(request: Request, error: InvalidStreamId) -> JSONResponse:
        return JSONResponse({"detail": f"invalid id: {error.reason}"}, status_code=422)

    @app.exception_handler(ConcurrencyError)
    async def conflict(request: Request, error: ConcurrencyError) -> JSONResponse:
        return JSONResponse({"detail": "changed concurrently; retry"}, status_code=409)

    @app.exception_handler(ProjectionTimeout)
    async def lagging(request: Request, error: ProjectionTimeout) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=504)

    def require_admin(who: str) -> None:
        if not who.startswith("admin:"):
            raise HTTPException(403, "only an admin may do this")

    def require_owner(who: str, user_id: str) -> None:
        if not who.startswith("admin:") and who != f"user:{user_id}":
            raise HTTPException(403, "this belongs to another customer")

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

    async def create(who: str, repository: Repository[A], make: Callable[[], A]) -> int:
        aggregate = make()
        with metadata_scope(actor=who, correlation_id=str(uuid.uuid4())):
            try:
                result = await repository.save(aggregate)
            except ConcurrencyError:
                raise HTTPException(409, f"{aggregate.id} exists already") from None
        assert result is not None
        return result.position

    async def read(sql: str, *args: Any, min_position: int | None = None) -> list[Any]:
        if min_position:
            await shop.projections.wait_until(min_position, timeout=5)
        return list(await shop.sink.fetch(sql, *args))

    m = shop.mark
    prices: dict[str, Decimal] = {}

    # -- products --------------------------------------------------------------------------

    @app.post("/products", status_code=201)
    async def create_product(body: ProductIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        position = await create(
            who, shop.products, lambda: Product.create(body.sku, body.name, body.price)
        )
        return {"sku": body.sku, "position": position}

    @app.post("/products/{sku}/restock")
    async def restock(sku: Sku, body: RestockIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        position = await command(who, shop.products, sku, lambda p: p.restock(body.quantity))
        return {"sku": sku, "position": position}

    @app.get("/products/{sku}")
    async def product(sku: Sku, who: Actor, min_position: int | None = None) -> dict[str, Any]:
        rows = await read(f"SELECT * FROM stock WHERE sku = {m(1)}", sku, min_position=min_position)
        if not rows:
            raise HTTPException(404, f"no product {sku}")
        row = dict(rows[0])
        return row

    # -- wallets -----------------------------------------------------------------------------

    @app.post("/wallets/{user_id}/deposit")
    async def deposit(user_id: str, body: DepositIn, who: Actor) -> dict[str, Any]:
        shop.wallets.stream_id(user_id)
        require_owner(who, user_id)
        try:
            position = await command(who, shop.wallets, user_id, lambda w: w.deposit(body.amount))
        except AggregateNotFound:
            wallet = Wallet(user_id)
            wallet.deposit(body.amount)
            position = await create(who, shop.wallets, lambda: wallet)
        return {"user_id": user_id, "position": position}

    @app.get("/wallets/{user_id}")
    async def wallet(user_id: str, who: Actor) -> dict[str, Any]:
        require_owner(who, user_id)
        found = await shop.wallets.load(user_id)
        return {
            "user_id": user_id,
            "balance": str(found.balance),
            "charges": {order: str(amount) for order, amount in found.charges.items()},
        }

    # -- orders ------------------------------------------------------------------------------

    @app.post("/orders", status_code=202)
    async def place_order(body: OrderIn, who: Actor) -> dict[str, Any]:
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
        order_id = uuid.uuid4().hex[:12]
        user_id = who.removeprefix("user:")
        position = await create(who, shop.orders, lambda: Order.place(order_id, user_id, lines))
        return {"order_id": order_id, "position": position}

    async def owned_order(order_id: str, who: str) -> Order:
        order = await shop.orders.load(order_id)
        require_owner(who, order.user_id)
        return order

    @app.post("/orders/{order_id}/cancel", status_code=202)
    async def cancel(order_id: str, body: CancelIn, who: Actor) -> dict[str, Any]:
        await owned_order(order_id, who)
        position = await command(who, shop.orders, order_id, lambda o: o.cancel(body.reason))
        return {"order_id": order_id, "position": position}

    @app.post("/orders/{order_id}/ship", status_code=202)
    async def ship(order_id: str, body: ShipIn, who: Actor) -> dict[str, Any]:
        require_admin(who)
        position = await command(who, shop.orders, order_id, lambda o: o.ship(body.tracking_number))
        return {"order_id": order_id, "position": position}

    def order_json(row: Any) -> dict[str, Any]:
        data = dict(row)
        data["items"] = json.loads(data["items"])
        return data

    @app.get("/orders/{order_id}")
    async def get_order(
        order_id: str,
        who: Actor,
        min_position: int | None = None,
        as_of_version: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        shop.orders.stream_id(order_id)  # an invalid id is a 422, not a 404
        if as_of_version is not None:
            current = await owned_order(order_id, who)
            then = await shop.orders.load(order_id, version=as_of_version)
            return {
                "order_id": order_id,
                "version": then.version,
                "latest_version": current.version,
                "status": then.status,
                "user_id": then.user_id,
                "amount": str(then.amount),
                "items": [line.model_dump(mode="json") for line in then.lines],
            }
        rows = await read(
            f"SELECT * FROM orders WHERE order_id = {m(1)}", order_id, min_position=min_position
        )
        if not rows:
            raise HTTPException(404, f"no order {order_id}")
        order = order_json(rows[0])
        require_owner(who, order["user_id"])
        return order

    @app.get("/orders")
    async def list_orders(
        who: Actor,
        user_id: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
        min_position: int | None = None,
    ) -> dict[str, Any]:
        if not who.startswith("admin:"):
            own = who.removeprefix("user:")
            if user_id not in (None, own):
                raise HTTPException(403, "customers list their own orders")
            user_id = own
        conditions, args = [], []
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
        )
        page = [order_json(row) for row in rows[:limit]]
        return {"orders": page, "next_cursor": page[-1]["order_id"] if len(rows) > limit else None}

    @app.get("/orders/{order_id}/history")
    async def history(order_id: str, who: Actor) -> dict[str, Any]:
        await owned_order(order_id, who)
        events = [
            {
                "version": r.version,
                "type": r.event_type,
                "data": r.event.model_dump(mode="json"),
                "actor": r.actor,
                "recorded_at": r.recorded_at.isoformat(),
                "causation_id": r.causation_id,
                "correlation_id": r.correlation_id,
                "position": r.position,
            }
            async for r in shop.orders.history(order_id)
        ]
        return {"order_id": order_id, "events": events}

    @app.get("/health")
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
            "saga_backlog_positions": head - shop.sagas.checkpoint("fulfillment"),
            "parked_saga_events": len(await shop.sagas.parked("fulfillment")),
        }

    return app
