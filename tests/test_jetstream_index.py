"""Loads through the sequence index and the decoded-append cache: always what the plain path
(a walk of the stream, every message decoded) returns, whatever happened to the stream since
this process learned where its appends are."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.errors import ProtocolError

from eventtape import EventRegistry, NewEvent, StreamNotFound
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from eventtape.stores.jetstream._batch import PendingBatch, intercept
from eventtape.stores.jetstream._readcache import SequenceIndex
from tests.domain import REGISTRY, OrderCancelled
from tests.servers import NatsServer
from tests.test_contract_jetstream import fresh_store


def cancelled(n: int, tag: str) -> list[NewEvent[OrderCancelled]]:
    return [NewEvent(OrderCancelled(reason=f"{tag}-{i}")) for i in range(n)]


async def read(store: JetStreamEventStore, stream_id: str, **kwargs: Any) -> list[Any]:
    return [
        (r.version, r.position, r.event_id, r.recorded_at, r.event)
        async for r in store.read_stream(stream_id, **kwargs)
    ]


@contextlib.asynccontextmanager
async def plain_reader(store: JetStreamEventStore) -> Any:
    """A store on the same stream that reads the plain way: no index, no decoded cache."""
    config = dataclasses.replace(store.config, sequence_index_size=0, read_cache_events=0)
    other = await JetStreamEventStore.open(store.nc, store.registry, config=config)
    try:
        yield other
    finally:
        await other.aclose()


class Spy:
    """Counts the walks (``batch``) and by-sequence requests (``batches``) a store sends."""

    def __init__(self, store: JetStreamEventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.walks: list[int] = []
        self.requests: list[list[tuple[int, int]]] = []
        direct = store._direct
        walk, batches = direct.batch, direct.batches

        def spy_walk(start: int, subject_filter: str, **kw: Any) -> Any:
            self.walks.append(start)
            return walk(start, subject_filter, **kw)

        async def spy_batches(subject_filter: str, requests: list[tuple[int, int]]) -> Any:
            self.requests.append(list(requests))
            return await batches(subject_filter, requests)

        monkeypatch.setattr(direct, "batch", spy_walk)
        monkeypatch.setattr(direct, "batches", spy_batches)

    def reset(self) -> None:
        self.walks.clear()
        self.requests.clear()


async def spread(store: JetStreamEventStore, stream_id: str, appends: int, noise: int) -> None:
    """``appends`` appends of 1-3 events, each after ``noise`` messages of other streams."""
    rng = random.Random(appends)
    version = 0
    for n in range(appends):
        for k in range(noise):
            await store.append(f"order-noise{k % 7}", cancelled(1, f"n{n}.{k}"))
        count = rng.randint(1, 3)
        await store.append(
            stream_id, cancelled(count, f"{stream_id}:{n}"), expected_version=version
        )
        version += count


async def test_a_load_by_the_writer_reads_its_appends_by_sequence_not_by_walking(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await spread(store, "order-s", 30, noise=80)
        spy = Spy(store, monkeypatch)
        first = await read(store, "order-s")
        assert spy.walks == []  # learned from its own appends: no walk at all
        (requests,) = spy.requests
        assert all(batch == 0 for _, batch in requests[:-1])  # lone appends: plain gets
        spy.reset()
        assert await read(store, "order-s") == first  # now from the decoded cache
        assert spy.walks == []
        assert [len(requests) for requests in spy.requests] == [1]
        async with plain_reader(store) as plain:
            assert await read(plain, "order-s") == first
            for from_version in (1, 2, 17, len(first), len(first) + 1):
                for to_version in (None, from_version, from_version + 5, 0):
                    assert await read(
                        store, "order-s", from_version=from_version, to_version=to_version
                    ) == await read(
                        plain, "order-s", from_version=from_version, to_version=to_version
                    )


async def test_a_cold_reader_learns_the_index_from_its_first_read(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await spread(store, "order-s", 20, noise=30)
        other = await JetStreamEventStore.connect(nats_url, REGISTRY, config=store.config)
        try:
            spy = Spy(other, monkeypatch)
            first = await read(other, "order-s")
            assert spy.walks == [1]  # cold: the server walks, once
            spy.reset()
            # Appends it did not see: found after what it knows, then learned too.
            await store.append("order-s", cancelled(2, "late"), expected_version=len(first))
            again = await read(other, "order-s")
            assert again[: len(first)] == first
            assert len(again) == len(first) + 2
            assert spy.walks == []
            spy.reset()
            assert await read(other, "order-s") == again
            assert spy.walks == []
        finally:
            await other.aclose()


async def test_deleted_and_purged_messages_make_the_index_fall_back(nats_url: str) -> None:
    async with (
        fresh_store(nats_url, REGISTRY, deny_delete=False, deny_purge=False) as store,
        plain_reader(store) as plain,
    ):
        await spread(store, "order-d", 12, noise=3)
        before = await read(store, "order-d")
        assert await read(store, "order-d") == before  # index and cache are warm
        js = store.nc.jetstream()
        middle = before[len(before) // 2][1] // 1000  # the sequence of a middle append
        await js.delete_msg(store.config.stream, middle)
        after_delete = await read(plain, "order-d")
        assert len(after_delete) < len(before)
        assert await read(store, "order-d") == after_delete
        assert await read(store, "order-d") == after_delete
        await js.purge_stream(store.config.stream, subject=store.config.subject("order", "order-d"))
        # The read-your-writes check remembers version 25 (it would wait for it, then raise
        # StoreUnavailable); a purge is an operator's act it does not cover. Forget it here.
        store._appender.tails.pop("order-d")
        with pytest.raises(StreamNotFound):
            await read(store, "order-d")
        # Appended again from version 1 after the purge: new sequences, all read right.
        await store.append("order-d", cancelled(3, "again"), expected_version=0)
        assert await read(store, "order-d") == await read(plain, "order-d")
        assert [v for v, *_ in await read(store, "order-d")] == [1, 2, 3]


async def test_a_re_created_stream_is_never_served_from_the_cache(tmp_path: Path) -> None:
    """Memory storage: a server restart loses the stream; another process creates it again and
    appends other events at the very same sequences. The first store reads those."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    connect = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    config = JetStreamConfig(stream="RECREATED", subject_prefix="rc", storage="memory")
    try:
        store = await JetStreamEventStore.connect(server.url, REGISTRY, config=config, **connect)
        try:
            for n in range(10):
                await store.append("order-r", cancelled(1, f"first{n}"), expected_version=n)
            first = await read(store, "order-r")
            assert await read(store, "order-r") == first  # cached, and the stream append-only
            server.stop()
            server.start()
            other = await JetStreamEventStore.connect(server.url, REGISTRY, config=config)
            try:
                for n in range(10):
                    await other.append("order-r", cancelled(1, f"second{n}"), expected_version=n)
                for _ in range(100):  # until the first store has reconnected
                    if store.nc.is_connected:
                        break
                    await asyncio.sleep(0.05)
                got = await read(store, "order-r")
                assert [r[4].reason for r in got] == [f"second{n}-0" for n in range(10)]
                assert [r[1] for r in got] == [r[1] for r in first]  # the same sequences
                assert got == await read(other, "order-r")
            finally:
                await other.aclose()
        finally:
            await store.aclose()
    finally:
        server.stop()


