"""Core suite: eventtape's in-memory store and repository against the ``eventsourcing`` library.

Identical work on both sides, with each library's in-memory persistence (eventtape's
``InMemoryEventStore`` in its default round-trip mode, eventsourcing's POPO recorder): an order
aggregate placed by a user, then items added. The state stays small however long the stream
(quantities per SKU and a running total), so load figures measure replay and snapshots, not
the size of the state.

Figures: ``save_each_command`` and ``save_once`` (events/s), ``load_1000``, ``load_10000``,
``load_1000_snapshot``, ``load_10000_snapshot`` (ms per load) and ``memory_append``
(single-event appends/s, no baseline: the target is an absolute 100,000/s).
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event as es_event

from eventtape import (
    Aggregate,
    DomainError,
    Event,
    EventRegistry,
    InMemoryEventStore,
    InMemorySnapshotStore,
    Repository,
    applies,
)

from ._harness import best_seconds, emit

SUITE = "core"
SKUS = ["apple", "pear", "plum", "fig", "kiwi"]
PRICE = Decimal("1.25")

# -- eventtape side --------------------------------------------------------------------------


class OrderPlaced(Event):
    user_id: str


class ItemAdded(Event):
    sku: str
    quantity: int
    price: Decimal


class Order(Aggregate):
    user_id: str
    quantities: dict[str, int]
    total: Decimal

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.user_id = ""
        self.quantities = {}
        self.total = Decimal(0)

    @classmethod
    def place(cls, order_id: str, user_id: str) -> Order:
        order = cls(order_id)
        order.record(OrderPlaced(user_id=user_id))
        return order

    def add_item(self, sku: str, quantity: int, price: Decimal) -> None:
        if quantity <= 0:
            raise DomainError("quantity must be positive")
        self.record(ItemAdded(sku=sku, quantity=quantity, price=price))

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.user_id = event.user_id

    @applies(ItemAdded)
    def _item_added(self, event: ItemAdded) -> None:
        self.quantities[event.sku] = self.quantities.get(event.sku, 0) + event.quantity
        self.total += event.price * event.quantity


REGISTRY = EventRegistry([OrderPlaced, ItemAdded])

# -- eventsourcing side (the same aggregate) ---------------------------------------------


class EsOrder(EsAggregate):
    @es_event("Placed")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.quantities: dict[str, int] = {}
        self.total = Decimal(0)

    def add_item(self, sku: str, quantity: int, price: Decimal) -> None:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self._item_added(sku, quantity, price)

    @es_event("ItemAdded")
    def _item_added(self, sku: str, quantity: int, price: Decimal) -> None:
        self.quantities[sku] = self.quantities.get(sku, 0) + quantity
        self.total += price * quantity


def es_app(snapshotting: bool = False) -> Application:
    env = {"IS_SNAPSHOTTING_ENABLED": "y"} if snapshotting else {}
    return Application(env=env)


# -- figures -----------------------------------------------------------------------------


def commands_figures(runner: asyncio.Runner, orders_per_round: int, rounds: int) -> None:
    events = orders_per_round * 5

    def eventtape_each() -> None:
        async def work() -> None:
            repo = Repository(InMemoryEventStore(REGISTRY), Order)
            for n in range(orders_per_round):
                order_id = str(n)
                await repo.save(Order.place(order_id, "user"))
                for k in range(4):
                    order = await repo.load(order_id)
                    order.add_item(SKUS[k], 1, PRICE)
                    await repo.save(order)

        runner.run(work())

    def es_each() -> None:
        app = es_app()
        for _ in range(orders_per_round):
            order = EsOrder(user_id="user")
            app.save(order)
            for k in range(4):
                loaded: Any = app.repository.get(order.id)
                loaded.add_item(SKUS[k], 1, PRICE)
                app.save(loaded)

    def eventtape_once() -> None:
        async def work() -> None:
            repo = Repository(InMemoryEventStore(REGISTRY), Order)
            for n in range(orders_per_round):
                order = Order.place(str(n), "user")
                for k in range(4):
                    order.add_item(SKUS[k], 1, PRICE)
                await repo.save(order)

        runner.run(work())

    def es_once() -> None:
        app = es_app()
        for _ in range(orders_per_round):
            order = EsOrder(user_id="user")
            for k in range(4):
                order.add_item(SKUS[k], 1, PRICE)
            app.save(order)

    for name, ours, theirs in (
        ("save_each_command", eventtape_each, es_each),
        ("save_once", eventtape_once, es_once),
    ):
        ours_s, theirs_s = interleaved(ours, theirs, rounds)
        emit(
            SUITE, name, "events/s", "higher", events / ours_s, ("eventsourcing", events / theirs_s)
        )


def load_figures(runner: asyncio.Runner, sizes: list[int], rounds: int) -> None:
    for size in sizes:
        # eventtape: one stream of `size` events, a snapshot of it in a separate repository.
        store, snapshots = InMemoryEventStore(REGISTRY), InMemorySnapshotStore()
        plain = Repository(store, Order)
        snapshotting = Repository(store, Order, snapshots=snapshots)
        order = Order.place("big", "user")
        for n in range(size - 1):
            order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
        runner.run(plain.save(order))
        runner.run(snapshotting.take_snapshot(order))

        app, snap_app = es_app(), es_app(snapshotting=True)
        es_order = EsOrder(user_id="user")
        for n in range(size - 1):
            es_order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
        pending = es_order.collect_events()
        app.recorder.insert_events([app.mapper.to_stored_event(e) for e in pending])
        snap_app.recorder.insert_events([snap_app.mapper.to_stored_event(e) for e in pending])
        snap_app.take_snapshot(es_order.id)

        expected_total = PRICE * (size - 1)
        check(runner.run(plain.load("big")).total, expected_total)
        check(runner.run(snapshotting.load("big")).total, expected_total)
        check(app.repository.get(es_order.id).total, expected_total)
        check(snap_app.repository.get(es_order.id).total, expected_total)

        # Enough loads per timing that the event loop's start-up cost is noise.
        for name, ours_repo, their_app, repeat in (
            (f"load_{size}", plain, app, max(1, 20_000 // size)),
            (f"load_{size}_snapshot", snapshotting, snap_app, 500),
        ):

            def ours(repo: Repository[Order] = ours_repo, repeat: int = repeat) -> None:
                async def work() -> None:
                    for _ in range(repeat):
                        await repo.load("big")

                runner.run(work())

            def theirs(
                application: Application = their_app,
                repeat: int = repeat,
                order_id: Any = es_order.id,
            ) -> None:
                for _ in range(repeat):
                    application.repository.get(order_id)

            ours_s, theirs_s = interleaved(ours, theirs, rounds)
            emit(
                SUITE,
                name,
                "ms",
                "lower",
                ours_s / repeat * 1000,
                ("eventsourcing", theirs_s / repeat * 1000),
            )


def memory_append_figure(runner: asyncio.Runner, appends: int, rounds: int) -> None:
    events = [OrderPlaced(user_id=f"u{n % 100}") for n in range(appends)]
    streams = [f"order-{uuid.uuid4().hex}" for _ in range(1000)]

    def ours() -> None:
        async def work() -> None:
            store = InMemoryEventStore(REGISTRY)
            for n, event in enumerate(events):
                await store.append(streams[n % 1000], [event])

        runner.run(work())

    emit(SUITE, "memory_append", "events/s", "higher", appends / best_seconds(ours, rounds))


def telemetry_idle_figure(runner: asyncio.Runner, appends: int, rounds: int) -> None:
    """What the OpenTelemetry hooks cost with the API installed but no provider set.

    Baseline: the same appends with the hooks switched off, as if the API were not installed.
    A ratio near 1.0 means "nothing measurable".
    """
    from eventtape._core import telemetry

    events = [OrderPlaced(user_id=f"u{n % 100}") for n in range(appends)]

    def appending() -> None:
        async def work() -> None:
            store = InMemoryEventStore(REGISTRY)
            for n, event in enumerate(events):
                await store.append(f"order-{n % 1000}", [event])

        runner.run(work())

    def without_api() -> None:
        saved = telemetry._trace, telemetry._metrics
        telemetry._trace, telemetry._metrics = None, None  # type: ignore[assignment]
        try:
            appending()
        finally:
            telemetry._trace, telemetry._metrics = saved

    if telemetry._trace is None:
        return  # the API is not installed: nothing to compare
    hooked, bare = interleaved(appending, without_api, rounds)
    emit(
        SUITE,
        "memory_append_otel_api_no_provider",
        "events/s",
        "higher",
        appends / hooked,
        ("same appends, hooks off", appends / bare),
    )


def interleaved(ours: Any, theirs: Any, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` seconds for each side, alternating sides round by round."""
    ours_best = theirs_best = float("inf")
    for _ in range(rounds):
        ours_best = min(ours_best, best_seconds(ours, 1))
        theirs_best = min(theirs_best, best_seconds(theirs, 1))
    return ours_best, theirs_best


def check(actual: object, expected: object) -> None:
    """Refuse to report figures for work that did not produce the right state."""
    if actual != expected:
        raise AssertionError(f"benchmark state is wrong: {actual!r} != {expected!r}")


def run(*, quick: bool) -> None:
    """Print every figure of the core suite."""
    with asyncio.Runner() as runner:
        if quick:
            commands_figures(runner, orders_per_round=200, rounds=2)
            load_figures(runner, sizes=[1000, 10_000], rounds=2)
            memory_append_figure(runner, appends=20_000, rounds=2)
            telemetry_idle_figure(runner, appends=20_000, rounds=3)
        else:
            commands_figures(runner, orders_per_round=2000, rounds=5)
            load_figures(runner, sizes=[1000, 10_000], rounds=5)
            memory_append_figure(runner, appends=200_000, rounds=5)
            telemetry_idle_figure(runner, appends=100_000, rounds=5)
