"""Bad input to the core API: an error of ours (still a TypeError/ValueError), nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from eventtape import (
    EventtapeError,
    InMemoryEventStore,
    InvalidArgument,
    InvalidMetadata,
    Metadata,
    Repository,
    SerializationError,
    metadata_scope,
)
from tests.domain import Order, OrderPlaced


def _placed(order_id: str = "1") -> OrderPlaced:
    return OrderPlaced(order_id=order_id, user_id="789", items=[])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"actor": 123}, "actor"),
        ({"actor": ""}, "actor"),
        ({"actor": "user:\x1b[2J"}, "actor"),
        ({"actor": "x" * 1025}, "actor"),
        ({"correlation_id": "abc\ud800"}, "correlation_id"),
        ({"causation_id": b"bytes"}, "causation_id"),
        ({"headers": {"tenant": 7}}, "header 'tenant'"),
        ({"headers": {"": "x"}}, "header name"),
        ({"headers": {"k": "\ud800"}}, "header 'k'"),
        ({"headers": {f"h{i}": "v" for i in range(65)}}, "headers"),
        ({"headers": ["not", "a", "mapping"]}, "headers"),
    ],
)
async def test_metadata_that_no_store_could_keep_is_refused(
    store: InMemoryEventStore, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        Metadata(**fields)
    assert caught.value.field == field
    assert isinstance(caught.value, EventtapeError | ValueError)
    with pytest.raises(InvalidMetadata), metadata_scope(**fields):
        pass
    assert await store.head_position() == 0


async def test_metadata_at_the_limits_is_kept(store: InMemoryEventStore) -> None:
    metadata = Metadata(
        actor="user:" + "é" * 1019,
        correlation_id="c" * 1024,
        headers={f"h{i}": "v" * 8192 for i in range(64)},
    )
    await store.append("order-1", [_placed()], metadata=metadata)
    [record] = [r async for r in store.read_stream("order-1")]
    assert record.actor == metadata.actor
    assert record.headers == metadata.headers


async def test_event_data_that_is_not_valid_unicode_is_a_serialization_error(
    store: InMemoryEventStore,
) -> None:
    with pytest.raises(SerializationError, match="OrderPlaced"):
        await store.append("order-1", [_placed("\ud800")])
    assert await store.head_position() == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.append("order-1", [_placed()], expected_version=1.0),
        lambda s: s.append("order-1", [_placed()], expected_version=True),
        lambda s: s.append("order-1", [_placed()], expected_version=-1),
        lambda s: s.append("order-1", _placed()),
        lambda s: s.append("order-1", []),
        lambda s: s.append("order-1", [{"order_id": "1"}]),
        lambda s: s.read_stream("order-1", from_version=0).__anext__(),
        lambda s: s.read_stream("order-1", from_version=True).__anext__(),
        lambda s: s.read_all(from_position="1").__anext__(),
    ],
)
async def test_bad_arguments_raise_invalid_argument_and_store_nothing(
    store: InMemoryEventStore, call: Any
) -> None:
    with pytest.raises(InvalidArgument):
        await call(store)
    assert await store.head_position() == 0


async def test_repository_refuses_bad_ids_and_versions(store: InMemoryEventStore) -> None:
    orders = Repository(store, Order)
    with pytest.raises(InvalidArgument):
        await orders.load(12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await orders.load("12345", version=True)
    with pytest.raises(InvalidArgument):
        await orders.load("12345", version=0)


@pytest.mark.parametrize("events", [None, 42, "abc", b"abc"])
async def test_appending_what_is_not_a_list_of_events_is_invalid(
    store: InMemoryEventStore, events: Any
) -> None:
    with pytest.raises(InvalidArgument):
        await store.append("order-1", events)
    assert await store.head_position() == 0


async def test_metadata_must_be_metadata(store: InMemoryEventStore) -> None:
    with pytest.raises(InvalidArgument, match="metadata_scope"):
        await store.append("order-1", [_placed()], metadata={"actor": "x"})  # type: ignore[arg-type]
    assert await store.head_position() == 0


async def test_repositories_and_subscriptions_refuse_wrong_types(
    store: InMemoryEventStore,
) -> None:
    with pytest.raises(InvalidArgument):
        Repository(store, dict)  # type: ignore[type-var]
    orders = Repository(store, Order)
    for wrong in (None, "order", Order):
        with pytest.raises(InvalidArgument):
            await orders.save(wrong)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        store.subscribe(categories="order")
    assert await store.head_position() == 0
