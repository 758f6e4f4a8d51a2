"""Sagas and process managers on the in-memory store: success, compensation, timeouts,
redelivery without double effects, parking."""

from __future__ import annotations

import asyncio
import collections
import random
from decimal import Decimal
from typing import Any

import pytest

from eventtape import (
    AppendResult,
    ConcurrencyError,
    Event,
    EventStore,
    InMemoryEventStore,
    ManualClock,
    RecordedEvent,
    Saga,
    SagaContext,
    SagaOptions,
    SagaRunner,
    reacts_to,
)
from eventtape.sinks.sqlite import SqliteSink
from tests.shop import (
    SHOP_REGISTRY,
    Fulfillment,
    Inventory,
    Order,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    OrderProcess,
    Shop,
    Wallet,
)


async def open_shop(store: EventStore) -> Shop:
    shop = Shop(store)
    await shop.inventory.save(Inventory.stock("mug", 10))
    await shop.wallets.save(Wallet.open("rich", Decimal("100")))
    await shop.wallets.save(Wallet.open("poor", Decimal("1")))
    return shop


async def place(
    shop: Shop, order_id: str, user: str, quantity: int = 2, pay_later: bool = False
) -> None:
    amount = Decimal("7.50") * quantity
    await shop.orders.save(Order.place(order_id, user, "mug", quantity, amount, pay_later))


async def settle(runner: SagaRunner, store: EventStore) -> None:
    """Wait until the sagas have handled everything, including what they caused."""
    while True:
        head = await store.head_position()
        await runner.wait_until(head, timeout=10)
        if await store.head_position() == head:
            return


async def event_counts(store: EventStore) -> collections.Counter[tuple[str, str]]:
    return collections.Counter([(r.stream_id, r.event_type) async for r in store.read_all()])


async def check_invariants(shop: Shop, initial_stock: int, deposits: Decimal) -> None:
    """Stock and money are conserved; every order ended completed or cancelled, with its
    compensations done."""
    inventory = await shop.inventory.load("mug")
    assert inventory.available + sum(inventory.reservations.values()) == initial_stock
    assert inventory.available >= 0
    balances = Decimal(0)
    charges: dict[str, Decimal] = {}
    for user in ("rich", "poor"):
        wallet = await shop.wallets.load(user)
        assert wallet.balance >= 0
        balances += wallet.balance
        charges.update(wallet.charges)
    assert balances + sum(charges.values()) == deposits
    async for record in shop.store.read_all(categories=["order"], event_types=[OrderPlaced]):
        order = await shop.orders.load(record.event.order_id)  # type: ignore[attr-defined]
        assert order.status in ("completed", "cancelled"), f"{order.id} is {order.status}"
        if order.status == "completed":
            assert order.id in inventory.reservations
            assert order.id in charges
        else:
            assert order.id not in inventory.reservations
            assert order.id not in charges
    counts = await event_counts(shop.store)
    assert all(n == 1 for (stream, kind), n in counts.items() if stream.startswith("order-")), (
        "an order event was recorded twice"
    )


@pytest.fixture
async def store() -> InMemoryEventStore:
    return InMemoryEventStore(SHOP_REGISTRY)


