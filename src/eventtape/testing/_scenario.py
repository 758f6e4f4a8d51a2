"""Given / when / then for aggregate tests: given past events, when a command, then new events."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

from .._core.events import Event
from .._model.aggregate import Aggregate

__all__ = ["AggregateScenario"]

A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=BaseException)


class AggregateScenario(Generic[A]):
    """A readable test of one aggregate command, with no store involved.

    Example:
        ```python
        def test_cancelling_a_placed_order() -> None:
            (
                AggregateScenario(Order, "12345")
                .given(OrderPlaced(order_id="12345", user_id="789"))
                .when(lambda order: order.cancel("changed my mind"))
                .then(OrderCancelled(reason="changed my mind"))
            )

        def test_creating() -> None:
            AggregateScenario(Order).when_created(
                lambda: Order.place("12345", user_id="789")
            ).then(OrderPlaced(order_id="12345", user_id="789"))
        ```

    Args:
        aggregate_type: The aggregate class under test.
        aggregate_id: The id to rebuild it with from the ``given`` events.
    """

    def __init__(self, aggregate_type: type[A], aggregate_id: str = "test-id") -> None:
        self._type = aggregate_type
        self._id = aggregate_id
        self._history: list[Event] = []
        self._command: Callable[[A], object] | None = None
        self._create: Callable[[], A] | None = None

    def given(self, *events: Event) -> AggregateScenario[A]:
        """Events that already happened to the aggregate, oldest first."""
        self._history.extend(events)
        return self

    def when(self, command: Callable[[A], object]) -> AggregateScenario[A]:
        """The command to run on the aggregate rebuilt from the ``given`` events."""
        self._command, self._create = command, None
        return self

    def when_created(self, create: Callable[[], A]) -> AggregateScenario[A]:
        """A command that creates the aggregate (a classmethod such as ``Order.place``)."""
        if self._history:
            raise ValueError("when_created() starts from no history; drop the given() events")
        self._command, self._create = None, create
        return self

    def _execute(self) -> tuple[A | None, Exception | None]:
        """Run the command; return the aggregate (if any) and the error it raised (if any)."""
        if self._command is not None:
            aggregate = self._type(self._id)
            aggregate.replay(self._history)
            try:
                self._command(aggregate)
            except Exception as error:
                return aggregate, error
            return aggregate, None
        if self._create is not None:
            try:
                return self._create(), None
            except Exception as error:
                return None, error
        raise ValueError("call when() or when_created() before then...()")

    def then(self, *expected: Event) -> A:
        """Assert the command recorded exactly ``expected``; return the aggregate for more checks.

        Raises:
            AssertionError: Listing what was recorded instead.
        """
        aggregate, error = self._execute()
        if error is not None:
            raise AssertionError(f"the command raised {error!r}") from error
        assert aggregate is not None
        recorded = [item.event for item in aggregate.pending_events]
        if recorded != list(expected):
            raise AssertionError(
                "recorded events differ\n"
                f"  expected: {_describe(list(expected))}\n"
                f"  recorded: {_describe(recorded)}"
            )
        return aggregate

    def then_nothing(self) -> A:
        """Assert the command recorded no event."""
        return self.then()

    def then_raises(self, error_type: type[E], match: str | None = None) -> E:
        """Assert the command raised ``error_type`` (matching ``match``) and recorded nothing.

        Returns:
            The error, for checks on its attributes.
        """
        aggregate, error = self._execute()
        if error is None:
            raise AssertionError(f"expected {error_type.__name__}, but the command succeeded")
        if not isinstance(error, error_type):
            raise AssertionError(f"expected {error_type.__name__}, got {error!r}") from error
        if match is not None and not re.search(match, str(error)):
            raise AssertionError(f"{error!r} does not match {match!r}") from error
        if aggregate is not None and aggregate.pending_events:
            recorded = [item.event for item in aggregate.pending_events]
            raise AssertionError(
                f"the command raised {error!r} but had recorded {_describe(recorded)}"
            ) from error
        return error


def _describe(events: list[Event]) -> str:
    if not events:
        return "(nothing)"
    return ", ".join(repr(event) for event in events)
