"""The JetStream read path (sequence index, decoded cache, parser shortcut) attacked as a
hostile user would: other processes writing behind a warm cache, random ranges, registry
changes, crypto-shredding, restarts, foreign traffic on the same connection, odd payloads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, create_model

from eventtape import (
    ConcurrencyError,
    Event,
    EventRegistry,
    EventtapeError,
    InvalidArgument,
    Metadata,
    NewEvent,
    StoreUnavailable,
    StreamNotFound,
    UpcastError,
)
from eventtape.privacy import FORGOTTEN, InMemoryKeyStore, Personal, PrivateEventStore
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from eventtape.stores.jetstream._readcache import _immutable
from tests.domain import REGISTRY, OrderCancelled
from tests.servers import NatsServer
from tests.test_contract_jetstream import fresh_store


def cancelled(n: int, tag: str) -> list[NewEvent[OrderCancelled]]:
    return [NewEvent(OrderCancelled(reason=f"{tag}-{i}")) for i in range(n)]


async def read(store: Any, stream_id: str, **kwargs: Any) -> list[Any]:
    return [
        (r.version, r.position, r.event_id, r.recorded_at, r.event)
        async for r in store.read_stream(stream_id, **kwargs)
    ]


async def reasons(store: Any, stream_id: str) -> list[str]:
    return [r.event.reason async for r in store.read_stream(stream_id)]


@contextlib.asynccontextmanager
async def twin(store: JetStreamEventStore, **settings: Any) -> AsyncIterator[JetStreamEventStore]:
    """Another store on the same JetStream stream, on its own connection (another process as
    far as the server can tell)."""
    config = dataclasses.replace(store.config, **settings)
    other = await JetStreamEventStore.connect(
        f"nats://127.0.0.1:{store.nc.connected_url.port}",  # type: ignore[union-attr]
        store.registry,
        config=config,
    )
    try:
        yield other
    finally:
        await other.aclose()


# -- 1. two writers, one warm cache ------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "bounds"),
    [(1, {}), (2, {}), (3, {}), (4, {"read_cache_events": 2, "sequence_index_size": 3})],
)
async def test_two_stores_interleaved_never_read_a_stale_history(
    nats_url: str, seed: int, bounds: dict[str, int]
) -> None:
    """A and B (separate connections) load, append with the loaded version, append with an
    older one, and DCB-append noise, in a random order over several streams: every load equals
    the true history, every append with the loaded version succeeds, every stale one fails."""
    rng = random.Random(seed)
    async with (
        fresh_store(nats_url, REGISTRY, read_batch=3, **bounds) as a,
        twin(a) as b,
        twin(a, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        stores = [a, b]
        truth: dict[str, list[str]] = {f"order-x{seed}{n}": [] for n in range(3)}
        for step in range(70):
            store = rng.choice(stores)
            stream_id = rng.choice(list(truth))
            action = rng.random()
            if action < 0.15:
                await store.dcb_append([OrderCancelled(reason=f"dcb-{step}")])
                continue
            loaded = await reasons(store, stream_id) if truth[stream_id] else []
            assert loaded == truth[stream_id], (step, stream_id)
            version = len(loaded)
            if version and action < 0.35:
                with pytest.raises(ConcurrencyError):
                    await store.append(
                        stream_id,
                        cancelled(1, f"stale{step}"),
                        expected_version=rng.randrange(version),
                    )
                continue
            events = cancelled(rng.randint(1, 4), f"s{step}")
            await store.append(stream_id, events, expected_version=version)
            truth[stream_id] += [e.event.reason for e in events]
        for stream_id, history in truth.items():
            if history:
                for store in (a, b):
                    assert await read(store, stream_id) == await read(plain, stream_id)
                    assert await reasons(store, stream_id) == history


async def test_concurrent_loads_and_appends_of_two_stores_stay_consistent(nats_url: str) -> None:
    """The same as above, but A's and B's command loops run at the same time (load, append
    with the loaded version, retry on ConcurrencyError): no append is lost or doubled."""
    async with fresh_store(nats_url, REGISTRY, read_batch=2) as a, twin(a) as b:
        stream_id = "order-race"
        await a.append(stream_id, cancelled(1, "seed"), expected_version=0)

        async def loop(store: JetStreamEventStore, name: str) -> int:
            done = conflicts = 0
            while done < 15:
                loaded = await reasons(store, stream_id)
                try:
                    await store.append(
                        stream_id,
                        cancelled(1 + done % 3, f"{name}{done}"),
                        expected_version=len(loaded),
                    )
                    done += 1
                except ConcurrencyError:
                    conflicts += 1
            return conflicts

        await asyncio.gather(loop(a, "a"), loop(b, "b"))
        expected = await reasons(a, stream_id)
        assert len(expected) == 1 + 2 * sum(1 + n % 3 for n in range(15))
        assert await reasons(b, stream_id) == expected
        for name in "ab":
            mine = [r for r in expected if r.startswith(name)]
            assert mine == [f"{name}{n}-{i}" for n in range(15) for i in range(1 + n % 3)]


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from eventtape import NewEvent
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
    from tests.domain import REGISTRY, OrderCancelled

    async def main(url, stream, prefix, stream_id, count):
        config = JetStreamConfig(stream=stream, subject_prefix=prefix)
        store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
        version = await store.stream_version(stream_id)
        events = [NewEvent(OrderCancelled(reason=f"proc-{version + i}")) for i in range(count)]
        await store.append(stream_id, events, expected_version=version)
        await store.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    """
)


