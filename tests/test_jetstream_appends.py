"""The JetStream append path at its edges: sizes, limits, lost servers, retries with other
content. Every failure is an error of ours that says whether anything was stored."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from eventtape import (
    AppendRefused,
    DuplicateEventId,
    InvalidArgument,
    NewEvent,
    StoreError,
    StoreUnavailable,
)
from eventtape.stores.jetstream import MAX_EVENTS_PER_APPEND, JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, OrderCancelled
from tests.servers import NatsServer
from tests.test_contract_jetstream import fresh_store


async def test_exactly_the_maximum_number_of_events_is_one_append(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        events = [OrderCancelled(reason="x") for _ in range(MAX_EVENTS_PER_APPEND)]
        result = await store.append("order-max", events, expected_version=0)
        assert (result.first_version, result.version) == (1, MAX_EVENTS_PER_APPEND)
        with pytest.raises(InvalidArgument, match="at most 1000"):
            await store.append("order-max", [*events, OrderCancelled(reason="y")])
        assert await store.stream_version("order-max") == MAX_EVENTS_PER_APPEND


async def test_an_append_larger_than_max_payload_is_refused_before_sending(
    nats_url: str,
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        limit = store.nc.max_payload
        huge = OrderCancelled(reason="x" * (limit + 1))
        with pytest.raises(AppendRefused, match="max_payload") as caught:
            await store.append("order-big", [huge])
        assert caught.value.stored is False
        many = [OrderCancelled(reason="y" * 1200) for _ in range(1000)]  # ~1.2 MB in all
        with pytest.raises(AppendRefused, match="max_payload"):
            await store.append("order-big", many)
        # Just under the limit is fine: the check is not a guess on the safe side.
        fits = OrderCancelled(reason="z" * (limit - 2000))
        assert (await store.append("order-big", [fits])).version == 1


async def test_a_retry_finding_its_id_stored_with_other_content_is_a_duplicate_id(
    nats_url: str,
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        first = NewEvent(OrderCancelled(reason="original"), uuid4())
        await store.append("order-r", [first], expected_version=0)
        # The "retry" expects version 0 again (a conflict), and its id is stored with other
        # content: not success, not a plain conflict.
        other = NewEvent(OrderCancelled(reason="forged"), first.event_id)
        with pytest.raises(DuplicateEventId):
            await store.append("order-r", [other], expected_version=0)
        # Through a store that has not seen the stream (no tail cache): the same.
        again = await JetStreamEventStore.open(store.nc, REGISTRY, config=store.config)
        with pytest.raises(DuplicateEventId):
            await again.append("order-r", [other], expected_version=0)
        assert await store.stream_version("order-r") == 1


async def test_no_stream_behind_the_subjects_is_unavailable_nothing_stored(
    nats_url: str,
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await store.nc.jetstream().delete_stream(store.config.stream)
        with pytest.raises(StoreUnavailable, match="nothing was stored") as caught:
            await store.append("order-gone", [OrderCancelled(reason="x")])
        assert caught.value.stored is False


async def test_a_server_going_away_is_one_of_our_errors(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    name = f"G{uuid4().hex[:8]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"g.{name}", request_timeout=1)
    store = await JetStreamEventStore.connect(
        server.url, REGISTRY, config=config, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        await store.append("order-1", [OrderCancelled(reason="before")])
        server.kill()
        outcomes = []
        for n in range(20):  # while reconnecting: buffered, timed out or refused, never nats'
            try:
                await store.append("order-1", [OrderCancelled(reason=f"down {n}" * 200)])
                outcomes.append("stored")
            except StoreError as error:
                outcomes.append(type(error).__name__)
        assert set(outcomes) <= {"StoreUnavailable", "stored"}
        assert "StoreUnavailable" in outcomes
    finally:
        await store.aclose()
        server.stop()


async def test_a_read_short_of_a_version_this_store_saw_is_retried_then_reported(
    nats_url: str,
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await store.append("order-ryw", [OrderCancelled(reason="1")], expected_version=0)
        assert [r.version async for r in store.read_stream("order-ryw")] == [1]
        # As if a replica answering the read were behind what this store appended.
        version, sequence = store._appender.tails["order-ryw"]
        store._appender.tails["order-ryw"] = (version + 1, sequence + 1)
        with pytest.raises(StoreUnavailable, match="stay behind version 2"):
            [r async for r in store.read_stream("order-ryw")]
        # A limited read asks only for what exists: no retry, no error.
        assert [r.version async for r in store.read_stream("order-ryw", to_version=1)] == [1]


async def test_a_missing_stream_is_not_created_again_when_creation_is_off(
    nats_url: str,
) -> None:
    from eventtape import StoreConfigurationError

    async with fresh_store(nats_url, REGISTRY) as store:
        await store.append("order-1", [OrderCancelled(reason="x")])
        await store.nc.jetstream().delete_stream(store.config.stream)  # "lost"
        import dataclasses

        careful = dataclasses.replace(store.config, create_stream=False)
        with pytest.raises(StoreConfigurationError, match="does not exist"):
            await JetStreamEventStore.open(store.nc, REGISTRY, config=careful)
        names = [info.config.name async for info in _streams(store)]
        assert store.config.stream not in names


async def _streams(store: JetStreamEventStore):  # type: ignore[no-untyped-def]
    for info in await store.nc.jetstream().streams_info():
        yield info


async def test_a_full_stream_refuses_the_append(nats_url: str) -> None:
    """Any other refusal by the server (here: max_bytes reached, discard new) is AppendRefused,
    and nothing is stored."""
    async with fresh_store(nats_url, REGISTRY, max_bytes=4096) as store:
        await store.append("order-1", [OrderCancelled(reason="first")])
        with pytest.raises(AppendRefused) as caught:
            await store.append("order-1", [OrderCancelled(reason="x" * 8000)])
        assert caught.value.stored is False
        assert await store.stream_version("order-1") == 1


async def test_appends_while_the_server_is_down_raise_store_unavailable(tmp_path: Path) -> None:
    """No nats-py exception escapes while the server is down, a full reconnect buffer
    included: each append raises StoreUnavailable, saying whether anything may be stored; and
    closing the store afterwards does not fail."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    store = await JetStreamEventStore.connect(
        server.url,
        REGISTRY,
        config=JetStreamConfig(request_timeout=0.5),
        pending_size=1024,
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        connect_timeout=1,
    )
    try:
        await store.append("order-1", [OrderCancelled(reason="before")])
        server.kill()
        for n in range(5):
            with pytest.raises(StoreUnavailable) as caught:
                await store.append("order-1", [OrderCancelled(reason="x" * 600 * n)])
            assert caught.value.stored in (False, None)
    finally:
        await store.aclose()
        server.stop()
