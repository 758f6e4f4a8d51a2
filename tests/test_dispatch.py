"""Aggregates, projections and sagas share one handler rule (eventtape._core.dispatch)."""

from __future__ import annotations

from typing import Any

import pytest

from eventtape import (
    Aggregate,
    Event,
    Projection,
    RecordedEvent,
    Saga,
    SagaContext,
    applies,
    handles,
    on_deadline,
    reacts_to,
)


class Happened(Event):
    n: int


class HappenedAgain(Happened):
    pass


def test_two_handlers_for_one_type_in_one_class_are_refused_everywhere() -> None:
    with pytest.raises(TypeError, match="two @applies handlers for Happened"):

        class _A(Aggregate):
            @applies(Happened)
            def _one(self, event: Happened) -> None: ...

            @applies(Happened)
            def _two(self, event: Happened) -> None: ...

    with pytest.raises(TypeError, match="two @handles handlers for Happened: _one and _two"):

        class _P(Projection[Any]):
            @handles(Happened)
            async def _one(self, record: RecordedEvent[Happened], tx: Any) -> None: ...

            @handles(Happened)
            async def _two(self, record: RecordedEvent[Happened], tx: Any) -> None: ...

    with pytest.raises(TypeError, match="two @reacts_to handlers for Happened"):

        class _S(Saga):
            @reacts_to(Happened)
            async def _one(self, record: RecordedEvent[Happened], ctx: SagaContext) -> None: ...

            @reacts_to(Happened)
            async def _two(self, record: RecordedEvent[Happened], ctx: SagaContext) -> None: ...

    with pytest.raises(TypeError, match="two @on_deadline"):

        class _D(Saga):
            @on_deadline("late")
            async def _one(self, deadline: Any, ctx: SagaContext) -> None: ...

            @on_deadline("late")
            async def _two(self, deadline: Any, ctx: SagaContext) -> None: ...


def test_a_subclass_replaces_its_bases_handler_and_subtypes_fall_back() -> None:
    class Base(Projection[Any]):
        @handles(Happened)
        async def _base(self, record: RecordedEvent[Happened], tx: Any) -> None: ...

    class Derived(Base):
        @handles(Happened)
        async def _derived(self, record: RecordedEvent[Happened], tx: Any) -> None: ...

    assert Base().handler_for(HappenedAgain) is Base._base
    assert Derived().handler_for(Happened) is Derived._derived
    assert Derived().handler_for(HappenedAgain) is Derived._derived
    assert Derived().handler_for(Event) is None


@pytest.mark.parametrize("decorator", [applies, handles, reacts_to])
def test_decorators_refuse_what_is_not_an_event_class(decorator: Any) -> None:
    with pytest.raises(TypeError, match="needs at least one event class"):
        decorator()
    with pytest.raises(TypeError, match="takes Event subclasses"):
        decorator(int)
