"""Reading streams on JetStream: every version range right, whichever hint the read starts at,
and replies parsed off the wire exactly as nats-py would parse them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from eventtape import NewEvent, StreamNotFound
from eventtape.stores.jetstream import JetStreamEventStore
from eventtape.stores.jetstream._batch import (
    BatchStatusError,
    PendingBatch,
    header_block,
    parse_header_block,
)
from tests.domain import REGISTRY, OrderCancelled
from tests.test_contract_jetstream import fresh_store


def cancelled(n: int, tag: str) -> list[NewEvent[OrderCancelled]]:
    return [NewEvent(OrderCancelled(reason=f"{tag}-{i}")) for i in range(n)]


async def versions(store: JetStreamEventStore, stream_id: str, **kwargs: Any) -> list[int]:
    return [record.version async for record in store.read_stream(stream_id, **kwargs)]


async def fill(store: JetStreamEventStore, seed: int) -> dict[str, list[str]]:
    """Three interleaved streams of appends of 1 to 4 events; returns each stream's reasons."""
    rng = random.Random(seed)
    model: dict[str, list[str]] = {"order-a": [], "order-b": [], "order-c": []}
    for n in range(45):
        stream_id = rng.choice(sorted(model))
        events = cancelled(rng.randint(1, 4), f"{stream_id}:{n}")
        await store.append(stream_id, events, expected_version=len(model[stream_id]))
        model[stream_id] += [e.event.reason for e in events]
    return model


async def check_every_range(store: JetStreamEventStore, model: dict[str, list[str]]) -> None:
    for stream_id, reasons in model.items():
        total = len(reasons)
        for from_version in range(1, total + 3):
            for to_version in (None, from_version, from_version + 2, total, total + 5):
                expected = list(range(from_version, min(to_version or total, total) + 1))
                got = [
                    (r.version, r.event.reason)  # type: ignore[attr-defined]
                    async for r in store.read_stream(
                        stream_id, from_version=from_version, to_version=to_version
                    )
                ]
                assert got == [(v, reasons[v - 1]) for v in expected], (
                    stream_id,
                    from_version,
                    to_version,
                )
        assert await versions(store, stream_id, from_version=2, limit=3) == [2, 3, 4][: total - 1]


async def test_every_range_of_interleaved_multi_event_streams(nats_url: str) -> None:
    """Read by the store that wrote (hints: tails and first messages) and by a fresh one."""
    async with fresh_store(nats_url, REGISTRY, read_batch=5) as store:
        model = await fill(store, 13)
        await check_every_range(store, model)
        other = await JetStreamEventStore.connect(nats_url, REGISTRY, config=store.config)
        try:
            await check_every_range(other, model)
            # The reader's hints survive appends it did not see.
            await store.append(
                "order-a", cancelled(3, "late"), expected_version=len(model["order-a"])
            )
            model["order-a"] += ["late-0", "late-1", "late-2"]
            await check_every_range(other, model)
        finally:
            await other.aclose()


