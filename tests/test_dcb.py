"""DCB: the conformance suite on memory and JetStream, broken stores caught, racing processes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from eventtape import (
    AppendConditionFailed,
    DecisionProjection,
    EventRegistry,
    InMemoryEventStore,
    Query,
    SerializationError,
    build_decision,
    tagged,
)
from eventtape.stores.jetstream import JetStreamEventStore
from eventtape.testing import ContractNoteAdded, ContractValueSet, DcbContract, contract_registry
from eventtape.testing._dcb_contract import decide_once


class TestMemoryDcb(DcbContract):
    @contextlib.asynccontextmanager
    async def make_store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
        async with InMemoryEventStore(registry) as store:
            yield store


class TestJetStreamDcb(DcbContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_url: str) -> None:
        self.url = nats_url

    @contextlib.asynccontextmanager
    async def make_store(self, registry: EventRegistry) -> AsyncIterator[JetStreamEventStore]:
        async with await JetStreamEventStore.connect(self.url, registry) as store:
            yield store


class _UncheckedStore(InMemoryEventStore):
    """A broken store: it ignores append conditions (a check-then-insert without the check)."""

    async def dcb_append(self, events, *, condition=None, metadata=None):  # type: ignore[no-untyped-def]
        return await super().dcb_append(events, metadata=metadata)


class _CheckThenInsertStore(InMemoryEventStore):
    """A broken store: it checks, yields to other tasks, then inserts (Marten's pre-9.4 race)."""

    async def dcb_append(self, events, *, condition=None, metadata=None):  # type: ignore[no-untyped-def]
        if condition is not None:
            await super().dcb_read(condition.fail_if_events_match, after=condition.after or 0)
            found = await super().dcb_read(
                condition.fail_if_events_match, after=condition.after or 0
            )
            await asyncio.sleep(0)
            if found.events:
                raise AppendConditionFailed(
                    condition.fail_if_events_match, condition.after, found.events[0].position
                )
        return await super().dcb_append(events, metadata=metadata)


@pytest.mark.parametrize(
    ("broken", "test"),
    [
        (_UncheckedStore, "test_racing_deciders_on_one_tag_have_exactly_one_winner"),
        (_UncheckedStore, "test_condition_fails_on_a_newer_match_and_appends_nothing"),
        (_UncheckedStore, "test_store_behaves_like_the_model"),
        # Only wrong under races:
        (_CheckThenInsertStore, "test_racing_deciders_on_one_tag_have_exactly_one_winner"),
    ],
)
def test_the_suite_catches_broken_stores(broken: type[InMemoryEventStore], test: str) -> None:
    class Suite(DcbContract):
        @contextlib.asynccontextmanager
        async def make_store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
            yield broken(registry)

    with pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(Suite(), test)()


_RACER = """
import asyncio, sys, time
from eventtape.stores.jetstream import JetStreamEventStore
from eventtape.testing import contract_registry
from eventtape.testing._dcb_contract import decide_once

async def main(url, start, tags, worker):
    async with await JetStreamEventStore.connect(url, contract_registry()) as store:
        await asyncio.sleep(max(start - time.time(), 0))  # every process starts together
        results = await asyncio.gather(*(decide_once(store, t, worker) for t in tags))
    print("".join("1" if r else "0" for r in results))

asyncio.run(main(sys.argv[1], float(sys.argv[3]), sys.argv[4:], int(sys.argv[2])))
"""


def test_racing_processes_on_jetstream(nats_url: str) -> None:
    """Four OS processes decide on the same 20 tags at once (one winner each), and each on a
    tag of its own (every one wins)."""
    shared = [f"coupon:{uuid4().hex}" for _ in range(20)]
    processes = []
    start = time.time() + 4
    for worker in range(4):
        own = [f"customer:{uuid4().hex}" for _ in range(5)]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", _RACER, nats_url, str(worker), str(start), *shared, *own],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        outputs.append(out.strip())
    for index in range(len(shared)):
        assert sum(out[index] == "1" for out in outputs) == 1
    assert all(out[len(shared) :] == "11111" for out in outputs)

    async def check() -> None:
        async with await JetStreamEventStore.connect(nats_url, contract_registry()) as store:
            for tag in shared:
                assert len((await store.dcb_read(Query.of(tags=[tag]))).events) == 1

    asyncio.run(check())


def test_decision_model_keeps_a_limit_under_races() -> None:
    limit = 3

    async def main() -> None:
        store = InMemoryEventStore(contract_registry())
        coupon = "coupon:WELCOME10"
        uses = DecisionProjection(Query.of([ContractValueSet], [coupon]), 0, lambda n, _e: n + 1)

        async def redeem(customer: int) -> bool:
            mine = DecisionProjection(
                Query.of([ContractValueSet], [coupon, f"customer:{customer}"]),
                False,
                lambda _s, _e: True,
            )
            while True:
                decision = await build_decision(store, uses=uses, mine=mine)
                if decision.state["mine"] or decision.state["uses"] >= limit:
                    return False
                try:
                    await decision.append(
                        [tagged(ContractValueSet(value=customer), coupon, f"customer:{customer}")]
                    )
                except AppendConditionFailed:
                    await asyncio.sleep(0)
                    continue
                return True

        results = await asyncio.gather(*(redeem(c % 6) for c in range(30)))
        assert sum(results) == limit
        assert len((await store.dcb_read(Query.of(tags=[coupon]))).events) == limit

    asyncio.run(main())


def test_racing_store_instances_on_jetstream(nats_url: str) -> None:
    """Four stores (four connections, as four services would have) race 16 deciders each on
    the same tags: one winner per tag; nothing in one process serialises them."""

    async def main() -> None:
        registry = contract_registry()
        stores = [await JetStreamEventStore.connect(nats_url, registry) for _ in range(4)]
        try:
            for _ in range(5):
                tag = f"coupon:{uuid4().hex}"
                wins = await asyncio.gather(
                    *(decide_once(store, tag, n) for store in stores for n in range(4))
                )
                assert sum(wins) == 1
        finally:
            for store in stores:
                await store.aclose()

    asyncio.run(main())


def test_an_append_too_big_for_one_message_is_refused_with_our_error(nats_url: str) -> None:
    async def main() -> None:
        async with await JetStreamEventStore.connect(nats_url, contract_registry()) as store:
            tag = f"big:{uuid4().hex}"
            with pytest.raises(SerializationError, match="more than the server takes"):
                await store.dcb_append([tagged(ContractNoteAdded(text="x" * 2_000_000), tag)])
            assert (await store.dcb_read(Query.of(tags=[tag]))).events == ()

    asyncio.run(main())


def test_dcb_events_are_on_the_same_log_for_every_reader(
    nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """read_all, subscriptions and the command line see a DCB append as the one-append stream
    ``dcb-<first event id>``, between the stream appends around it."""
    from eventtape.cli import main
    from eventtape.stores.jetstream import JetStreamConfig

    name = f"D{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"dcbcli.{name}")
    event_id = uuid4()

    async def write() -> None:
        async with await JetStreamEventStore.connect(
            nats_url, contract_registry(), config=config
        ) as store:
            await store.append("note-1", [ContractValueSet(value=1)])
            await store.dcb_append(
                [tagged(ContractNoteAdded(text="tagged"), "coupon:X", event_id=event_id)]
            )
            await store.append("note-1", [ContractValueSet(value=2)], expected_version=1)
            everything = [record async for record in store.read_all()]
            assert [r.stream_id for r in everything] == ["note-1", f"dcb-{event_id}", "note-1"]
            async with store.subscribe() as subscription:
                seen = [await anext(subscription) for _ in range(3)]
            assert [r.event_id for r in seen] == [r.event_id for r in everything]
            read = await store.dcb_read(Query.of(tags=["coupon:X"]))
            assert read.events[0].tags == {"coupon:X", f"stream:dcb-{event_id}"}

    asyncio.run(write())
    args = ["--url", nats_url, "--stream", name, "--subject-prefix", config.subject_prefix]
    assert main([*args, "history", f"dcb-{event_id}"]) == 0
    assert "eventtape.contract.NoteAdded" in capsys.readouterr().out


def test_a_stream_re_created_elsewhere_is_indexed_again(nats_url: str) -> None:
    """Another process deletes and re-creates the JetStream stream, and writes to it again:
    this store's tag index must not go on believing it has seen those sequences (a condition
    would then pass over events it never looked at)."""
    from eventtape import AppendCondition, Query
    from eventtape.stores.jetstream import JetStreamConfig

    async def main() -> None:
        registry = contract_registry()
        name = f"D{uuid4().hex[:10]}"
        config = JetStreamConfig(stream=name, subject_prefix=f"d.{name}")
        tag = f"coupon:{uuid4().hex}"
        query = Query.of(tags=[tag])
        async with (
            await JetStreamEventStore.connect(nats_url, registry, config=config) as store,
            await JetStreamEventStore.connect(nats_url, registry, config=config) as other,
        ):
            for n in range(5):  # the index learns sequences 1..5
                await store.dcb_append([tagged(ContractValueSet(value=n), f"other:{n}")])
            assert (await store.dcb_read(query)).events == ()
            await other.nc.jetstream().delete_stream(name)
            await asyncio.sleep(0.2)
            again = await JetStreamEventStore.connect(nats_url, registry, config=config)
            try:
                for n in range(3):  # sequences 1..3 of the new stream, the last one tagged
                    tags = (tag,) if n == 2 else (f"x:{n}",)
                    await again.dcb_append([tagged(ContractValueSet(value=n), *tags)])
            finally:
                await again.aclose()
            await asyncio.sleep(0.2)  # the server's advisory reaches the first store
            found = await store.dcb_read(query)
            assert [event.event.value for event in found.events] == [2]  # type: ignore[attr-defined]
            with pytest.raises(AppendConditionFailed):
                await store.dcb_append(
                    [tagged(ContractValueSet(value=9), tag)],
                    condition=AppendCondition(query, after=0),
                )
            await store.nc.jetstream().delete_stream(name)

    asyncio.run(main())
