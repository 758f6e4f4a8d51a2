"""Runner options at their edges, and the projection lag cap reported as such."""

from __future__ import annotations

from typing import Any

import pytest

from eventtape import (
    InMemoryEventStore,
    InvalidArgument,
    Projection,
    ProjectionFailed,
    ProjectionRunner,
    RecordedEvent,
    RunnerOptions,
    SagaOptions,
    handles,
)
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import REGISTRY, OrderCancelled


def test_zero_backoff_is_accepted_and_negative_refused() -> None:
    assert RunnerOptions(backoff=0, max_backoff=0).backoff == 0
    assert SagaOptions(backoff=0, max_backoff=0).backoff == 0
    with pytest.raises(ValueError, match="negative"):
        RunnerOptions(backoff=-0.1)
    for bad in ({"backoff": -1}, {"batch_size": 0}, {"max_attempts": True}, {"start": "middle"}):
        with pytest.raises(InvalidArgument):
            SagaOptions(**bad)


class Stuck(Projection[Any]):
    """Fails on its first event, so its checkpoint stays at 0."""

    name = "stuck"
    categories = ("order",)

    @handles(OrderCancelled)
    async def _cancelled(self, record: RecordedEvent[OrderCancelled], tx: Any) -> None:
        raise RuntimeError("cannot")


async def test_the_lag_count_stops_at_its_cap_and_says_so() -> None:
    store = InMemoryEventStore(REGISTRY, round_trip=False)
    for n in range(10_001):
        await store.append(f"order-{n % 50}", [OrderCancelled(reason="r")])
    options = RunnerOptions(max_attempts=1, backoff=0)
    runner = ProjectionRunner(store, SqliteSink(":memory:"), [Stuck()], options=options)
    await runner.start()
    with pytest.raises(ProjectionFailed):
        await runner.wait_until(1, timeout=10)
    (status,) = await runner.status()
    assert (status.checkpoint, status.lag_events, status.lag_events_capped) == (0, 10_000, True)
    await runner.aclose()