async def test_an_index_that_contradicts_the_server_is_dropped(nats_url: str) -> None:
    """Versions out of order, or a sequence holding another stream: never served."""
    async with fresh_store(nats_url, REGISTRY) as store, plain_reader(store) as plain:
        await spread(store, "order-x", 8, noise=2)
        await spread(store, "order-y", 3, noise=0)
        expected = await read(plain, "order-x")
        appends: dict[int, list[int]] = {}
        for version, position, *_ in expected:
            appends.setdefault(position // 1000, []).append(version)
        sequences = sorted(appends)

        def learn_truth() -> None:
            store._index.forget("order-x")
            for sequence in sequences:
                versions = appends[sequence]
                store._index.learn("order-x", versions[0], versions[-1], sequence)

        for corrupt in (
            list(reversed(sequences)),  # versions out of order
            [sequences[0], *(s + 1 for s in sequences[1:])],  # neighbours: other streams
            [sequences[0], sequences[2], sequences[1], *sequences[3:]],
        ):
            learn_truth()
            # What the index could never learn by itself, written into it.
            store._index._streams["order-x"].sequences = array("q", corrupt)
            assert await read(store, "order-x") == expected
            assert store._index.lookup("order-x", 1, None) is not None  # learned again
        learn_truth()
        assert await read(store, "order-x") == expected


def test_the_index_keeps_only_contiguous_versions_in_increasing_sequences() -> None:
    index = SequenceIndex(max_entries=5)
    index.learn("a", 1, 2, 10)
    index.learn("a", 3, 3, 12)
    index.learn("a", 7, 7, 20)  # a gap: not recorded
    assert index.lookup("a", 1, None) == ([(10, 1), (12, 3)], 4)
    assert index.lookup("a", 3, None) == ([(12, 3)], 4)
    assert index.lookup("a", 4, None) is None
    index.learn("a", 4, 4, 11)  # before the last known sequence: the store changed
    assert index.lookup("a", 1, None) is None
    index.learn("a", 1, 1, 30)
    index.learn("a", 1, 1, 31)  # contradicts what was learned
    assert index.lookup("a", 1, None) is None
    for n in range(4):
        index.learn(f"s{n}", 1, 1, 100 + n)
        index.learn(f"s{n}", 2, 2, 200 + n)
    assert len(index) <= 5  # least recently used streams forgotten
    assert index.lookup("s3", 1, None) == ([(103, 1), (203, 2)], 3)
    assert index.lookup("s0", 1, None) is None
    off = SequenceIndex(max_entries=0)
    off.learn("a", 1, 1, 1)
    assert off.lookup("a", 1, None) is None


async def test_a_registry_that_gains_an_upcaster_empties_the_decoded_cache(
    nats_url: str,
) -> None:
    registry = EventRegistry([OrderCancelled])
    async with fresh_store(nats_url, registry) as store:
        await store.append("order-u", cancelled(2, "u"))
        await read(store, "order-u")
        assert len(store._decoded) == 1
        registry.upcaster("OrderCancelled", from_version=7)(lambda data: data)
        await read(store, "order-u")
        store._decoded.check_registry()
        assert len(store._decoded) == 1  # emptied, then refilled by the read after the change


@pytest.mark.parametrize("appends", [40, 400])  # 100 and 1,000 events
async def test_100_and_1000_events_equal_the_plain_path(nats_url: str, appends: int) -> None:
    async with fresh_store(nats_url, REGISTRY) as store, plain_reader(store) as plain:
        version = 0
        for n in range(appends):
            count = 1 + n % 4
            await store.append("order-k", cancelled(count, f"k{n}"), expected_version=version)
            version += count
            if n % 3 == 0:
                await store.append("order-noise", cancelled(1, f"z{n}"))
        expected = await read(plain, "order-k")
        assert len(expected) == version == appends * 5 // 2
        for _ in range(2):  # by sequence, then from the cache
            assert await read(store, "order-k") == expected
        middle = version // 2
        assert (
            await read(store, "order-k", from_version=middle, limit=7)
            == (expected[middle - 1 : middle + 6])
        )


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=25),
    reads=st.lists(st.tuples(st.integers(1, 40), st.none() | st.integers(0, 40)), max_size=6),
)
async def test_any_interleaving_reads_like_the_plain_path(
    nats_url: str, plan: list[tuple[int, int]], reads: list[tuple[int, int | None]]
) -> None:
    async with fresh_store(nats_url, REGISTRY, read_batch=4) as store, plain_reader(store) as plain:
        versions = [0, 0, 0]
        for which, count in plan:
            stream_id = f"order-h{which}"
            await store.append(stream_id, cancelled(count, "h"), expected_version=versions[which])
            versions[which] += count
        for which in range(3):
            stream_id = f"order-h{which}"
            if not versions[which]:
                continue
            for from_version, to_version in [(1, None), *reads]:
                assert await read(
                    store, stream_id, from_version=from_version, to_version=to_version
                ) == await read(plain, stream_id, from_version=from_version, to_version=to_version)