async def test_choreography_success_path(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        await place(shop, "1", "rich")
        await settle(runner, store)
        assert runner.pending_deadlines("fulfillment") == []
    assert (await shop.orders.load("1")).status == "completed"
    assert (await shop.inventory.load("mug")).available == 8
    assert (await shop.wallets.load("rich")).balance == Decimal("85.00")
    # Who and why: every event the saga caused says so, and shares the order's correlation.
    history = [r async for r in store.read_all()]
    placed = next(r for r in history if r.event_type == "OrderPlaced")
    caused = [
        r
        for r in history
        if r.actor == "system:fulfillment" and r.stream_id != "deadline-fulfillment"
    ]
    assert [r.event_type for r in caused] == ["StockReserved", "PaymentCharged", "OrderCompleted"]
    assert {r.correlation_id for r in caused} == {placed.correlation_id}
    assert caused[0].causation_id == str(placed.event_id)
    assert caused[1].causation_id == str(caused[0].event_id)
    await check_invariants(shop, 10, Decimal("101"))


async def test_choreography_compensates_refusals(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        await place(shop, "too-many", "rich", quantity=50)  # insufficient stock
        await place(shop, "too-poor", "poor", quantity=1)  # insufficient funds
        await settle(runner, store)
    too_many, too_poor = await shop.orders.load("too-many"), await shop.orders.load("too-poor")
    assert (too_many.status, too_poor.status) == ("cancelled", "cancelled")
    assert (await shop.inventory.load("mug")).available == 10  # reserved, then released
    counts = await event_counts(store)
    assert counts[("inventory-mug", "StockReserved")] == 1
    assert counts[("inventory-mug", "StockReleased")] == 1
    await check_invariants(shop, 10, Decimal("101"))


async def test_unpaid_order_times_out_after_a_restart(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    clock = ManualClock()
    checkpoints = SqliteSink(":memory:")
    async with SagaRunner(store, checkpoints, [Fulfillment(shop)], clock=clock) as runner:
        await place(shop, "1", "rich", pay_later=True)
        await settle(runner, store)
        (deadline,) = runner.pending_deadlines("fulfillment")
        assert (deadline.name, deadline.key) == ("payment_timeout", "1")
    # A new runner (a restart) finds the deadline in the store.
    async with SagaRunner(store, checkpoints, [Fulfillment(shop)], clock=clock) as runner:
        await clock.advance(minutes=14)
        assert (await shop.orders.load("1")).status == "placed"
        await clock.advance(minutes=2)
        await settle(runner, store)
        assert runner.pending_deadlines("fulfillment") == []
        await clock.advance(hours=1)
        await settle(runner, store)
    assert (await shop.orders.load("1")).status == "cancelled"
    assert (await shop.inventory.load("mug")).available == 10
    counts = await event_counts(store)
    assert counts[("deadline-fulfillment", "eventtape.DeadlineFired")] == 1
    assert counts[("order-1", "OrderCancelled")] == 1


async def test_timeout_does_not_fire_once_paid(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    clock = ManualClock()
    async with SagaRunner(
        store, SqliteSink(":memory:"), [Fulfillment(shop)], clock=clock
    ) as runner:
        await place(shop, "1", "rich", pay_later=True)
        await settle(runner, store)
        wallet = await shop.wallets.load("rich")
        wallet.charge("1", Decimal("15.00"))  # the customer pays by other means
        await shop.wallets.save(wallet)
        await settle(runner, store)
        assert runner.pending_deadlines("fulfillment") == []
        await clock.advance(hours=1)
        await settle(runner, store)
    assert (await shop.orders.load("1")).status == "completed"
    await check_invariants(shop, 10, Decimal("101"))


async def test_redelivered_events_issue_no_command_twice(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    checkpoints = SqliteSink(":memory:")
    async with SagaRunner(store, checkpoints, [Fulfillment(shop)]) as runner:
        for n in range(5):
            await place(shop, str(n), "rich" if n % 2 else "poor")
        await settle(runner, store)
    before = await event_counts(store)
    # As if the runner had crashed after the effects but before recording it was done.
    async with checkpoints.transaction() as tx:
        await checkpoints.save_position(tx, "fulfillment", "done", 0, 0)
    async with SagaRunner(store, checkpoints, [Fulfillment(shop)]) as runner:
        await settle(runner, store)
    assert await event_counts(store) == before
    await check_invariants(shop, 10, Decimal("101"))


async def test_orchestrated_process_success_and_compensation(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    process = OrderProcess(shop)
    async with SagaRunner(store, SqliteSink(":memory:"), [process]) as runner:
        await place(shop, "ok", "rich")
        await place(shop, "broke", "poor")
        await place(shop, "greedy", "rich", quantity=99)
        await settle(runner, store)
    ok, broke, greedy = [await process.instance(key) for key in ("ok", "broke", "greedy")]
    assert (ok.status, ok.completed) == ("completed", ["reserve", "charge", "complete"])
    assert (broke.status, broke.completed, broke.compensated) == (
        "compensated",
        ["reserve"],
        ["reserve"],
    )
    assert broke.reason is not None
    assert "charge" in broke.reason
    assert (greedy.status, greedy.completed) == ("compensated", [])
    statuses = [(await shop.orders.load(k)).status for k in ("ok", "broke", "greedy")]
    assert statuses == ["completed", "cancelled", "cancelled"]
    await check_invariants(shop, 10, Decimal("101"))


async def test_orchestration_resumes_half_way_without_repeating_steps(
    store: InMemoryEventStore,
) -> None:
    shop = await open_shop(store)
    process = OrderProcess(shop)
    checkpoints = SqliteSink(":memory:")
    async with SagaRunner(store, checkpoints, [process]) as runner:
        await place(shop, "1", "rich")
        await settle(runner, store)
    before = await event_counts(store)
    async with checkpoints.transaction() as tx:  # pretend the run died before "done"
        await checkpoints.save_position(tx, "orderprocess", "done", 0, 0)
    async with SagaRunner(store, checkpoints, [process]) as runner:
        await settle(runner, store)
    assert await event_counts(store) == before


class Flaky(Saga):
    """Fails on every order: the saga must park it, visibly, and go on."""

    name = "flaky"
    categories = ("order",)

    def __init__(self) -> None:
        self.calls = 0

    @reacts_to(OrderPlaced)
    async def explode(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        self.calls += 1
        if record.event.order_id == "bad":
            raise ConnectionError("payment service unreachable")


async def test_a_saga_that_keeps_failing_is_parked_not_dropped(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    flaky = Flaky()
    options = SagaOptions(max_attempts=3, backoff=0.001)
    async with SagaRunner(store, SqliteSink(":memory:"), [flaky], options=options) as runner:
        await place(shop, "bad", "rich")
        await place(shop, "good", "rich")
        await settle(runner, store)
        (parked,) = await runner.parked("flaky")
    assert parked.event_type == "OrderPlaced"
    assert parked.stream_id == "order-bad"
    assert "payment service unreachable" in parked.error
    assert flaky.calls == 3 + 1


async def test_a_new_saga_can_start_at_the_end_of_history(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    await place(shop, "old", "rich")  # before the saga was deployed
    options = SagaOptions(start="end")
    async with SagaRunner(
        store, SqliteSink(":memory:"), [Fulfillment(shop)], options=options
    ) as runner:
        await place(shop, "new", "rich")
        await settle(runner, store)
    assert (await shop.orders.load("old")).status == "placed"  # history left alone
    assert (await shop.orders.load("new")).status == "completed"


# -- concurrency ----------------------------------------------------------------------------


class Gate(Saga):
    """The first order's handler waits until the second order's handler has run: only a
    runner that handles different business transactions concurrently gets past it."""

    name = "gate"
    categories = ("order",)

    def __init__(self) -> None:
        self.second_seen = asyncio.Event()
        self.release_first = asyncio.Event()
        self.handled: list[str] = []

    @reacts_to(OrderPlaced)
    async def wait_for_the_other(
        self, record: RecordedEvent[OrderPlaced], ctx: SagaContext
    ) -> None:
        if record.event.order_id == "first":
            await self.release_first.wait()
        else:
            self.second_seen.set()
        self.handled.append(record.event.order_id)


async def test_different_transactions_run_concurrently_and_done_waits_for_the_slowest(
    store: InMemoryEventStore,
) -> None:
    shop = await open_shop(store)
    gate = Gate()
    async with SagaRunner(store, SqliteSink(":memory:"), [gate]) as runner:
        await place(shop, "first", "rich")
        first_at = await store.head_position()
        await place(shop, "second", "rich")
        try:
            # The second order is handled although the first is still in its handler ...
            await asyncio.wait_for(gate.second_seen.wait(), 5)
            assert gate.handled == ["second"]
            # ... but "done" stays before the first: a crash now must handle it again.
            await asyncio.sleep(0.05)
            assert runner.checkpoint("gate") < first_at
        finally:
            gate.release_first.set()
        await settle(runner, store)
        assert runner.checkpoint("gate") == await store.head_position()
    assert gate.handled == ["second", "first"]


async def test_concurrency_one_handles_in_store_order(store: InMemoryEventStore) -> None:
    shop = await open_shop(store)
    gate = Gate()
    options = SagaOptions(concurrency=1)
    async with SagaRunner(store, SqliteSink(":memory:"), [gate], options=options) as runner:
        await place(shop, "first", "rich")
        await place(shop, "second", "rich")
        await asyncio.sleep(0.1)
        assert gate.handled == []  # the second waits behind the first
        gate.release_first.set()
        await settle(runner, store)
    assert gate.handled == ["first", "second"]


class Recorder(Saga):
    """Records the order it handles events in, taking a random time over each."""

    name = "recorder"
    categories = ("order",)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seen: list[tuple[str, int]] = []
        self.running = 0
        self.most = 0

    @reacts_to(OrderPlaced, OrderCompleted, OrderCancelled)
    async def note(self, record: RecordedEvent[Event], ctx: SagaContext) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(self.rng.choice([0, 0, 0.001, 0.003]))
        self.seen.append((self.ordering_key(record), record.position))
        self.running -= 1


async def test_each_transaction_is_handled_in_order_within_the_bound(
    store: InMemoryEventStore,
) -> None:
    shop = await open_shop(store)
    recorder = Recorder(seed=3)
    options = SagaOptions(concurrency=4, batch_size=7)
    async with SagaRunner(store, SqliteSink(":memory:"), [recorder], options=options) as runner:
        for n in range(30):  # 30 transactions, placed, then completed or cancelled
            order = Order.place(str(n), "rich", "mug", 1, Decimal(1))
            await shop.orders.save(order, correlation_id=f"tx{n}")
        for n in range(30):
            order = await shop.orders.load(str(n))
            order.complete() if n % 3 else order.cancel("changed my mind")
            await shop.orders.save(order, correlation_id=f"tx{n}")
        await settle(runner, store)
    assert len(recorder.seen) == 60
    assert len({position for _, position in recorder.seen}) == 60  # each event once
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for key, position in recorder.seen:
        by_key[key].append(position)
    assert len(by_key) == 30
    assert all(positions == sorted(positions) for positions in by_key.values())
    assert 1 < recorder.most <= 4


def test_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        SagaOptions(concurrency=0)
    with pytest.raises(ValueError, match="batch_size"):
        SagaOptions(batch_size=0)
    with pytest.raises(TypeError, match="concurrency"):
        SagaOptions(concurrency="8")  # type: ignore[arg-type]


class SlowStore(InMemoryEventStore):
    """Every append takes a few event-loop turns (a round trip); counts refused ones."""

    def __init__(self) -> None:
        super().__init__(SHOP_REGISTRY)
        self.conflicts = 0
        self.reads: collections.Counter[str] = collections.Counter()

    def read_stream(self, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        self.reads[stream_id] += 1
        return super().read_stream(stream_id, *args, **kwargs)

    async def append(self, *args: Any, **kwargs: Any) -> AppendResult:
        for _ in range(3):
            await asyncio.sleep(0)
        try:
            return await super().append(*args, **kwargs)
        except ConcurrencyError:
            self.conflicts += 1
            raise


async def test_concurrent_commands_to_one_aggregate_take_turns() -> None:
    store = SlowStore()
    shop = await open_shop(store)
    async with SagaRunner(store, SqliteSink(":memory:"), [Fulfillment(shop)]) as runner:
        # Eight orders at once, all reserving the one mug.
        await asyncio.gather(*(place(shop, str(n), "rich", quantity=1) for n in range(8)))
        await settle(runner, store)
        assert await runner.parked("fulfillment") == []
    assert store.conflicts == 0  # no saga lost a race for the inventory's tail
    # A saga waiting for the inventory's turn starts from what the previous one saved.
    assert store.reads["inventory-mug"] < 8  # fewer loads than orders (8 without)
    await check_invariants(shop, 10, Decimal("101"))


class BrokenParking(SqliteSink):
    async def park(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")


async def test_a_runner_that_cannot_park_says_why_instead_of_hanging(
    store: InMemoryEventStore,
) -> None:
    shop = await open_shop(store)
    options = SagaOptions(max_attempts=1)
    runner = SagaRunner(store, BrokenParking(":memory:"), [Flaky()], options=options)
    await runner.start()
    try:
        await place(shop, "bad", "rich")
        with pytest.raises(OSError, match="disk full"):
            await runner.wait_until(await store.head_position(), timeout=5)
        assert runner.checkpoint("flaky") < await store.head_position()  # not "done"
    finally:
        await runner.aclose()


async def test_closing_a_runner_that_never_started_is_harmless(
    store: InMemoryEventStore,
) -> None:
    await SagaRunner(store, SqliteSink(":memory:"), [Flaky()]).aclose()
