"""Runners sharing partitions, in one process: the fence on the checkpoint, the leases, the
hand-over. (Several OS processes with kill -9 and SIGSTOP: tests/test_failover_processes.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from eventtape import (
    Fenced,
    InMemoryEventStore,
    InMemoryLeases,
    ProjectionRunner,
    Repository,
    Sharing,
    StoreConfigurationError,
)
from eventtape._runtime.sharing import owner_of
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, Order
from tests.projections import OrderSummary
from tests.test_projections import Backend, place


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = Backend(request.param, tmp_path, url)
    yield made
    for sink in made.sinks:
        await sink.aclose()


async def applied(sink: Any) -> list[tuple[int, int]]:
    return [(int(r[0]), int(r[1])) for r in await sink.fetch("SELECT * FROM applied ORDER BY 1")]


async def until(condition: Any, within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- the fence -------------------------------------------------------------------------------


async def test_a_checkpoint_write_with_an_older_token_is_refused_and_rolled_back(
    backend: Backend,
) -> None:
    sink = backend.sink()
    await sink.start()
    async with sink.transaction() as tx:
        await tx.execute("CREATE TABLE marks (n INTEGER)")
        assert await sink.claim(tx, "p", "0/2", 1, 5) == 0
    async with sink.transaction() as tx:
        await sink.save_position(tx, "p", "0/2", 1, 40, token=5)
    async with sink.transaction() as tx:  # a new owner takes over, and reads where to go on
        assert await sink.claim(tx, "p", "0/2", 1, 9) == 40

    async def old_owner_commits() -> None:
        async with sink.transaction() as tx:
            await tx.execute("INSERT INTO marks VALUES (1)")
            await sink.save_position(tx, "p", "0/2", 1, 99, token=5)

    with pytest.raises(Fenced) as caught:
        await old_owner_commits()
    assert (caught.value.token, caught.value.stored, caught.value.partition) == (5, 9, "0/2")
    assert await sink.fetch("SELECT * FROM marks") == []  # the old owner's writes are gone
    assert await sink.load_position("p", "0/2", 1) == 40
    with pytest.raises(Fenced):  # nor can the old owner claim it back
        async with sink.transaction() as tx:
            await sink.claim(tx, "p", "0/2", 1, 8)
    async with sink.transaction() as tx:  # the owner of the newest token goes on
        await sink.save_position(tx, "p", "0/2", 1, 41, token=9)
    assert await sink.load_position("p", "0/2", 1) == 41
    assert await sink.owner_tokens("p", 1) == {"0/2": 9}


async def test_a_checkpoint_table_from_before_fencing_gets_its_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(
            "CREATE TABLE eventtape_checkpoints (projection TEXT NOT NULL, partition TEXT NOT"
            " NULL, generation INTEGER NOT NULL, position INTEGER NOT NULL, updated_at TEXT NOT"
            " NULL, PRIMARY KEY (projection, partition, generation))"
        )
        connection.execute("INSERT INTO eventtape_checkpoints VALUES ('p', 'all', 1, 7, 'x')")
        connection.commit()
    for _ in range(2):  # and starting again changes nothing
        sink = SqliteSink(path)
        await sink.start()
        assert await sink.load_position("p", "all", 1) == 7
        async with sink.transaction() as tx:
            assert await sink.claim(tx, "p", "all", 1, 3) == 7
        await sink.aclose()


async def test_postgres_checkpoint_table_from_before_fencing_gets_its_column(
    postgres_url: str,
) -> None:
    import asyncpg

    from eventtape.sinks.postgres import PostgresSink

    schema = f"old{uuid4().hex[:10]}"
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}")
        await connection.execute(
            f"CREATE TABLE {schema}.eventtape_checkpoints (projection TEXT NOT NULL, partition"
            " TEXT NOT NULL, generation INTEGER NOT NULL, position BIGINT NOT NULL, updated_at"
            " TIMESTAMPTZ NOT NULL, PRIMARY KEY (projection, partition, generation))"
        )
        await connection.execute(
            f"INSERT INTO {schema}.eventtape_checkpoints VALUES ('p', 'all', 1, 7, now())"
        )
    finally:
        await connection.close()
    for _ in range(2):
        sink = PostgresSink(postgres_url, schema=schema)
        await sink.start()
        assert await sink.load_position("p", "all", 1) == 7
        async with sink.transaction() as tx:
            assert await sink.claim(tx, "p", "all", 1, 3) == 7
        await sink.aclose()


# -- leases in memory ------------------------------------------------------------------------


async def test_in_memory_leases_expire_and_tokens_grow() -> None:
    now = [0.0]
    leases = InMemoryLeases(ttl=3, clock=lambda: now[0])
    first = await leases.acquire("k", "a")
    assert first is not None
    assert await leases.acquire("k", "b") is None
    renewed = await leases.renew(first)
    assert renewed is not None
    assert renewed.token == first.token
    now[0] = 10.0
    second = await leases.acquire("k", "b")
    assert second is not None
    assert second.token > first.token
    assert await leases.renew(renewed) is None
    await leases.heartbeat("a")
    assert await leases.members() == ["a"]
    await leases.leave("a")
    assert await leases.members() == []
    with pytest.raises(ValueError, match="ttl"):
        InMemoryLeases(ttl=0)


def test_rendezvous_moves_only_the_leaving_members_share() -> None:
    keys = [f"k{n}" for n in range(200)]
    before = {key: owner_of(key, ["a", "b", "c"]) for key in keys}
    after = {key: owner_of(key, ["a", "b"]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved == [key for key in keys if before[key] == "c"]
    assert set(before.values()) == {"a", "b", "c"}


def test_sharing_refuses_bad_settings() -> None:
    leases = InMemoryLeases()
    with pytest.raises(ValueError, match="partitions"):
        Sharing(leases, partitions=0)
    with pytest.raises(ValueError, match="member"):
        Sharing(leases, member="a.b")

    class Dotted(OrderSummary):
        name = "order.summary"

    with pytest.raises(ValueError, match="name"):
        ProjectionRunner(
            InMemoryEventStore(REGISTRY),
            SqliteSink(":memory:"),
            [Dotted()],
            sharing=Sharing(leases),
        )


# -- runners sharing partitions --------------------------------------------------------------


async def test_two_runners_split_the_partitions_and_the_survivor_takes_all(
    backend: Backend,
) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    leases = InMemoryLeases(ttl=0.3)
    for n in range(20):
        await place(orders, str(n), extra_items=n % 3)
    a = ProjectionRunner(
        store, backend.sink(), [backend.summary()], sharing=Sharing(leases, 6, member="a")
    )
    b = ProjectionRunner(
        store, backend.sink(), [backend.summary()], sharing=Sharing(leases, 6, member="b")
    )
    await a.start()
    await b.start()
    try:
        for _ in range(100):  # a hands b its share at a's next round
            if b.owned() and len(a.owned()) + len(b.owned()) == 6:
                break
            await asyncio.sleep(0.05)
        owned_a, owned_b = set(a.owned()), set(b.owned())
        assert owned_a
        assert owned_b
        assert not owned_a & owned_b
        assert len(owned_a | owned_b) == 6
        await a.wait_until(await store.head_position(), timeout=10)
        statuses = await b.status()
        assert {s.owner for s in statuses} == {"a", "b"}
        assert {s.state for s in statuses if s.owner == "a"} == {"elsewhere"}
        assert {s.state for s in statuses if s.owner == "b"} == {"running"}
        await a.aclose()  # hands everything over at once
        for n in range(20, 30):
            await place(orders, str(n))
        await b.wait_until(await store.head_position(), timeout=10)
        assert len(b.owned()) == 6
        events = [r async for r in store.read_all(categories=["order"])]
        sink = backend.sinks[1]
        assert await applied(sink) == [(r.position, 1) for r in events]
        assert len(await sink.fetch("SELECT * FROM orders")) == 30
    finally:
        await a.aclose()
        await b.aclose()


async def test_sharing_goes_on_from_a_single_runners_checkpoint(backend: Backend) -> None:
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    for n in range(10):
        await place(orders, str(n), extra_items=1)
    async with ProjectionRunner(store, backend.sink(), [backend.summary()]) as single:
        await single.wait_until(await store.head_position(), timeout=5)
    leases = InMemoryLeases(ttl=0.3)
    shared = [
        ProjectionRunner(
            store, backend.sink(), [backend.summary()], sharing=Sharing(leases, 4, member=m)
        )
        for m in ("a", "b")
    ]
    for runner in shared:
        await runner.start()
    try:
        for n in range(10, 15):
            await place(orders, str(n))
        await shared[0].wait_until(await store.head_position(), timeout=10)
        events = [r async for r in store.read_all(categories=["order"])]
        assert await applied(backend.sinks[0]) == [(r.position, 1) for r in events]
    finally:
        for runner in shared:
            await runner.aclose()


async def test_copies_cutting_a_projection_differently_refuse_to_start(tmp_path: Path) -> None:
    store = InMemoryEventStore(REGISTRY)
    await place(Repository(store, Order), "1")
    leases = InMemoryLeases(ttl=0.3)
    sink = SqliteSink(tmp_path / "r.db")
    async with ProjectionRunner(
        store, sink, [OrderSummary()], sharing=Sharing(leases, 4, member="a")
    ) as four:
        await four.wait_until(await store.head_position(), timeout=5)
    other = ProjectionRunner(
        store, SqliteSink(tmp_path / "r.db"), [OrderSummary()], sharing=Sharing(leases, 8)
    )
    with pytest.raises(StoreConfigurationError, match=r"same Sharing\.partitions"):
        await other.start()
    await sink.aclose()


def test_sharing_and_a_fixed_partition_do_not_mix() -> None:
    from eventtape import Partition, RunnerOptions

    with pytest.raises(ValueError, match=r"Sharing\.partitions"):
        ProjectionRunner(
            InMemoryEventStore(REGISTRY),
            SqliteSink(":memory:"),
            [OrderSummary()],
            RunnerOptions(partition=Partition(0, 2)),
            sharing=Sharing(InMemoryLeases()),
        )


async def test_a_runner_whose_lease_was_taken_cannot_commit(tmp_path: Path) -> None:
    # a is paused (its lease rounds are 20 s apart) while its lease expires and b takes over.
    store = InMemoryEventStore(REGISTRY)
    orders = Repository(store, Order)
    leases = InMemoryLeases(ttl=60)
    b_name = next(m for m in ("b", "b2", "b3", "b4", "b5") if owner_of(key1(), ["a", m]) == m)
    await place(orders, "first")
    sink_a, sink_b = SqliteSink(tmp_path / "r.db"), SqliteSink(tmp_path / "r.db")
    a = ProjectionRunner(store, sink_a, [OrderSummary()], sharing=Sharing(leases, 1, member="a"))
    await a.start()
    await a.wait_until(await store.head_position(), timeout=5)
    b = ProjectionRunner(store, sink_b, [OrderSummary()], sharing=Sharing(leases, 1, member=b_name))
    await b.start()
    try:
        assert a.owned() == [("order_summary", "all")]
        assert b.owned() == []
        leases.expire()  # a's lease ran out while it was paused
        assert b._coordinator is not None
        await b._coordinator.tick()
        await until(lambda: b.owned() == [("order_summary", "all")])
        position = await place(orders, "second")
        await b.wait_until(position, timeout=5)
        for _ in range(100):  # a saw the event too, tried to commit it, and was refused
            if a._shared[key1()].fenced is not None:
                break
            await asyncio.sleep(0.02)
        assert a._shared[key1()].fenced is not None
        assert a.failure("order_summary") is None  # a duplicate row is not taken for a bug
        events = [r async for r in store.read_all(categories=["order"])]
        assert await applied(sink_b) == [(r.position, 1) for r in events]
        tokens = await sink_b.owner_tokens("order_summary", 1)
        assert tokens["all"] == leases_token(await leases.holders([key1()]))
    finally:
        await a.aclose()
        await b.aclose()
        await sink_a.aclose()
        await sink_b.aclose()


def key1() -> str:
    return "lease.projection.order_summary.0-1"


def leases_token(held: dict[str, Any]) -> int:
    return int(held[key1()].token)


async def test_jetstream_leases_compare_and_set_and_expire(nats_url: str) -> None:
    import nats

    from eventtape.stores.jetstream import JetStreamLeases

    nc = await nats.connect(nats_url)
    bucket = f"L{uuid4().hex[:10]}"
    try:
        leases = await JetStreamLeases.open(nc, bucket=bucket, ttl=1.0)
        first = await leases.acquire("lease.projection.p.0-2", "a")
        assert first is not None
        assert await leases.acquire("lease.projection.p.0-2", "b") is None
        renewed = await leases.renew(first)
        assert renewed is not None
        assert renewed.token == first.token
        assert renewed.revision > first.revision
        held = await leases.holders(["lease.projection.p.0-2", "lease.projection.p.1-2"])
        assert list(held) == ["lease.projection.p.0-2"]
        assert (held["lease.projection.p.0-2"].owner, held["lease.projection.p.0-2"].token) == (
            "a",
            first.token,
        )
        await leases.heartbeat("a")
        await leases.heartbeat("b")
        assert await leases.members() == ["a", "b"]
        await leases.leave("b")
        assert await leases.members() == ["a"]
        second = None
        for _ in range(60):  # a stops renewing: the bucket's TTL removes its lease
            await asyncio.sleep(0.1)
            second = await leases.acquire("lease.projection.p.0-2", "b")
            if second is not None:
                break
        assert second is not None
        assert second.token > first.token
        assert await leases.renew(renewed) is None
        assert await leases.members() == []
        await leases.release(renewed)  # not a's any more: a no-op
        assert await leases.holders(["lease.projection.p.0-2"]) != {}
        await leases.release(second)
        assert await leases.acquire("lease.projection.p.0-2", "c") is not None
        with pytest.raises(StoreConfigurationError, match="same ttl"):
            await JetStreamLeases.open(nc, bucket=bucket, ttl=2.0)
        for wrong in ({"ttl": 0}, {"ttl": "3"}, {"ttl": True}, {"bucket": "a.b"}, {"bucket": ""}):
            with pytest.raises(StoreConfigurationError):
                await JetStreamLeases.open(nc, **wrong)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="lease key"):
            await leases.acquire("lease.*", "a")
        with pytest.raises(ValueError, match="member"):
            await leases.heartbeat("a.b")
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


# -- sagas shared between runners -------------------------------------------------------------


async def test_a_saga_runs_in_one_runner_and_moves_when_its_lease_is_taken(
    tmp_path: Path,
) -> None:
    from eventtape import SagaRunner
    from tests.shop import SHOP_REGISTRY, Fulfillment
    from tests.test_sagas import check_invariants, open_shop
    from tests.test_sagas import place as place_order

    store = InMemoryEventStore(SHOP_REGISTRY)
    shop = await open_shop(store)
    leases = InMemoryLeases(ttl=60)
    key = "lease.saga.fulfillment.0-1"
    b_name = next(m for m in ("b", "b2", "b3", "b4", "b5") if owner_of(key, ["a", m]) == m)
    sink_a, sink_b = SqliteSink(tmp_path / "s.db"), SqliteSink(tmp_path / "s.db")
    a = SagaRunner(store, sink_a, [Fulfillment(shop)], sharing=Sharing(leases, member="a"))
    b = SagaRunner(store, sink_b, [Fulfillment(shop)], sharing=Sharing(leases, member=b_name))
    await a.start()
    await b.start()
    try:
        assert (a.owned(), b.owned()) == (["fulfillment"], [])
        await place_order(shop, "1", "rich")
        await a.wait_until(await store.head_position(), timeout=10)
        leases.expire()  # a is paused past its lease; b takes the saga over
        assert b._coordinator is not None
        await b._coordinator.tick()
        await until(lambda: b.owned() == ["fulfillment"])
        await place_order(shop, "2", "rich")
        while True:  # settle: what the saga caused is handled too
            head = await store.head_position()
            await b.wait_until(head, timeout=10)
            if await store.head_position() == head:
                break
        for _ in range(100):
            if a._workers["fulfillment"].fenced is not None:
                break
            await asyncio.sleep(0.02)
        assert a._workers["fulfillment"].fenced is not None  # a could not move the checkpoint
        assert (await shop.orders.load("2")).status == "completed"
        await check_invariants(shop, 10, Decimal("101"))
    finally:
        await a.aclose()
        await b.aclose()
        await sink_a.aclose()
        await sink_b.aclose()


async def test_copies_starting_at_once_on_a_fresh_postgres_schema(postgres_url: str) -> None:
    from eventtape.sinks.postgres import PostgresSink

    schema = f"s{uuid4().hex[:10]}"
    store = InMemoryEventStore(REGISTRY)
    await place(Repository(store, Order), "1")
    leases = InMemoryLeases(ttl=0.3)
    sinks = [PostgresSink(postgres_url, schema=schema) for _ in range(4)]
    runners = [
        ProjectionRunner(store, sink, [OrderSummary("$")], sharing=Sharing(leases, 4))
        for sink in sinks
    ]
    try:
        await asyncio.gather(*(runner.start() for runner in runners))
        await runners[0].wait_until(await store.head_position(), timeout=10)
        assert await applied(sinks[0]) == [(r.position, 1) async for r in store.read_all()]
    finally:
        for runner in runners:
            await runner.aclose()
        for sink in sinks:
            await sink.aclose()


async def test_a_claim_waiting_on_the_database_does_not_stop_lease_renewals(
    postgres_url: str,
) -> None:
    import asyncpg

    from eventtape.sinks.postgres import PostgresSink

    schema = f"w{uuid4().hex[:10]}"
    store = InMemoryEventStore(REGISTRY)
    await place(Repository(store, Order), "1")
    sink = PostgresSink(postgres_url, schema=schema)
    await sink.start()
    # A previous owner of partition 0/2, paused in the middle of a batch: its transaction
    # holds the checkpoint row's lock.
    paused = await asyncpg.connect(postgres_url, server_settings={"search_path": schema})
    transaction = paused.transaction()
    await transaction.start()
    await paused.execute(
        "INSERT INTO eventtape_checkpoints VALUES ('order_summary', '0/2', 1, 0, now(), 1)"
    )
    leases = InMemoryLeases(ttl=0.3)
    runner = ProjectionRunner(store, sink, [OrderSummary("$")], sharing=Sharing(leases, 2))
    keys = [f"lease.projection.order_summary.{n}-2" for n in range(2)]
    try:
        await runner.start()
        assert runner.owned() == [("order_summary", "1/2")]
        first = await leases.holders(keys)
        await asyncio.sleep(1.5)  # five ttls: the waiting claim must not stop the renewals
        assert runner.owned() == [("order_summary", "1/2")]
        assert {k: lease.token for k, lease in (await leases.holders(keys)).items()} == {
            k: lease.token for k, lease in first.items()
        }
        await transaction.rollback()  # the server ended the paused transaction
        await until(lambda: len(runner.owned()) == 2)
        await runner.wait_until(await store.head_position(), timeout=5)
    finally:
        await paused.close()
        await runner.aclose()
        await sink.aclose()