async def test_replies_split_anywhere_and_mixed_with_other_traffic_parse_the_same() -> None:
    """The parser shortcut: frames cut at every byte, other subscriptions' messages and PINGs
    in between; ours reach the handler, the others nats-py's usual path."""
    block = (
        b"NATS/1.0\r\nNats-Stream: S\r\nNats-Subject: p.order.order-1\r\nNats-Sequence: %d\r\n"
        b"Nats-Time-Stamp: 2026-11-25T08:29:19.31333371Z\r\nNats-Num-Pending: 0\r\n\r\n"
    )
    frames, expected = b"", []
    for n in range(1, 6):
        header = block % n
        data = b'{"n":%d}' % n
        frames += b"HMSG _INBOX.x.%d 7 %d %d\r\n" % (n, len(header), len(header) + len(data))
        frames += header + data + b"\r\n"
        expected.append((n, data))
        frames += b"MSG other.subject 9 5\r\nhello\r\n" if n % 2 else b"PING\r\n"
    eob = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\n\r\n"
    frames += b"HMSG _INBOX.x.9 7 %d %d\r\n%s\r\n" % (len(eob), len(eob), eob)
    for cut in range(0, len(frames), 7):
        nc, others, pending = Client(), [], PendingBatch()
        _record_others(nc, others)
        assert intercept(nc, 7, lambda subject, data, headers: pending.feed(data, headers))  # noqa: B023
        await nc._ps.parse(frames[:cut])
        await nc._ps.parse(frames[cut:])
        messages, more = await pending.done
        assert [(m.sequence, m.data) for m in messages] == expected
        assert more == 0
        assert [m.subject for m in messages] == ["p.order.order-1"] * 5
        assert others == [(9, b"hello"), (0, b"PING")] * 2 + [(9, b"hello")]
        assert nc.stats["in_msgs"] == 6


