"""The DCB conformance suite: any store with :class:`eventtape.DcbStore` methods runs it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from .._core.dcb import AppendCondition, DcbStore, Query, QueryItem, tagged
from .._core.errors import AppendConditionFailed, DuplicateEventId, InvalidTag
from .._core.events import NewEvent
from .._core.registry import EventRegistry
from ._dcb_model import dcb_model_machine
from ._support import ContractNoteAdded, ContractValueSet, contract_registry

__all__ = ["DcbContract"]

VALUE = ContractValueSet.__event_type__
NOTE = ContractNoteAdded.__event_type__


def _tag(name: str) -> str:
    """A tag no other test uses, so tests may share one store."""
    return f"{name}:{uuid4().hex[:12]}"


async def decide_once(store: DcbStore, tag: str, value: int) -> bool:
    """Read what is tagged ``tag``, and append one event there if nothing is: True if stored."""
    query = Query.of(tags=[tag])
    read = await store.dcb_read(query)
    if read.events:
        return False
    # Deciding takes time: let the other deciders read before this one appends, so the race
    # is real even on a store whose calls never suspend.
    await asyncio.sleep(0)
    try:
        await store.dcb_append(
            [tagged(ContractValueSet(value=value), tag)],
            condition=AppendCondition(query, read.position),
        )
    except AppendConditionFailed:
        return False
    return True


class DcbContract:
    """Subclass this and implement :meth:`make_store` to check a store's DCB support.

    The spec's cases (dcb.events), atomicity, idempotent retries, the implicit ``stream:`` tag,
    bad input, and racing deciders: many tasks on one tag (exactly one wins) and on disjoint
    tags (none blocks another).
    """

    model_settings: settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
    """Hypothesis settings for the model test (raise them for a long run)."""

    racers: int = 16
    """How many concurrent deciders the race tests start."""

    def make_store(self, registry: EventRegistry) -> contextlib.AbstractAsyncContextManager[Any]:
        """Return an async context manager yielding a fresh store that uses ``registry``."""
        raise NotImplementedError("implement make_store() in your DcbContract subclass")

    def run(self, scenario: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``scenario`` against a fresh store in a new event loop."""

        async def main() -> None:
            async with self.make_store(contract_registry()) as store:
                await asyncio.wait_for(scenario(store), 60)

        asyncio.run(main())

    # -- reading (the spec's query semantics) --------------------------------------------

    def test_read_by_type_tags_and_items(self) -> None:
        async def scenario(store: Any) -> None:
            a, b = _tag("a"), _tag("b")
            await store.dcb_append(
                [
                    tagged(ContractValueSet(value=1), a),
                    tagged(ContractValueSet(value=2), a, b),
                    tagged(ContractNoteAdded(text="x"), b),
                    tagged(ContractNoteAdded(text="y"), a, b),
                ]
            )

            async def values(query: Query) -> list[object]:
                read = await store.dcb_read(query)
                return [
                    getattr(e.event, "value", getattr(e.event, "text", None)) for e in read.events
                ]

            assert await values(Query.of(tags=[a])) == [1, 2, "y"]
            assert await values(Query.of(tags=[a, b])) == [2, "y"]
            assert await values(Query.of([VALUE], [b])) == [2]
            assert await values(Query.of([VALUE, NOTE], [a, b])) == [2, "y"]
            assert await values(Query(QueryItem([NOTE], [b]), QueryItem([VALUE], [a]))) == [
                1,
                2,
                "x",
                "y",
            ]
            assert await values(Query.of([ContractNoteAdded], [a])) == ["y"]
            assert await values(Query.of(tags=[_tag("none")])) == []

        self.run(scenario)

    def test_read_after_limit_backwards_and_tags_returned(self) -> None:
        async def scenario(store: Any) -> None:
            a = _tag("a")
            for value in range(5):
                await store.dcb_append([tagged(ContractValueSet(value=value), a)])
            query = Query.of(tags=[a])
            read = await store.dcb_read(query)
            assert [e.event.value for e in read.events] == [0, 1, 2, 3, 4]
            positions = [e.position for e in read.events]
            assert positions == sorted(set(positions))
            assert read.position >= positions[-1]
            assert all(a in e.tags for e in read.events)
            after = await store.dcb_read(query, after=positions[1])
            assert [e.event.value for e in after.events] == [2, 3, 4]
            limited = await store.dcb_read(query, limit=2)
            assert [e.event.value for e in limited.events] == [0, 1]
            back = await store.dcb_read(query, backwards=True, limit=2)
            assert [e.event.value for e in back.events] == [4, 3]
            everything = await store.dcb_read(Query.all(), after=positions[2])
            assert [e.event.value for e in everything.events][:2] == [3, 4]

        self.run(scenario)

    def test_stream_events_carry_the_stream_tag(self) -> None:
        async def scenario(store: Any) -> None:
            stream_id = f"s{uuid4().hex[:12]}-1"
            await store.append(stream_id, [ContractValueSet(value=7)])
            read = await store.dcb_read(Query.of(tags=[f"stream:{stream_id}"]))
            assert [e.event.value for e in read.events] == [7]
            # A DCB decision guarded by the stream tag fails after a stream append.
            condition = AppendCondition(Query.of(tags=[f"stream:{stream_id}"]), read.position)
            await store.append(stream_id, [ContractValueSet(value=8)], expected_version=1)
            with pytest.raises(AppendConditionFailed):
                await store.dcb_append(
                    [tagged(ContractValueSet(value=9), _tag("x"))], condition=condition
                )

        self.run(scenario)

    # -- conditional appends ---------------------------------------------------------------

    def test_condition_fails_on_a_newer_match_and_appends_nothing(self) -> None:
        async def scenario(store: Any) -> None:
            a, other = _tag("a"), _tag("o")
            query = Query.of(tags=[a])
            read = await store.dcb_read(query)
            await store.dcb_append([tagged(ContractValueSet(value=1), a)])
            with pytest.raises(AppendConditionFailed) as failed:
                await store.dcb_append(
                    [
                        tagged(ContractValueSet(value=2), other),
                        tagged(ContractValueSet(value=3), a),
                    ],
                    condition=AppendCondition(query, read.position),
                )
            assert failed.value.position > read.position
            assert failed.value.query == query
            assert (await store.dcb_read(Query.of(tags=[other]))).events == ()
            assert [e.event.value for e in (await store.dcb_read(query)).events] == [1]

        self.run(scenario)

    def test_condition_passes_on_older_matches_and_other_events(self) -> None:
        async def scenario(store: Any) -> None:
            a, b = _tag("a"), _tag("b")
            await store.dcb_append([tagged(ContractValueSet(value=1), a)])
            query = Query.of([VALUE], [a])
            read = await store.dcb_read(query)
            await store.dcb_append([tagged(ContractValueSet(value=2), b)])  # other tag
            await store.dcb_append([tagged(ContractNoteAdded(text="n"), a)])  # other type
            await store.dcb_append(
                [tagged(ContractValueSet(value=3), a)],
                condition=AppendCondition(query, read.position),
            )
            assert [e.event.value for e in (await store.dcb_read(query)).events] == [1, 3]

        self.run(scenario)

    def test_condition_without_position_is_a_uniqueness_guard(self) -> None:
        async def scenario(store: Any) -> None:
            a = _tag("user-email")
            guard = AppendCondition(Query.of(tags=[a]))
            await store.dcb_append([tagged(ContractValueSet(value=1), a)], condition=guard)
            with pytest.raises(AppendConditionFailed):
                await store.dcb_append([tagged(ContractValueSet(value=2), a)], condition=guard)

        self.run(scenario)

    def test_retry_with_the_same_ids_stores_once(self) -> None:
        async def scenario(store: Any) -> None:
            a = _tag("a")
            query = Query.of(tags=[a])
            read = await store.dcb_read(query)
            events = [tagged(ContractValueSet(value=1), a, event_id=uuid4())]
            first = await store.dcb_append(events, condition=AppendCondition(query, read.position))
            again = await store.dcb_append(events, condition=AppendCondition(query, read.position))
            assert first == again
            assert len((await store.dcb_read(query)).events) == 1
            other = [tagged(ContractValueSet(value=2), a, event_id=events[0].event_id)]
            with pytest.raises(DuplicateEventId):
                await store.dcb_append(other)

        self.run(scenario)

    def test_bad_input_is_refused(self) -> None:
        async def scenario(store: Any) -> None:
            with pytest.raises(ValueError, match="stream:"):
                tagged(ContractValueSet(value=1), "stream:x")
            with pytest.raises(ValueError, match="control"):
                tagged(ContractValueSet(value=1), "bad\ntag")
            with pytest.raises(ValueError, match="characters"):
                tagged(ContractValueSet(value=1), "t" * 1000)
            with pytest.raises(TypeError):
                Query.of(tags="abc")
            with pytest.raises(InvalidTag):
                tagged(ContractValueSet(value=1), 7)  # type: ignore[arg-type]

            class BadTemplate(ContractValueSet):
                __event_tags__ = ("x:{missing}",)

            with pytest.raises(InvalidTag, match="does not fit"):
                tagged(BadTemplate(value=1))
            with pytest.raises(ValueError, match="position"):
                AppendCondition(Query.all(), -1)
            with pytest.raises(ValueError, match="at least one"):
                await store.dcb_append([])
            with pytest.raises(TypeError):
                await store.dcb_read("tag")
            event_id = uuid4()
            with pytest.raises(ValueError, match="repeats"):
                await store.dcb_append([NewEvent(ContractValueSet(value=1), event_id)] * 2)

        self.run(scenario)

    # -- races -------------------------------------------------------------------------------

    def test_racing_deciders_on_one_tag_have_exactly_one_winner(self) -> None:
        async def scenario(store: Any) -> None:
            for _ in range(3):
                tag = _tag("coupon")
                wins = await asyncio.gather(
                    *(decide_once(store, tag, n) for n in range(self.racers))
                )
                assert sum(wins) == 1
                assert len((await store.dcb_read(Query.of(tags=[tag]))).events) == 1

        self.run(scenario)

    def test_racing_deciders_on_disjoint_tags_never_block(self) -> None:
        async def scenario(store: Any) -> None:
            tags = [_tag("customer") for _ in range(self.racers)]
            wins = await asyncio.gather(*(decide_once(store, t, n) for n, t in enumerate(tags)))
            assert all(wins)

        self.run(scenario)

    # -- against a model -------------------------------------------------------------------

    def test_store_behaves_like_the_model(self) -> None:
        """Hypothesis drives random conditional appends and reads, compared with a model."""
        run_state_machine_as_test(dcb_model_machine(self.make_store), settings=self.model_settings)