async def test_another_process_appending_behind_a_warm_cache(nats_url: str) -> None:
    """A real second process appends between A's loads: A sees its events, appends with the
    loaded version, and an older version is a ConcurrencyError."""
    async with fresh_store(nats_url, REGISTRY) as a:
        stream_id = "order-proc"
        await a.append(stream_id, cancelled(2, "a0"), expected_version=0)
        history = await reasons(a, stream_id)
        for round_ in range(3):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WRITER,
                nats_url,
                a.config.stream,
                a.config.subject_prefix,
                stream_id,
                str(round_ + 1),
                cwd=Path(__file__).parent.parent,
            )
            assert await process.wait() == 0
            version = len(history)
            history += [f"proc-{version + i}" for i in range(round_ + 1)]
            assert await reasons(a, stream_id) == history  # never the cached, shorter one
            with pytest.raises(ConcurrencyError):
                await a.append(stream_id, cancelled(1, "old"), expected_version=version)
            await a.append(stream_id, cancelled(2, f"a{round_}"), expected_version=len(history))
            history += [f"a{round_}-0", f"a{round_}-1"]
            assert await reasons(a, stream_id) == history


# -- 2. ranges on cached streams equal the plain path ------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 4), st.booleans()), min_size=1, max_size=20
    ),
    ranges=st.lists(
        st.tuples(
            st.integers(1, 45),
            st.none() | st.integers(0, 45),
            st.none() | st.integers(0, 12),
            st.none() | st.builds(lambda s, i: s * 1000 + i, st.integers(0, 80), st.integers(0, 3)),
        ),
        min_size=1,
        max_size=8,
    ),
)
async def test_ranges_on_warm_streams_equal_the_plain_path(
    nats_url: str,
    plan: list[tuple[int, int, bool]],
    ranges: list[tuple[int, int | None, int | None, int | None]],
) -> None:
    """Appends by the cached store or by a second writer (so the index has gaps), then
    reads with from/to/limit/position_hint (any position, even another stream's or past the
    end), each twice (cold and warm): always what the plain path reads without a hint."""
    async with (
        fresh_store(nats_url, REGISTRY, read_batch=3) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        versions = [0, 0, 0, 0]
        for which, count, by_other in plan:
            writer = plain if by_other or which == 3 else store
            stream_id = f"order-r{which}"
            await writer.append(stream_id, cancelled(count, "r"), expected_version=versions[which])
            versions[which] += count
        for which in range(3):
            stream_id = f"order-r{which}"
            if not versions[which]:
                continue
            whole = await read(store, stream_id)  # warm
            assert whole == await read(plain, stream_id)
            assert [e[0] for e in whole] == list(range(1, versions[which] + 1))
            for from_version, to_version, limit, hint in ranges:
                expected = await read(
                    plain, stream_id, from_version=from_version, to_version=to_version, limit=limit
                )
                # ... and what the range means, from the whole history
                wanted = [
                    e
                    for e in whole
                    if e[0] >= from_version and (to_version is None or e[0] <= to_version)
                ]
                assert expected == wanted[:limit]
                for _ in range(2):
                    assert (
                        await read(
                            store,
                            stream_id,
                            from_version=from_version,
                            to_version=to_version,
                            limit=limit,
                            position_hint=hint or None,
                        )
                        == expected
                    ), (stream_id, from_version, to_version, limit, hint)


# -- 3. registry changes and crypto-shredding while the cache is warm --------------------


class NoteV1(Event):
    __event_type__ = "HostileNote"
    text: str


class NoteV2(Event):
    __event_type__ = "HostileNote"
    __event_version__ = 2
    text: str
    mood: str


class LateNote(Event):
    __event_type__ = "HostileLate"
    text: str


async def test_an_upcaster_or_type_registered_while_the_cache_is_warm(nats_url: str) -> None:
    """The reader caches a stream's first appends; a version-1 note it cannot upcast yet and
    a type it does not know follow: each fails with our error (nothing half-read is kept),
    then reads whole, upcast, once registered; cached appends are never re-served stale."""
    writer_registry = EventRegistry([OrderCancelled, NoteV1, LateNote])
    reader_registry = EventRegistry([OrderCancelled, NoteV2])
    async with fresh_store(nats_url, writer_registry) as writer:
        reader = await JetStreamEventStore.connect(
            f"nats://127.0.0.1:{writer.nc.connected_url.port}",  # type: ignore[union-attr]
            reader_registry,
            config=writer.config,
        )
        try:
            await writer.append("note-1", cancelled(2, "c"))
            assert await reasons(reader, "note-1") == ["c-0", "c-1"]
            assert len(reader._decoded) == 1  # warm
            await writer.append("note-1", [NoteV1(text="a")], expected_version=2)
            for _ in range(2):
                with pytest.raises(UpcastError):
                    await read(reader, "note-1")

            @reader_registry.upcaster("HostileNote", from_version=1)
            def _mood(data: dict[str, Any]) -> dict[str, Any]:
                return {**data, "mood": "upcast"}

            got = [r.event async for r in reader.read_stream("note-1")]
            assert got[2:] == [NoteV2(text="a", mood="upcast")]
            await writer.append("note-1", [LateNote(text="late")], expected_version=3)
            with pytest.raises(EventtapeError):
                await read(reader, "note-1")
            reader_registry.register(LateNote)
            got = [r.event async for r in reader.read_stream("note-1")]
            assert [type(e) for e in got] == [OrderCancelled, OrderCancelled, NoteV2, LateNote]
            assert got == [r.event async for r in reader.read_stream("note-1", from_version=1)]
        finally:
            await reader.aclose()


class Registered(Event):
    __data_subject__ = "customer:{customer_id}"
    customer_id: str
    name: Annotated[str, Personal]


async def test_a_forgotten_subject_never_loads_from_cached_plaintext(nats_url: str) -> None:
    """PrivateEventStore over JetStream: the decoded cache holds what the store holds
    (ciphertext); after forget, warm loads show FORGOTTEN, never the name."""
    registry = EventRegistry([Registered])
    async with fresh_store(nats_url, registry) as inner:
        private = PrivateEventStore(inner, InMemoryKeyStore())
        await private.append("customer-7", [Registered(customer_id="7", name="Alice")])
        for _ in range(2):  # cold, then warm
            assert [r.event.name async for r in private.read_stream("customer-7")] == ["Alice"]
        cached = [r.event.name async for r in inner.read_stream("customer-7")]
        assert cached != ["Alice"]  # the cache (and the inner store) only ever saw ciphertext
        await private.forget("customer:7")
        for _ in range(2):
            assert [r.event.name async for r in private.read_stream("customer-7")] == [FORGOTTEN]
        assert [r.event.name async for r in inner.read_stream("customer-7")] == cached


# -- 4. the parser shortcut among other traffic, odd payloads, restarts ------------------


async def test_other_subscriptions_on_the_same_connection_during_batched_loads(
    nats_url: str,
) -> None:
    """A callback subscription on the store's own connection gets a flood of messages with
    and without headers (CRLF and fake protocol lines in them) while loads run: it receives
    every one intact and in order, and every load equals the plain path."""
    async with (
        fresh_store(nats_url, REGISTRY, read_batch=5) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        nasty = "x\r\nHMSG fake 1 2 3\r\n\r\nPING\r\nMSG a 1 1\r\n"
        for n in range(30):
            await store.append(
                f"order-n{n % 3}", [NewEvent(OrderCancelled(reason=f"{nasty}{n}"))] * 1
            )
        got: list[tuple[bytes, dict[str, str] | None]] = []

        async def callback(msg: Any) -> None:
            got.append((msg.data, msg.headers))

        sent: list[tuple[bytes, dict[str, str] | None]] = []
        subscription = await store.nc.subscribe("hostile.other", cb=callback)
        publisher = await nats.connect(nats_url)
        try:

            async def flood() -> None:
                for n in range(400):
                    data = f"{nasty}{n}".encode() * (1 + n % 7)
                    headers = {"Nats-Sequence": "1", "K": f"{n}"} if n % 2 else None
                    sent.append((data, headers))
                    await publisher.publish("hostile.other", data, headers=headers)
                    if n % 50 == 0:
                        await publisher.flush()

            async def loads() -> None:
                for n in range(40):
                    stream_id = f"order-n{n % 3}"
                    assert await read(store, stream_id) == await read(plain, stream_id)

            await asyncio.gather(flood(), loads())
            await publisher.flush()
            for _ in range(200):
                if len(got) == len(sent):
                    break
                await asyncio.sleep(0.02)
            assert got == sent
        finally:
            await publisher.close()
            await subscription.unsubscribe()


async def test_appends_near_max_payload_load_whole_and_the_cache_bound_counts_bytes(
    nats_url: str,
) -> None:
    """Appends close to the server's max_payload (1 MB), more of them than one batch's
    byte limit takes: loads return every event, byte for byte, cold and warm. The decoded
    cache does not keep megabytes per event: its bound holds in bytes too."""
    async with (
        fresh_store(nats_url, REGISTRY, read_cache_events=100) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        limit = store.nc.max_payload
        big = "\r\n" + "y" * (limit - 4096)
        for n in range(10):
            await store.append("order-big", [OrderCancelled(reason=f"{n}{big}")])
        expected = await read(plain, "order-big")
        assert [e[4].reason for e in expected] == [f"{n}{big}" for n in range(10)]
        for _ in range(2):
            assert await read(store, "order-big") == expected
        held = sum(len(entry[0]) for entry in store._decoded._entries.values())
        assert held <= 100 * 4096  # not 10 MB for 10 events


async def test_many_streams_keep_the_cache_and_index_within_their_bounds(nats_url: str) -> None:
    async with (
        fresh_store(nats_url, REGISTRY, read_cache_events=50, sequence_index_size=40) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        for n in range(120):
            await store.append(f"order-m{n}", cancelled(1 + n % 3, "m"))
        for n in range(120):
            stream_id = f"order-m{n}"
            assert await read(store, stream_id) == await read(plain, stream_id)
            cache = store._decoded
            assert cache._events <= 50
            assert sum(len(entry[4]) for entry in cache._entries.values()) == cache._events
            assert sum(len(entry[0]) for entry in cache._entries.values()) == cache._bytes
            assert len(store._index) <= 40
        for n in range(0, 120, 7):  # early streams, long evicted, still load right
            stream_id = f"order-m{n}"
            assert await read(store, stream_id) == await read(plain, stream_id)


async def test_loads_in_flight_across_a_server_kill_and_restart(tmp_path: Path) -> None:
    """Loads keep running while the server is killed and restarted: each either returns the
    true history or fails with our StoreUnavailable (never a driver error, never a stale or
    mixed history), and after the restart loads are right again."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    connect = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    config = JetStreamConfig(stream="HKILL", subject_prefix="hk", request_timeout=1.0)
    try:
        store = await JetStreamEventStore.connect(server.url, REGISTRY, config=config, **connect)
        try:
            truth: dict[str, list[str]] = {}
            for n in range(4):
                stream_id = f"order-k{n}"
                await store.append(stream_id, cancelled(3 + n, f"k{n}"), expected_version=0)
                truth[stream_id] = [f"k{n}-{i}" for i in range(3 + n)]
            stop = asyncio.Event()
            failures: list[BaseException] = []
            unavailable: list[str] = []
            successes = 0

            async def loader(stream_id: str) -> None:
                nonlocal successes
                while not stop.is_set():
                    try:
                        assert await reasons(store, stream_id) == truth[stream_id]
                        successes += 1
                    except StoreUnavailable as error:
                        unavailable.append(repr(error))
                        await asyncio.sleep(0.05)
                    except BaseException as error:
                        failures.append(error)
                        return

            tasks = [asyncio.create_task(loader(s)) for s in truth]
            await asyncio.sleep(0.3)
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            for _ in range(100):
                if store.nc.is_connected:
                    break
                await asyncio.sleep(0.05)
            before = successes
            for _ in range(200):  # JetStream recovers the stream from disk first
                if successes > before + 8:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks)
            assert failures == []
            assert successes > before, unavailable[-3:]  # loads work again after the restart
            for stream_id, history in truth.items():
                assert await reasons(store, stream_id) == history
        finally:
            await store.aclose()
    finally:
        server.stop()


async def test_a_foreign_responder_answering_direct_gets_without_headers(nats_url: str) -> None:
    """Someone else answers the stream's direct-get API (a misconfigured service, a hostile
    client) with plain messages, no header block: loads fail with our StoreUnavailable or
    return the true history, and the connection keeps working."""
    async with (
        fresh_store(nats_url, REGISTRY, read_batch=2) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        for n in range(6):
            await store.append("order-f", cancelled(1 + n % 2, f"f{n}"))
        expected = await read(plain, "order-f")
        rogue = await nats.connect(nats_url)
        try:

            async def answer(msg: Any) -> None:
                await rogue.publish(msg.reply, b"not a stored message")

            await rogue.subscribe(f"$JS.API.DIRECT.GET.{store.config.stream}", cb=answer)
            await rogue.subscribe(f"$JS.API.DIRECT.GET.{store.config.stream}.>", cb=answer)
            await rogue.flush()
            for _ in range(10):
                with contextlib.suppress(StoreUnavailable):
                    assert await read(store, "order-f") == expected
                assert store.nc.is_connected
        finally:
            await rogue.close()
        assert await read(store, "order-f") == expected
        assert store.nc.is_connected


async def raw_rogue(url: str, subject: str, block: bytes | None, data: bytes) -> Any:
    """A raw-protocol client answering every request on ``subject`` with ``block`` (a header
    block, sent as is: inline statuses included, which nats-py cannot publish) and ``data``,
    or a plain message without headers (``block`` None). Returns its task; cancel it."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()  # INFO
    writer.write(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
        b"SUB %s 1\r\nSUB %s.> 2\r\nPING\r\n" % (subject.encode(), subject.encode())
    )
    await reader.readuntil(b"PONG\r\n")

    async def serve() -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                    continue
                if not line.startswith(b"MSG "):
                    continue
                fields = line.split()
                await reader.readexactly(int(fields[-1]) + 2)
                reply = fields[3]
                if block is None:
                    writer.write(b"PUB %s %d\r\n%s\r\n" % (reply, len(data), data))
                else:
                    writer.write(
                        b"HPUB %s %d %d\r\n%s%s\r\n"
                        % (reply, len(block), len(block) + len(data), block, data)
                    )
                await writer.drain()
        finally:
            writer.close()

    return asyncio.create_task(serve())


@pytest.mark.parametrize(
    "reply",
    [
        (None, b"plain, no header block"),
        (b"NATS/1.0 204 EOB\r\nNats-Num-Pending: many\r\n\r\n", b""),
        (b"NATS/1.0 204\r\n\r\n", b""),
        (b"NATS/1.0 204 EOB\r\nNats-Num-Pending: -\r\n\r\n", b""),
        (b"NATS/1.0\r\nNats-Sequence: 1\r\n\r\n", b"x"),
        (b"NATS/1.0\r\nNats-Subject: t.x\r\nNats-Sequence: one\r\n\r\n", b"x"),
        (b"NATS/1.0 503 No Responders\r\n\r\n", b""),
        (b"NATS/1.0 \r\n\r\n", b""),
        (b"NATS/1.0\r\n\xff\xfe\r\n\r\n", b"\xff"),
    ],
)
async def test_malformed_direct_get_replies_fail_the_read_not_the_connection(
    nats_url: str, reply: tuple[bytes | None, bytes]
) -> None:
    """Whatever answers the direct-get API (here a rogue responder, deterministically first)
    with a malformed reply: the read fails with StoreUnavailable, and the connection still
    reads afterwards (an exception escaping into nats-py's read loop stops it for good)."""
    block, data = reply
    async with fresh_store(nats_url, REGISTRY, request_timeout=0.5) as store:
        await store.append("order-m", cancelled(3, "m"))
        expected = await read(store, "order-m")
        rogue = await raw_rogue(nats_url, "rogue.direct", block, data)
        real_api = store._direct._api
        try:
            store._direct._api = "rogue.direct"
            store._decoded.clear()
            store._index.clear()
            with pytest.raises(StoreUnavailable):
                await read(store, "order-m")
        finally:
            store._direct._api = real_api
            rogue.cancel()
        assert await read(store, "order-m") == expected
        assert await store.stream_version("order-m") == 3


class Tagged(Event):
    __event_type__ = "HostileTagged"
    tags: list[str]
    extra: dict[str, int]


async def test_a_caller_mutating_a_loaded_event_does_not_change_the_next_load(
    nats_url: str,
) -> None:
    """Events are frozen, but a list or dict field can still be mutated in place (an
    aggregate appending to the list it was given): the next load must return what is stored,
    not what an earlier caller did to its copy."""
    registry = EventRegistry([Tagged, OrderCancelled])
    async with fresh_store(nats_url, registry) as store:
        await store.append("tagged-1", [Tagged(tags=["a"], extra={"n": 1})])
        first = [r.event async for r in store.read_stream("tagged-1")]
        first[0].tags.append("mutated")
        first[0].extra["n"] = 99
        again = [r.event async for r in store.read_stream("tagged-1")]
        assert again == [Tagged(tags=["a"], extra={"n": 1})]
        assert len(store._decoded) == 0  # such appends are decoded afresh every time
        await store.append("order-frozen", cancelled(2, "f"))  # deeply immutable: cached
        await reasons(store, "order-frozen")
        assert len(store._decoded) == 1


async def test_loads_cancelled_mid_flight_leave_nothing_wrong_behind(nats_url: str) -> None:
    """Loads given up on at every point (a caller's timeout), with appends far apart (runs
    longer than one batched get spans) by this store and another: the next loads are whole."""
    async with (
        fresh_store(nats_url, REGISTRY, read_batch=2) as store,
        twin(store) as other,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        rng = random.Random(7)
        version = 0
        for n in range(12):
            writer = store if n % 3 else other
            await writer.append("order-c", cancelled(1 + n % 3, f"c{n}"), expected_version=version)
            version += 1 + n % 3
            for m in range(rng.randint(0, 80)):  # another stream's messages between
                await other.append(f"order-noise{m % 5}", cancelled(1, "z"))
        expected = await read(plain, "order-c")
        for n in range(60):
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(read(store, "order-c"))
            for _ in range(n % 6):
                await asyncio.sleep(0)
            loop.call_soon(task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                got = await task
                assert got == expected
            if n % 10 == 0:
                assert await read(store, "order-c") == expected
        assert await read(store, "order-c") == expected
        assert store._direct._batches == {}  # no reply slot leaked by the cancelled loads


async def test_one_store_many_tasks_loading_and_appending_at_once(nats_url: str) -> None:
    """Sixteen command loops in one store over four streams, each load checked against the
    appends acknowledged so far (a load may show later ones, never miss or reorder one)."""
    async with fresh_store(nats_url, REGISTRY, read_batch=3) as store:
        acknowledged: dict[str, list[str]] = {f"order-t{n}": [] for n in range(4)}

        async def loop(worker: int) -> None:
            rng = random.Random(worker)
            for step in range(12):
                stream_id = f"order-t{rng.randrange(4)}"
                before = list(acknowledged[stream_id])
                loaded = await reasons(store, stream_id) if before else []
                assert loaded[: len(before)] == before
                events = cancelled(rng.randint(1, 3), f"w{worker}s{step}")
                try:
                    await store.append(stream_id, events, expected_version=len(loaded))
                except ConcurrencyError:
                    continue
                done = acknowledged[stream_id]
                if done == loaded:  # acknowledged in order of versions
                    done += [e.event.reason for e in events]

        await asyncio.gather(*(loop(w) for w in range(16)))
        async with twin(store, read_cache_events=0, sequence_index_size=0) as plain:
            for stream_id in acknowledged:
                if acknowledged[stream_id]:
                    assert await read(store, stream_id) == await read(plain, stream_id)


@pytest.mark.parametrize("hint", ["12", 1.5, True, b"1", [1000]])
async def test_a_position_hint_of_the_wrong_type_is_refused_warm_or_cold(
    nats_url: str, hint: Any
) -> None:
    """Refused with InvalidArgument whether or not the index covers the stream (it raised
    TypeError only on a cold read, or read on with a float)."""
    async with (
        fresh_store(nats_url, REGISTRY) as store,
        twin(store, read_cache_events=0, sequence_index_size=0) as plain,
    ):
        await store.append("order-p", cancelled(3, "p"))
        for reader in (store, plain):
            for from_version in (1, 2):
                with pytest.raises(InvalidArgument):
                    await read(reader, "order-p", position_hint=hint, from_version=from_version)
        for hint_ok in (-5, 0, 2**70):  # any int is only a hint
            assert await read(store, "order-p", position_hint=hint_ok) == await read(
                plain, "order-p"
            )


async def test_a_live_subscription_on_the_loading_connection_misses_nothing(
    nats_url: str,
) -> None:
    """A store's own subscription (its wake-ups are intercepted on the same connection as
    the loads' replies) follows another writer's appends of CRLF-laden events and metadata
    while the store loads in a loop: it yields every event once, in order; loads are whole."""
    async with fresh_store(nats_url, REGISTRY, poll_interval=5.0) as store, twin(store) as b:
        nasty = "\r\nHMSG x 1 2 3\r\n\r\n"
        metadata = Metadata(actor="user:1", headers={"k": f"v{nasty}", "Nats-Sequence": "1"})
        total = 60
        seen: list[str] = []

        async def follow() -> None:
            async with store.subscribe(categories=["order"]) as subscription:
                async for record in subscription:
                    seen.append(record.event.reason)
                    assert dict(record.headers) == dict(metadata.headers)
                    if len(seen) == total:
                        return

        async def write() -> None:
            for n in range(total // 2):
                await b.append(f"order-live{n % 2}", cancelled(2, f"{nasty}{n}"), metadata=metadata)

        async def load() -> None:
            while len(seen) < total:
                for stream_id in ("order-live0", "order-live1"):
                    with contextlib.suppress(StreamNotFound):
                        got = await reasons(store, stream_id)
                        assert got == sorted(got, key=lambda r: int(r.split("\n")[-1][:-2]))
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(follow(), write(), load()), 60)
        assert seen == [f"{nasty}{n}-{i}" for n in range(total // 2) for i in range(2)]


class Loose(BaseModel):  # not frozen: its attributes can be reassigned
    n: int


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    n: int


@pytest.mark.parametrize(
    ("annotation", "value", "shared"),
    [
        (str, "x", True),
        (int, 1, True),
        (Decimal, Decimal(1), True),
        (UUID, uuid4(), True),
        (datetime, datetime(2026, 1, 1), True),
        (tuple[Frozen, ...], (Frozen(n=1),), True),
        (frozenset[str], frozenset("ab"), True),
        (str | None, None, True),
        (Literal["a", "b"], "a", True),
        (Any, "text", True),  # decided by the value
        (Any, (1, "a"), True),
        (list[str], ["a"], False),
        (dict[str, int], {"a": 1}, False),
        (set[int], {1}, False),
        (Loose, Loose(n=1), False),
        (tuple[list[int], ...], ([1],), False),
        (list[int] | None, [1], False),
        (Any, [1], False),
        (Any, {"a": 1}, False),
        (Any, bytearray(b"x"), False),
    ],
)
def test_only_deeply_immutable_events_are_shared_between_loads(
    annotation: Any, value: Any, shared: bool
) -> None:
    """What the decoded cache keeps, by field type (and by value where the type says Any)."""
    probe = create_model("Probe", __base__=Event, value=(annotation, ...))
    assert _immutable(probe(value=value)) is shared


async def test_messages_larger_than_a_batch_byte_limit_still_load(tmp_path: Path) -> None:
    """A server configured with a max_payload above the 8 MB a batched get asks for at most:
    appends of 9 MB load whole, cold and warm, alone and among small ones."""
    # (the ``cluster`` argument only appends raw text to the server's configuration)
    server = NatsServer(tmp_path / "nats", cluster="max_payload: 16MB\nmax_pending: 64MB\n")
    server.start()
    config = JetStreamConfig(stream="HUGE", subject_prefix="hg")
    try:
        store = await JetStreamEventStore.connect(server.url, REGISTRY, config=config)
        try:
            async with twin(store, read_cache_events=0, sequence_index_size=0) as plain:
                huge = "h" * (9 * 1024 * 1024)
                await store.append("order-h", cancelled(2, "small"))
                await store.append("order-h", [OrderCancelled(reason=huge)])
                await plain.append("order-h", [OrderCancelled(reason=huge + "2")])
                await store.append("order-h", cancelled(1, "after"))
                expected = ["small-0", "small-1", huge, huge + "2", "after-0"]
                for reader in (plain, store, store):
                    assert await reasons(reader, "order-h") == expected
                    tail = [
                        r.event.reason async for r in reader.read_stream("order-h", from_version=4)
                    ]
                    assert tail == expected[3:]
        finally:
            await store.aclose()
    finally:
        server.stop()