def _record_others(nc: Client, others: list[tuple[int, bytes]]) -> None:
    """Stand in for nats-py's own handling of what is not ours."""

    async def process_msg(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:
        others.append((sid, data))

    async def process_ping() -> None:
        others.append((0, b"PING"))

    nc._process_msg = process_msg  # type: ignore[method-assign]
    nc._process_ping = process_ping  # type: ignore[method-assign]


async def test_loads_stay_right_across_a_server_restart(tmp_path: Path) -> None:
    """File storage: the cache and index stay valid over the reconnect, and appends made
    meanwhile by another process are found."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    connect = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    config = JetStreamConfig(stream="RESTART", subject_prefix="rs")
    try:
        store = await JetStreamEventStore.connect(server.url, REGISTRY, config=config, **connect)
        try:
            await spread(store, "order-r", 15, noise=2)
            first = await read(store, "order-r")
            assert await read(store, "order-r") == first
            server.stop()
            server.start()
            other = await JetStreamEventStore.connect(server.url, REGISTRY, config=config)
            try:
                await other.append(
                    "order-r", cancelled(2, "meanwhile"), expected_version=len(first)
                )
            finally:
                await other.aclose()
            for _ in range(100):
                if store.nc.is_connected:
                    break
                await asyncio.sleep(0.05)
            got = await read(store, "order-r")
            assert got[: len(first)] == first
            assert [r[4].reason for r in got[len(first) :]] == ["meanwhile-0", "meanwhile-1"]
            assert await read(store, "order-r") == got
        finally:
            await store.aclose()
    finally:
        server.stop()


async def test_a_limit_added_to_a_running_stream_ends_cache_only_loads(nats_url: str) -> None:
    """An operator adds max_age: once the store has looked at the configuration again, loads
    fetch every message, and the expired ones are gone even though the last one is not."""
    async with fresh_store(nats_url, REGISTRY) as store:
        for version in range(4):
            await store.append("order-t", cancelled(1, "old"), expected_version=version)
        assert len(await read(store, "order-t")) == 4
        assert await store._append_only()
        js = store.nc.jetstream()
        info = await js.stream_info(store.config.stream)
        info.config.max_age = 1.5
        info.config.duplicate_window = 1.5
        await js.update_stream(info.config)
        await asyncio.sleep(0.8)
        await store.append("order-t", cancelled(1, "new"), expected_version=4)
        assert len(await read(store, "order-t")) == 5  # all five cached
        for _ in range(60):  # until the four old ones expired
            if (await js.stream_info(store.config.stream)).state.messages == 1:
                break
            await asyncio.sleep(0.05)
        store._append_only_checked = float("-inf")  # as if 5 s had passed
        assert [version for version, *_ in await read(store, "order-t")] == [5]
        assert not store._append_only_stream


async def test_a_malformed_reply_line_is_left_to_nats_py() -> None:
    nc, others, pending = Client(), [], PendingBatch()
    _record_others(nc, others)
    assert intercept(nc, 7, lambda subject, data, headers: pending.feed(data, headers))
    with pytest.raises(ProtocolError):
        await nc._ps.parse(b"HMSG _INBOX.x.1 7 1x 20\r\n" + b"x" * 30 + b"\r\n")
    assert not pending.messages


async def test_a_stream_update_announced_by_the_server_empties_index_and_cache(
    nats_url: str,
) -> None:
    async with fresh_store(nats_url, REGISTRY) as store:
        await spread(store, "order-a", 4, noise=1)
        await read(store, "order-a")
        assert len(store._decoded) > 0
        assert len(store._index) > 0
        assert await store._append_only()
        js = store.nc.jetstream()
        info = await js.stream_info(store.config.stream)
        info.config.description = "edited by an operator"
        await js.update_stream(info.config)
        for _ in range(100):
            if not len(store._decoded):
                break
            await asyncio.sleep(0.02)
        assert len(store._decoded) == 0
        assert len(store._index) == 0
        assert store._append_only_checked < 0  # the configuration is read again next time


def test_the_decoded_cache_is_bounded_and_checks_the_bytes() -> None:
    from eventtape.stores.jetstream._codec import StoredMessage, decode_envelope
    from eventtape.stores.jetstream._readcache import DecodedCache

    cache = DecodedCache(REGISTRY, max_events=10)

    def message(sequence: int, events: int, reason: str = "r") -> StoredMessage:
        stored_events = [
            {
                "id": f"00000000-0000-4000-8000-{n:012d}",
                "type": "OrderCancelled",
                "schema": 1,
                "data": {"reason": reason},
            }
            for n in range(events)
        ]
        body = json.dumps({"stream": "order-1", "version": 1, "events": stored_events}).encode()
        return StoredMessage.raw(sequence, "p.order.order-1", "2026-11-25T00:00:00Z", b"", body)

    for sequence in range(1, 8):
        stored = message(sequence, 3)
        envelope = decode_envelope(stored, "p.")
        cache.put(stored, envelope, envelope.records(REGISTRY))
        assert cache._events <= 10
    assert len(cache) == 3  # three appends of three events fit in ten
    assert cache.get(message(7, 3)) is not None
    assert cache.get(message(7, 3, reason="other")) is None  # other bytes, same sequence
    assert cache.get(message(1, 3)) is None  # evicted
    big = message(99, 11)
    envelope = decode_envelope(big, "p.")
    cache.put(big, envelope, envelope.records(REGISTRY))  # larger than the whole cache
    assert cache.get(big) is None
