"""Aggregates: decide, record, apply; state is the fold of events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventtape import Aggregate, Event, MissingApplyHandler, applies
from eventtape.testing import AggregateScenario
from tests.domain import ItemAdded, Order, OrderCancelled, OrderError, OrderPaid, OrderPlaced, item


def test_placing_records_one_event() -> None:
    order = (
        AggregateScenario(Order)
        .when_created(lambda: Order.place("1", "u1", [item()]))
        .then(OrderPlaced(order_id="1", user_id="u1", items=(item(),)))
    )
    assert (order.id, order.version, order.status) == ("1", 1, "placed")


def test_a_rule_violation_records_nothing() -> None:
    AggregateScenario(Order).when_created(lambda: Order.place("1", "u1", [])).then_raises(
        OrderError, match="at least one item"
    )
    error = (
        AggregateScenario(Order, "1")
        .given(OrderPlaced(order_id="1", user_id="u", items=(item(price="5"),)))
        .when(lambda order: order.pay(Decimal("4")))
        .then_raises(OrderError)
    )
    assert "expected 5" in str(error)


def test_commands_on_history() -> None:
    placed = OrderPlaced(order_id="1", user_id="u", items=(item(price="5", quantity=2),))
    order = (
        AggregateScenario(Order, "1")
        .given(placed)
        .when(lambda order: order.pay(Decimal("10")))
        .then(OrderPaid(amount=Decimal("10")))
    )
    assert order.version == 2
    assert len(order.pending_events) == 1
    AggregateScenario(Order, "1").given(placed, OrderCancelled(reason="x")).when(
        lambda order: order.cancel("again")
    ).then_raises(OrderError, match="already cancelled")


def test_scenario_reports_differences() -> None:
    placed = OrderPlaced(order_id="1", user_id="u", items=(item(),))
    with pytest.raises(AssertionError, match="recorded events differ"):
        AggregateScenario(Order, "1").given(placed).when(lambda o: o.cancel("a")).then(
            OrderCancelled(reason="b")
        )
    with pytest.raises(AssertionError, match="succeeded"):
        AggregateScenario(Order, "1").given(placed).when(lambda o: o.cancel("a")).then_raises(
            OrderError
        )
    with pytest.raises(AssertionError, match="raised"):
        AggregateScenario(Order, "1").given(placed, OrderCancelled(reason="a")).when(
            lambda o: o.cancel("a")
        ).then_nothing()


def test_scenario_catches_a_command_that_records_then_raises() -> None:
    def sloppy(order: Order) -> None:
        order.record(OrderCancelled(reason="oops"))
        raise OrderError("too late")

    with pytest.raises(AssertionError, match="had recorded"):
        AggregateScenario(Order, "1").given(
            OrderPlaced(order_id="1", user_id="u", items=(item(),))
        ).when(sloppy).then_raises(OrderError)


def test_missing_handler_is_a_clear_error() -> None:
    class Unhandled(Event):
        pass

    order = Order("1")
    with pytest.raises(MissingApplyHandler, match="Order has no @applies handler for"):
        order.record(Unhandled())
    assert order.version == 0
    assert order.pending_events == ()


def test_handlers_are_inherited_and_overridable() -> None:
    class Base(Aggregate):
        log: list[str]

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.log = []

        @applies(OrderCancelled)
        def _cancelled(self, event: OrderCancelled) -> None:
            self.log.append("base")

        @applies(ItemAdded)
        def _added(self, event: ItemAdded) -> None:
            self.log.append("added")

    class Child(Base):
        @applies(OrderCancelled)
        def _cancelled_differently(self, event: OrderCancelled) -> None:
            self.log.append("child")

    child = Child("1")
    child.replay([OrderCancelled(reason="r"), ItemAdded(item=item())])
    assert child.log == ["child", "added"]
    assert Child.stream_category == "child"


def test_handler_for_a_base_event_class_applies_to_subclasses() -> None:
    class Noted(Event):
        text: str

    class LoudlyNoted(Noted):
        pass

    class Notebook(Aggregate):
        notes: list[str]

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.notes = []

        @applies(Noted)
        def _noted(self, event: Noted) -> None:
            self.notes.append(event.text)

    notebook = Notebook("n")
    notebook.replay([Noted(text="a"), LoudlyNoted(text="b")])
    assert notebook.notes == ["a", "b"]


def test_two_handlers_for_one_type_are_refused() -> None:
    with pytest.raises(TypeError, match="two @applies handlers"):

        class Confused(Aggregate):
            @applies(OrderCancelled)
            def _a(self, event: OrderCancelled) -> None: ...

            @applies(OrderCancelled)
            def _b(self, event: OrderCancelled) -> None: ...


def test_applies_needs_event_classes() -> None:
    with pytest.raises(TypeError):
        applies()
    with pytest.raises(TypeError):
        applies(int)  # type: ignore[type-var]


commands = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["a", "b", "c"]), st.integers(1, 5)),
        st.tuples(st.just("pay"), st.just(""), st.just(0)),
        st.tuples(st.just("cancel"), st.text(max_size=5), st.just(0)),
    ),
    max_size=12,
)


@given(commands)
def test_replaying_the_recorded_events_rebuilds_the_same_state(
    steps: list[tuple[str, str, int]],
) -> None:
    order = Order.place("1", "u", [item()])
    for command, text, number in steps:
        try:
            if command == "add":
                order.add_item(item(text, number))
            elif command == "pay":
                order.pay(order.total)
            else:
                order.cancel(text)
        except OrderError:
            pass
    rebuilt = Order("1")
    rebuilt.replay(pending.event for pending in order.pending_events)
    assert vars(rebuilt) == {**vars(order), "_pending": []}
    assert rebuilt.version == len(order.pending_events)
