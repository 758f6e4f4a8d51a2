"""A hypothesis state machine comparing an event store with a plain in-Python model."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar
from uuid import UUID

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .._core.conditions import AppendResult, ExpectedVersion, StreamState
from .._core.errors import ConcurrencyError, StreamNotFound
from .._core.events import Event, NewEvent
from .._core.store import EventStore
from ._support import ContractValueSet, StoreFactory, collect, contract_registry, unique_category

__all__ = ["store_model_machine"]

T = TypeVar("T")
EXPECTATIONS = ["exact", "wrong", "any", "no_stream", "stream_exists"]


def store_model_machine(factory: StoreFactory) -> type[RuleBasedStateMachine]:
    """Return a state machine class that checks stores made by ``factory`` against a model.

    The model is a dict of streams, each a list of ``(event id, value)``, plus the global order
    of every event. Rules append with every kind of expected version, retry the last successful
    append, and read streams and the global log; after every step each stream's version must
    match the model.
    """

    class StoreModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._runner = asyncio.Runner()
            self._stack = contextlib.AsyncExitStack()
            self._store: EventStore = self._run(
                self._stack.enter_async_context(factory(contract_registry()))
            )
            self._category = unique_category()
            self._streams: dict[str, list[tuple[UUID, int]]] = {}
            self._log: list[UUID] = []
            self._last: tuple[str, list[NewEvent[Event]], AppendResult] | None = None

        def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return self._runner.run(asyncio.wait_for(coroutine, 30))

        def _stream_id(self, key: int) -> str:
            return f"{self._category}-{key}"

        def teardown(self) -> None:
            try:
                self._run(self._stack.aclose())
            finally:
                self._runner.close()

        @rule(
            key=st.integers(0, 2),
            numbers=st.lists(st.integers(-1000, 1000), min_size=1, max_size=4),
            expectation=st.sampled_from(EXPECTATIONS),
        )
        def append(self, key: int, numbers: list[int], expectation: str) -> None:
            stream_id = self._stream_id(key)
            stored = self._streams.setdefault(stream_id, [])
            current = len(stored)
            expected: ExpectedVersion
            if expectation == "exact":
                expected, allowed = current, True
            elif expectation == "wrong":
                expected, allowed = current + 1, False
            elif expectation == "any":
                expected, allowed = StreamState.ANY, True
            elif expectation == "no_stream":
                expected, allowed = StreamState.NO_STREAM, current == 0
            else:
                expected, allowed = StreamState.STREAM_EXISTS, current > 0
            batch: list[NewEvent[Event]] = [
                NewEvent(ContractValueSet(value=number)) for number in numbers
            ]
            try:
                result = self._run(self._store.append(stream_id, batch, expected_version=expected))
            except ConcurrencyError as error:
                assert not allowed, f"append expecting {expected} to a stream at {current} failed"
                assert error.actual == current  # noqa: PT017 (a rule can't use pytest.raises)
                return
            assert allowed, f"append expecting {expected} to a stream at {current} succeeded"
            assert (result.first_version, result.version) == (current + 1, current + len(batch))
            assert result.position - result.first_position == len(batch) - 1
            stored.extend(
                (item.event_id, number) for item, number in zip(batch, numbers, strict=True)
            )
            self._log.extend(item.event_id for item in batch)
            self._last = (stream_id, batch, result)

        @precondition(lambda self: self._last is not None)
        @rule()
        def retry_last_append(self) -> None:
            assert self._last is not None
            stream_id, batch, original = self._last
            again = self._run(self._store.append(stream_id, batch))
            assert again == original

        @rule(
            key=st.integers(0, 2),
            from_version=st.integers(1, 12),
            limit=st.none() | st.integers(0, 6),
        )
        def read_stream(self, key: int, from_version: int, limit: int | None) -> None:
            stream_id = self._stream_id(key)
            stored = self._streams.get(stream_id, [])
            reading = collect(
                self._store.read_stream(stream_id, from_version=from_version, limit=limit)
            )
            if not stored:
                try:
                    self._run(reading)
                except StreamNotFound:
                    return
                raise AssertionError(f"reading empty stream {stream_id} did not raise")
            records = self._run(reading)
            end = None if limit is None else from_version - 1 + limit
            expected = stored[from_version - 1 : end]
            assert [(r.event_id, r.event) for r in records] == [
                (event_id, ContractValueSet(value=number)) for event_id, number in expected
            ]
            assert [r.version for r in records] == list(
                range(from_version, from_version + len(expected))
            )

        @rule()
        def read_all(self) -> None:
            records = self._run(collect(self._store.read_all(categories=[self._category])))
            assert [r.event_id for r in records] == self._log
            positions = [r.position for r in records]
            assert all(a < b for a, b in itertools.pairwise(positions))

        @invariant()
        def versions_match_the_model(self) -> None:
            for stream_id, stored in self._streams.items():
                assert self._run(self._store.stream_version(stream_id)) == len(stored)

    return StoreModel
