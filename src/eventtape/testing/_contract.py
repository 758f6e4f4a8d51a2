"""The contract every :class:`eventtape.EventStore` must keep, as a pytest test class."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from .._core.conditions import StreamState
from .._core.errors import (
    ConcurrencyError,
    DuplicateEventId,
    InvalidStreamId,
    StreamNotFound,
    UnknownEventType,
)
from .._core.events import Event, Metadata, NewEvent, RecordedEvent
from .._core.registry import EventRegistry
from .._core.store import EventStore
from ._model import store_model_machine
from ._support import (
    ContractNoteAdded,
    ContractUnregistered,
    ContractValueSet,
    collect,
    run_with_store,
    unique_category,
)

__all__ = ["EventStoreContract"]

INVALID_STREAM_IDS = [
    "",
    " ",
    "order 1",
    "order\t1",
    "order.1",
    "order-*",
    "order->",
    "order-1\n",
    "order-\x00",
    "order-\u200b1",
    "-leading-dash",
    "x" * 201,
]


def values(*numbers: int) -> list[Event]:
    """Return one :class:`ContractValueSet` per number."""
    return [ContractValueSet(value=number) for number in numbers]


async def assert_stream(store: EventStore, stream_id: str, expected: list[int]) -> None:
    """Assert a stream holds exactly ``ContractValueSet`` events with ``expected`` values."""
    records = await collect(store.read_stream(stream_id))
    assert [record.version for record in records] == list(range(1, len(expected) + 1))
    assert [record.event for record in records] == values(*expected)


class EventStoreContract:
    """Subclass this in your test suite and implement :meth:`make_store` to check a store.

    Every test runs its scenario in a fresh event loop against a fresh store from
    :meth:`make_store`, so the suite needs no async pytest plugin. Tests use stream ids no other
    test uses, so the stores may share one server.

    Example:
        ```python
        class TestMyStore(EventStoreContract):
            @contextlib.asynccontextmanager
            async def make_store(self, registry):
                async with MyStore(registry, url=...) as store:
                    yield store
        ```
    """

    model_settings: ClassVar[settings] = settings(
        max_examples=40, stateful_step_count=25, deadline=None
    )
    """Hypothesis settings for the stateful model test (raise them for a long run)."""

    def make_store(self, registry: EventRegistry) -> contextlib.AbstractAsyncContextManager[Any]:
        """Return an async context manager yielding a fresh store that uses ``registry``."""
        raise NotImplementedError("implement make_store() in your EventStoreContract subclass")

    def run(self, scenario: Callable[[EventStore], Awaitable[None]]) -> None:
        """Run ``scenario`` against a fresh store (used by every test of the suite)."""
        run_with_store(self.make_store, scenario)

    # -- appending and reading -----------------------------------------------------------

    def test_append_then_read_stream(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            ids = [uuid4(), uuid4()]
            before = datetime.now(UTC)
            result = await store.append(
                stream_id,
                [
                    NewEvent(ContractValueSet(value=1), ids[0]),
                    NewEvent(ContractValueSet(value=2), ids[1]),
                ],
                metadata=Metadata(
                    actor="user:789",
                    causation_id="cmd-1",
                    correlation_id="corr-1",
                    headers={"tenant": "acme"},
                ),
            )
            assert (result.stream_id, result.first_version, result.version) == (stream_id, 1, 2)
            assert result.position == result.first_position + 1
            records = await collect(store.read_stream(stream_id))
            assert [r.event for r in records] == values(1, 2)
            assert [r.event_id for r in records] == ids
            assert [r.version for r in records] == [1, 2]
            assert [r.position for r in records] == [result.first_position, result.position]
            for record in records:
                assert record.stream_id == stream_id
                assert record.event_type == "eventtape.contract.ValueSet"
                assert record.actor == "user:789"
                assert record.causation_id == "cmd-1"
                assert record.correlation_id == "corr-1"
                assert dict(record.headers) == {"tenant": "acme"}
                assert record.recorded_at.tzinfo is not None
                assert record.recorded_at.utcoffset() == UTC.utcoffset(None)
                assert before.replace(microsecond=0) <= record.recorded_at
            assert await store.stream_version(stream_id) == 2

        self.run(scenario)

    def test_append_assigns_increasing_positions_across_streams(self) -> None:
        async def scenario(store: EventStore) -> None:
            category = unique_category()
            start = await store.head_position()
            results = [
                await store.append(f"{category}-{n % 3}", values(n, n + 100)) for n in range(9)
            ]
            positions = [p for r in results for p in (r.first_position, r.position)]
            assert positions == sorted(positions)
            assert len(set(positions)) == len(positions)
            assert positions[0] > start
            assert await store.head_position() >= positions[-1]
            records = await collect(store.read_all(from_position=start + 1, categories=[category]))
            assert [r.position for r in records] == positions
            assert [r.event for r in records] == [e for n in range(9) for e in values(n, n + 100)]

        self.run(scenario)

    def test_text_survives_storage_exactly(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-text"
            texts = ["", 'quote " backslash \\ newline \n', "ünïcødé ✓ 日本語 🎉", "\x00nul"]
            await store.append(stream_id, [ContractNoteAdded(text=text) for text in texts])
            records = await collect(store.read_stream(stream_id))
            assert [r.event for r in records] == [ContractNoteAdded(text=text) for text in texts]

        self.run(scenario)

    def test_metadata_is_optional(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(1))
            (record,) = await collect(store.read_stream(stream_id))
            assert (record.actor, record.causation_id, record.correlation_id) == (None, None, None)
            assert dict(record.headers) == {}

        self.run(scenario)

    # -- expected versions ---------------------------------------------------------------

    def test_expected_version_exact(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(1), expected_version=0)
            await store.append(stream_id, values(2, 3), expected_version=1)
            for wrong in (0, 1, 2, 4, 10):
                with pytest.raises(ConcurrencyError) as caught:
                    await store.append(stream_id, values(99), expected_version=wrong)
                assert caught.value.stream_id == stream_id
                assert caught.value.expected == wrong
                assert caught.value.actual == 3
            await store.append(stream_id, values(4), expected_version=3)
            await assert_stream(store, stream_id, [1, 2, 3, 4])

        self.run(scenario)

    def test_expected_no_stream(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(1), expected_version=StreamState.NO_STREAM)
            with pytest.raises(ConcurrencyError) as caught:
                await store.append(stream_id, values(2), expected_version=StreamState.NO_STREAM)
            assert caught.value.expected is StreamState.NO_STREAM
            assert caught.value.actual == 1
            await assert_stream(store, stream_id, [1])

        self.run(scenario)

    def test_expected_stream_exists(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            with pytest.raises(ConcurrencyError) as caught:
                await store.append(stream_id, values(1), expected_version=StreamState.STREAM_EXISTS)
            assert caught.value.actual == 0
            assert await store.stream_version(stream_id) == 0
            with pytest.raises(StreamNotFound):
                await collect(store.read_stream(stream_id))
            await store.append(stream_id, values(1))
            await store.append(stream_id, values(2), expected_version=StreamState.STREAM_EXISTS)
            await assert_stream(store, stream_id, [1, 2])

        self.run(scenario)

    def test_expected_any(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(1), expected_version=StreamState.ANY)
            await store.append(stream_id, values(2))
            await assert_stream(store, stream_id, [1, 2])

        self.run(scenario)

    def test_failed_append_changes_nothing(self) -> None:
        async def scenario(store: EventStore) -> None:
            category = unique_category()
            stream_id = f"{category}-1"
            await store.append(stream_id, values(1, 2))
            head = await store.head_position()
            with pytest.raises(ConcurrencyError):
                await store.append(stream_id, values(3, 4, 5), expected_version=1)
            with pytest.raises(UnknownEventType):
                await store.append(stream_id, [ContractValueSet(value=3), ContractUnregistered()])
            with pytest.raises(InvalidStreamId):
                await store.append(f"{category}.2", values(3))
            await assert_stream(store, stream_id, [1, 2])
            assert await store.head_position() == head
            assert (
                await collect(store.read_all(from_position=head + 1, categories=[category])) == []
            )

        self.run(scenario)

    def test_bad_arguments_are_refused(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            with pytest.raises(ValueError, match="at least one"):
                await store.append(stream_id, [])
            event_id = uuid4()
            with pytest.raises(ValueError, match="same event id"):
                await store.append(
                    stream_id, [NewEvent(values(1)[0], event_id), NewEvent(values(2)[0], event_id)]
                )
            with pytest.raises(ValueError, match=">= 0"):
                await store.append(stream_id, values(1), expected_version=-1)
            with pytest.raises(TypeError):
                await store.append(stream_id, values(1), expected_version="1")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await store.append(stream_id, ContractValueSet(value=1))  # type: ignore[arg-type]
            assert await store.stream_version(stream_id) == 0

        self.run(scenario)

    def test_racing_appenders_one_winner_per_version(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-race"
            await store.append(stream_id, values(0))

            async def attempt(contender: int, expected: int) -> bool:
                try:
                    await store.append(stream_id, values(contender), expected_version=expected)
                except ConcurrencyError:
                    return False
                return True

            for round_ in range(1, 6):
                outcomes = await asyncio.gather(*(attempt(c, round_) for c in range(20)))
                assert sum(outcomes) == 1, f"round {round_}: {sum(outcomes)} winners"
            records = await collect(store.read_stream(stream_id))
            assert [r.version for r in records] == list(range(1, 7))

        self.run(scenario)

    # -- idempotent retries --------------------------------------------------------------

    def test_retry_with_same_ids_stores_nothing_new(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(0))
            batch = [NewEvent(event) for event in values(1, 2)]
            first = await store.append(stream_id, batch, expected_version=1)
            head = await store.head_position()
            again = await store.append(stream_id, batch, expected_version=1)
            assert again == first
            anyway = await store.append(stream_id, batch)
            assert anyway == first
            assert await store.head_position() == head
            await assert_stream(store, stream_id, [0, 1, 2])

        self.run(scenario)

    def test_retry_after_later_appends_still_returns_original(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            batch = [NewEvent(event) for event in values(1)]
            first = await store.append(stream_id, batch, expected_version=StreamState.NO_STREAM)
            await store.append(stream_id, values(2, 3))
            again = await store.append(stream_id, batch, expected_version=StreamState.NO_STREAM)
            assert again == first
            await assert_stream(store, stream_id, [1, 2, 3])

        self.run(scenario)

    def test_reused_id_with_other_content_is_refused(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            event_id = uuid4()
            await store.append(stream_id, [NewEvent(ContractValueSet(value=1), event_id)])
            with pytest.raises(DuplicateEventId) as caught:
                await store.append(stream_id, [NewEvent(ContractValueSet(value=2), event_id)])
            assert caught.value.event_id == event_id
            await assert_stream(store, stream_id, [1])

        self.run(scenario)

    def test_reused_id_in_another_stream_is_refused(self) -> None:
        async def scenario(store: EventStore) -> None:
            category = unique_category()
            event_id = uuid4()
            await store.append(f"{category}-1", [NewEvent(ContractValueSet(value=1), event_id)])
            with pytest.raises(DuplicateEventId):
                await store.append(f"{category}-2", [NewEvent(ContractValueSet(value=1), event_id)])
            assert await store.stream_version(f"{category}-2") == 0

        self.run(scenario)

    def test_retry_with_extra_events_is_refused(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            stored = NewEvent(ContractValueSet(value=1))
            await store.append(stream_id, [stored])
            with pytest.raises(DuplicateEventId):
                await store.append(stream_id, [stored, NewEvent(ContractValueSet(value=2))])
            await assert_stream(store, stream_id, [1])

        self.run(scenario)

    # -- reading -------------------------------------------------------------------------

    def test_read_stream_ranges(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-1"
            await store.append(stream_id, values(*range(1, 11)))

            async def read(**kwargs: int) -> list[int]:
                records = await collect(store.read_stream(stream_id, **kwargs))
                assert all(isinstance(r.event, ContractValueSet) for r in records)
                return [r.version for r in records]

            assert await read() == list(range(1, 11))
            assert await read(from_version=4) == list(range(4, 11))
            assert await read(from_version=4, to_version=6) == [4, 5, 6]
            assert await read(to_version=3) == [1, 2, 3]
            assert await read(from_version=2, limit=3) == [2, 3, 4]
            assert await read(from_version=9, limit=5) == [9, 10]
            assert await read(from_version=11) == []
            assert await read(from_version=5, to_version=4) == []
            assert await read(limit=0) == []
            with pytest.raises(ValueError, match="from_version"):
                await read(from_version=0)
            # A hint of the wrong type is refused whether or not the store would use it.
            for hint in ("12", 1.5, True):
                with pytest.raises(TypeError, match="position_hint"):
                    await read(position_hint=hint)  # type: ignore[arg-type]

        self.run(scenario)

    def test_read_missing_stream(self) -> None:
        async def scenario(store: EventStore) -> None:
            stream_id = f"{unique_category()}-missing"
            with pytest.raises(StreamNotFound) as caught:
                await collect(store.read_stream(stream_id))
            assert caught.value.stream_id == stream_id
            assert await store.stream_version(stream_id) == 0

        self.run(scenario)

    def test_invalid_stream_ids_are_refused_everywhere(self) -> None:
        async def scenario(store: EventStore) -> None:
            head = await store.head_position()
            for bad in INVALID_STREAM_IDS:
                with pytest.raises(InvalidStreamId):
                    await store.append(bad, values(1))
                with pytest.raises(InvalidStreamId):
                    await collect(store.read_stream(bad))
                with pytest.raises(InvalidStreamId):
                    await store.stream_version(bad)
            assert await store.head_position() == head

        self.run(scenario)

    def test_read_all_filters(self) -> None:
        async def scenario(store: EventStore) -> None:
            orders, carts = unique_category(), unique_category()
            start = await store.head_position() + 1
            await store.append(
                f"{orders}-1", [ContractValueSet(value=1), ContractNoteAdded(text="a")]
            )
            await store.append(f"{carts}-1", [ContractValueSet(value=2)])
            await store.append(f"{orders}-2", [ContractNoteAdded(text="b")])
            both = [orders, carts]

            async def read(**kwargs: Any) -> list[Event]:
                records = await collect(store.read_all(from_position=start, **kwargs))
                positions = [r.position for r in records]
                assert positions == sorted(positions)
                return [r.event for r in records]

            assert await read(categories=both) == [
                ContractValueSet(value=1),
                ContractNoteAdded(text="a"),
                ContractValueSet(value=2),
                ContractNoteAdded(text="b"),
            ]
            assert await read(categories=[orders]) == [
                ContractValueSet(value=1),
                ContractNoteAdded(text="a"),
                ContractNoteAdded(text="b"),
            ]
            assert await read(categories=both, event_types=[ContractNoteAdded]) == [
                ContractNoteAdded(text="a"),
                ContractNoteAdded(text="b"),
            ]
            assert await read(categories=[carts], event_types=["eventtape.contract.ValueSet"]) == [
                ContractValueSet(value=2)
            ]
            assert await read(categories=both, limit=2) == [
                ContractValueSet(value=1),
                ContractNoteAdded(text="a"),
            ]
            assert await read(categories=[unique_category()]) == []

        self.run(scenario)

    def test_read_all_from_position(self) -> None:
        async def scenario(store: EventStore) -> None:
            category = unique_category()
            result = await store.append(f"{category}-1", values(1, 2, 3))
            records = await collect(
                store.read_all(from_position=result.first_position + 1, categories=[category])
            )
            assert [r.event for r in records] == values(2, 3)
            beyond = await collect(store.read_all(from_position=result.position + 1_000_000))
            assert beyond == []
            with pytest.raises(ValueError, match="from_position"):
                await collect(store.read_all(from_position=0))

        self.run(scenario)

    # -- subscriptions -------------------------------------------------------------------

    def test_subscription_catches_up_then_follows_live_appends(self) -> None:
        async def scenario(store: EventStore) -> None:
            category = unique_category()
            first = await store.append(f"{category}-0", values(*range(10)))
            expected_count = 10 + 4 * 15

            async def writer(writer_id: int) -> None:
                for n in range(15):
                    await store.append(f"{category}-{writer_id}", values(1000 * writer_id + n))
                    if n % 4 == 0:
                        await asyncio.sleep(0)

            received: list[RecordedEvent[Event]] = []
            subscription = store.subscribe(
                from_position=first.first_position, categories=[category]
            )

            async def reader() -> None:
                async with subscription:
                    async for record in subscription:
                        received.append(record)
                        if len(received) == expected_count:
                            return

            reading = asyncio.create_task(reader())
            await asyncio.sleep(0)
            await asyncio.gather(*(writer(w) for w in range(1, 5)))
            await asyncio.wait_for(reading, 5)
            in_store = await collect(
                store.read_all(from_position=first.first_position, categories=[category])
            )
            assert [r.position for r in received] == [r.position for r in in_store]
            assert [r.event_id for r in received] == [r.event_id for r in in_store]
            assert len({r.event_id for r in received}) == expected_count

        self.run(scenario)

    def test_subscription_filters_and_starts_mid_log(self) -> None:
        async def scenario(store: EventStore) -> None:
            wanted, other = unique_category(), unique_category()
            await store.append(f"{wanted}-1", values(1))
            second = await store.append(f"{wanted}-1", [ContractNoteAdded(text="x"), *values(2)])
            await store.append(f"{other}-1", values(3))
            await store.append(f"{wanted}-2", values(4))
            subscription = store.subscribe(
                from_position=second.first_position,
                categories=[wanted],
                event_types=[ContractValueSet],
            )
            got: list[Event] = []
            async with subscription:
                async for record in subscription:
                    got.append(record.event)
                    if len(got) == 2:
                        break
            assert got == values(2, 4)

        self.run(scenario)

    def test_closing_a_subscription_ends_its_loop(self) -> None:
        async def scenario(store: EventStore) -> None:
            head = await store.head_position()
            subscription = store.subscribe(from_position=head + 1, categories=[unique_category()])
            seen: list[RecordedEvent[Event]] = []

            async def consume() -> None:
                async for record in subscription:
                    seen.append(record)

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.05)
            assert not task.done()
            await subscription.aclose()
            await asyncio.wait_for(task, 10)
            assert seen == []

        self.run(scenario)

    # -- the model -----------------------------------------------------------------------

    def test_store_behaves_like_the_model(self) -> None:
        """Hypothesis drives random appends, retries and reads, and compares with a model."""
        run_state_machine_as_test(
            store_model_machine(self.make_store), settings=self.model_settings
        )
