"""A hypothesis state machine comparing a store's DCB reads and conditional appends with a
plain in-Python model of the log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID, uuid4

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from .._core.dcb import AppendCondition, Query, QueryItem, tagged
from .._core.errors import AppendConditionFailed
from .._core.events import Event
from .._core.registry import EventRegistry
from ._support import ContractNoteAdded, ContractValueSet, contract_registry

__all__ = ["dcb_model_machine"]

T = TypeVar("T")
TYPES = (ContractValueSet.__event_type__, ContractNoteAdded.__event_type__)
TAGS = ("a", "b", "c")

items = st.tuples(st.frozensets(st.sampled_from(TYPES)), st.frozensets(st.sampled_from(TAGS)))
queries = st.lists(items, max_size=2)
new_events = st.lists(
    st.tuples(st.sampled_from(TYPES), st.frozensets(st.sampled_from(TAGS))), min_size=1, max_size=3
)


def dcb_model_machine(
    factory: Callable[[EventRegistry], contextlib.AbstractAsyncContextManager[Any]],
) -> type[RuleBasedStateMachine]:
    """Return a state machine checking DCB stores made by ``factory`` against a model.

    The model is the list of appended events (id, type, tags, position). Rules append with and
    without conditions (positions taken from earlier reads and events, so positions inside a
    multi-event append are tried too) and read random queries; every outcome must match.
    """

    class DcbModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._runner = asyncio.Runner()
            self._stack = contextlib.AsyncExitStack()
            self._store = self._run(self._stack.enter_async_context(factory(contract_registry())))
            self._prefix = uuid4().hex[:10]  # tags no other run uses: stores may be shared
            self._log: list[tuple[UUID, str, frozenset[str], int]] = []
            start = self._run(self._store.dcb_read(Query.of(tags=[self._tag("none")])))
            self._points: list[int] = [start.position]
            self._counter = itertools.count()

        def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return self._runner.run(asyncio.wait_for(coroutine, 30))

        def _tag(self, tag: str) -> str:
            return f"{self._prefix}-{tag}"

        def _query(self, spec: list[tuple[frozenset[str], frozenset[str]]]) -> Query:
            # Every item names a tag of this run, so other runs' events never match.
            return (
                Query(
                    *(
                        QueryItem(types, {self._tag(t) for t in tags} | {self._tag("run")})
                        for types, tags in spec
                    )
                )
                if spec
                else Query.of(tags=[self._tag("run")])
            )

        def _expected(self, query: Query, after: int | None) -> list[UUID]:
            return [
                event_id
                for event_id, name, tags, position in self._log
                if (after is None or position > after) and query.matches(name, tags)
            ]

        def teardown(self) -> None:
            try:
                self._run(self._stack.aclose())
            finally:
                self._runner.close()

        @rule(
            spec=new_events,
            condition=st.one_of(st.none(), st.tuples(queries, st.integers(-1, 50))),
        )
        def append(
            self,
            spec: list[tuple[str, frozenset[str]]],
            condition: tuple[list[tuple[frozenset[str], frozenset[str]]], int] | None,
        ) -> None:
            unique = self._tag(f"append{next(self._counter)}")
            events = []
            for name, tags in spec:
                event: Event = (
                    ContractValueSet(value=1) if name == TYPES[0] else ContractNoteAdded(text="n")
                )
                events.append(
                    tagged(event, unique, self._tag("run"), *(self._tag(t) for t in tags))
                )
            cond = None
            if condition is not None:
                query = self._query(condition[0])
                after = None if condition[1] < 0 else self._points[condition[1] % len(self._points)]
                cond = AppendCondition(query, after)
            should_fail = cond is not None and bool(
                self._expected(cond.fail_if_events_match, cond.after)
            )
            try:
                self._run(self._store.dcb_append(events, condition=cond))
            except AppendConditionFailed:
                assert should_fail, "the append failed, but nothing matching was stored after"
                return
            assert not should_fail, "the append succeeded, though a matching event was stored"
            stored = self._run(self._store.dcb_read(Query.of(tags=[unique])))
            assert [e.record.event_id for e in stored.events] == [e.event_id for e in events]
            for item, read in zip(events, stored.events, strict=True):
                self._log.append((item.event_id, read.event_type, read.tags, read.position))
                self._points.append(read.position)

        @rule(spec=queries, at=st.integers(0, 50))
        def read(self, spec: list[tuple[frozenset[str], frozenset[str]]], at: int) -> None:
            query = self._query(spec)
            after = self._points[at % len(self._points)]
            result = self._run(self._store.dcb_read(query, after=after))
            assert [e.record.event_id for e in result.events] == self._expected(query, after)
            self._points.append(result.position)

    return DcbModel
