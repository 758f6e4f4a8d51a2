"""Random failures and restarts never break a saga's invariants: money and stock are
conserved, every order ends completed or cancelled with its compensations done, and no
command is applied twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from eventtape import (
    AppendResult,
    Event,
    ExpectedVersion,
    InMemoryEventStore,
    Metadata,
    NewEvent,
    SagaOptions,
    SagaRunner,
    StoreUnavailable,
    StreamState,
)
from eventtape.sinks.sqlite import SqliteSink
from tests.shop import SHOP_REGISTRY, Fulfillment, OrderProcess
from tests.test_sagas import check_invariants, open_shop, place, settle


class FaultyStore(InMemoryEventStore):
    """Fails some appends made by sagas: before storing them, or after (a lost ack); every
    append takes a random number of event-loop turns, as a round trip would."""

    def __init__(self, seed: int, rate: float) -> None:
        super().__init__(SHOP_REGISTRY)
        self.rng = random.Random(seed)
        self.rate = rate
        self.failures = 0

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        by_saga = metadata is not None and (metadata.actor or "").startswith("system:")
        for _ in range(self.rng.randint(0, 3)):  # a round trip: other handlers run meanwhile
            await asyncio.sleep(0)
        if by_saga and self.rng.random() < self.rate:
            self.failures += 1
            if self.rng.random() < 0.5:
                raise StoreUnavailable("injected: not stored")
            await super().append(
                stream_id, events, expected_version=expected_version, metadata=metadata
            )
            raise StoreUnavailable("injected: stored, but the acknowledgement was lost")
        return await super().append(
            stream_id, events, expected_version=expected_version, metadata=metadata
        )


async def scenario(
    orchestrated: bool,
    orders: list[tuple[bool, int]],
    seed: int,
    rate: float,
    restarts: list[tuple[int, str]],
    concurrency: int = 1,
) -> None:
    store = FaultyStore(seed, rate)
    shop = await open_shop(store)
    checkpoints = SqliteSink(":memory:")
    await checkpoints.start()
    options = SagaOptions(
        batch_size=3, concurrency=concurrency, max_attempts=30, backoff=0, max_backoff=0
    )

    def saga() -> Fulfillment | OrderProcess:
        return OrderProcess(shop) if orchestrated else Fulfillment(shop)

    name = "orderprocess" if orchestrated else "fulfillment"
    for n, (rich, quantity) in enumerate(orders):
        await place(shop, str(n), "rich" if rich else "poor", quantity)
    for steps, crash in restarts:
        runner = SagaRunner(store, checkpoints, [saga()], options=options)
        await runner.start()
        for _ in range(steps):
            await asyncio.sleep(0)
        if crash == "kill":
            await kill(runner)
            continue
        await runner.aclose()
        if crash == "rewind":  # as if it died after its effects but before recording them done
            async with checkpoints.transaction() as tx:
                done = await checkpoints.load_position(name, "done", 0)
                await checkpoints.save_position(tx, name, "done", 0, max(done - 3, 0))
    store.rate = 0
    async with SagaRunner(store, checkpoints, [saga()], options=options) as runner:
        await settle(runner, store)
        assert await runner.parked(name) == []
    await check_invariants(shop, 10, Decimal("101"))


async def kill(runner: SagaRunner) -> None:
    """Stop a runner as a crash would: every task of it cancelled wherever it is (handlers
    half-way, checkpoints unwritten), nothing finished or recorded."""
    del runner  # dropped without aclose()
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("eventtape-")]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@settings(max_examples=30, deadline=None)
@given(
    orchestrated=st.booleans(),
    orders=st.lists(st.tuples(st.booleans(), st.integers(1, 4)), min_size=1, max_size=8),
    seed=st.integers(0, 2**32),
    rate=st.sampled_from([0.0, 0.1, 0.3]),
    restarts=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from(["stop", "rewind", "kill"])), max_size=4
    ),
)
def test_failures_and_restarts_keep_the_invariants(
    orchestrated: bool,
    orders: list[tuple[bool, int]],
    seed: int,
    rate: float,
    restarts: list[tuple[int, str]],
) -> None:
    asyncio.run(scenario(orchestrated, orders, seed, rate, restarts))


@settings(max_examples=40, deadline=None)
@given(
    orchestrated=st.booleans(),
    orders=st.lists(st.tuples(st.booleans(), st.integers(1, 4)), min_size=2, max_size=16),
    seed=st.integers(0, 2**32),
    rate=st.sampled_from([0.0, 0.1, 0.3]),
    restarts=st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["stop", "rewind", "kill"])), max_size=5
    ),
    concurrency=st.sampled_from([2, 4, 64]),
)
def test_concurrent_handling_with_crashes_at_any_point_keeps_the_invariants(
    orchestrated: bool,
    orders: list[tuple[bool, int]],
    seed: int,
    rate: float,
    restarts: list[tuple[int, str]],
    concurrency: int,
) -> None:
    """Many business transactions interleaved and handled side by side, sharing one stock
    and two wallets, killed anywhere: every effect still happens exactly once."""
    asyncio.run(scenario(orchestrated, orders, seed, rate, restarts, concurrency))