async def test_a_tail_read_starts_at_the_tail_and_a_load_at_the_first_message(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not from sequence 1: the server walks every message between the start and a match.
    (Without the sequence index, which would read these by sequence: see test_jetstream_index.)"""
    async with fresh_store(nats_url, REGISTRY, sequence_index_size=0) as store:
        for n in range(30):
            await store.append("order-other", cancelled(1, f"o{n}"))
        for n in range(20):
            await store.append("order-1", cancelled(2, f"x{n}"))
            await store.append("order-other", cancelled(1, f"p{n}"))
        starts: list[int] = []
        batch = store._direct.batch

        def spy(start: int, subject_filter: str, **kw: Any) -> Any:
            starts.append(start)
            return batch(start, subject_filter, **kw)

        monkeypatch.setattr(store._direct, "batch", spy)
        assert await versions(store, "order-1", from_version=40) == [40]
        tail_sequence = starts[-1]
        assert tail_sequence > 30  # the last message of order-1, not sequence 1
        assert await versions(store, "order-1") == list(range(1, 41))
        assert await versions(store, "order-1") == list(range(1, 41))
        assert starts[-1] == 31  # order-1's first message
        # A store that has never seen the stream asks for its tail first (one direct get).
        other = await JetStreamEventStore.connect(nats_url, REGISTRY, config=store.config)
        try:
            other_batch = other._direct.batch
            cold: list[int] = []

            def other_spy(start: int, subject_filter: str, **kw: Any) -> Any:
                cold.append(start)
                return other_batch(start, subject_filter, **kw)

            monkeypatch.setattr(other._direct, "batch", other_spy)
            assert await versions(other, "order-1", from_version=40) == [40]
            assert cold == [tail_sequence]
        finally:
            await other.aclose()


async def test_wrong_hints_only_cost_time(nats_url: str) -> None:
    async with fresh_store(nats_url, REGISTRY, sequence_index_size=0) as store:
        model = await fill(store, 7)
        for stream_id, reasons in model.items():
            assert await versions(store, stream_id) == list(range(1, len(reasons) + 1))
        total = len(model["order-a"])
        for first in (1, 2, 10_000):
            for tail in ((total, 1), (total, 10_000), (1, 3)):
                store._firsts["order-a"] = first
                store._appender.tails["order-a"] = tail
                assert await versions(store, "order-a", from_version=total) == [total]
                store._firsts["order-a"] = first
                store._appender.tails["order-a"] = tail
                assert await versions(store, "order-a") == list(range(1, total + 1))
        with pytest.raises(StreamNotFound):
            await versions(store, "order-nothing")


async def test_many_batches_with_small_batches_and_big_gaps(nats_url: str) -> None:
    """A huge stream at small scale: many batches, matches far apart."""
    async with fresh_store(nats_url, REGISTRY, read_batch=3) as store:
        for n in range(60):
            await store.append("order-big", cancelled(1 + n % 3, f"b{n}"))
            for k in range(n % 5):
                await store.append(f"order-noise{k}", cancelled(1, f"n{n}"))
        total = sum(1 + n % 3 for n in range(60))
        assert await versions(store, "order-big") == list(range(1, total + 1))
        assert await versions(store, "order-big", from_version=total - 1) == [total - 1, total]
        assert await versions(store, "order-big", from_version=50, to_version=52) == [50, 51, 52]
        positions = [r.position async for r in store.read_all()]
        assert positions == sorted(positions)
        assert len(positions) == len(set(positions))


def test_header_blocks_parse_like_nats() -> None:
    assert parse_header_block(b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 7\r\n\r\n") == (
        "204",
        {"Nats-Num-Pending": "7"},
    )
    assert parse_header_block(b"NATS/1.0 404 No Messages\r\n\r\n") == ("404", {})
    status, headers = parse_header_block(
        b"NATS/1.0\r\nNats-Subject: a.b\r\nNats-Time-Stamp: 2026-01-01T00:00:00Z\r\n\r\n"
    )
    assert status is None
    assert headers == {"Nats-Subject": "a.b", "Nats-Time-Stamp": "2026-01-01T00:00:00Z"}


async def test_unexpected_replies_are_reported_not_swallowed() -> None:
    pending = PendingBatch()
    pending.feed(b"{}", b"NATS/1.0\r\nNats-Subject: a.b\r\nNats-Sequence: 3\r\n\r\n")
    pending.feed(b"", b"NATS/1.0 408 Request Timeout\r\n\r\n")
    with pytest.raises(BatchStatusError, match="408"):
        await pending.done
    broken = PendingBatch()
    broken.feed(b"{}", b"NATS/1.0\r\nNats-Subject: a.b\r\n\r\n")  # no sequence
    with pytest.raises(KeyError):
        await broken.done
    late = PendingBatch()
    late.feed(b"", b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 2\r\n\r\n")
    late.feed(b"", b"NATS/1.0 408 Request Timeout\r\n\r\n")  # after the end: ignored
    assert await late.done == ([], 2)


async def test_without_the_hook_replies_take_nats_py_path_with_the_same_results(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a future nats-py changes ``_process_msg``, reads still work (through the callback)."""
    from eventtape.stores.jetstream import _direct

    monkeypatch.setattr(_direct, "intercept", lambda nc, sid, handler: False)
    async with fresh_store(nats_url, REGISTRY, read_batch=4) as store:
        model = await fill(store, 3)
        await check_every_range(store, model)
        with pytest.raises(StreamNotFound):
            await versions(store, "order-nothing")


def test_header_blocks_rebuilt_from_nats_py_headers_parse_back() -> None:
    for block in (
        b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 7\r\n\r\n",
        b"NATS/1.0 404\r\n\r\n",
        b"NATS/1.0\r\nNats-Subject: a.b\r\nNats-Sequence: 3\r\n\r\n",
    ):
        status, headers = parse_header_block(block)
        nats_py = {**({"Status": status} if status else {}), **headers}
        assert parse_header_block(header_block(nats_py)) == (status, headers)
