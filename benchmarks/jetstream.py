"""JetStream suite: eventtape's JetStream store against raw nats-py on the same local nats-server.

Every figure is measured in one run, on one server, side by side with raw nats-py doing the
same work: the same subjects, the same message bodies (eventtape's own encoding, precomputed for
the raw side), the same ``Nats-Expected-Last-Subject-Sequence`` header, the same concurrency.

Figures: ``concurrent_append_1`` and ``concurrent_append_3`` (appends/s, 256 in flight),
``sequential_append_p50`` / ``_p99`` (ms), ``load_100`` and ``load_10000_snapshot`` (ms, against
the round trip of one direct get); ``load_100_uncached`` (every message decoded on every load),
``read_tail_3000``, ``load_100_in_200k_stream`` with its ``_uncached`` and ``_cold`` (first load
by a process that never saw the order) variants.
Uses EVENTTAPE_BENCH_NATS_URL if set, else starts nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import nats
from nats.aio.client import Client

from eventtape import Metadata, NewEvent, Repository
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore, JetStreamSnapshotStore
from eventtape.stores.jetstream._codec import encode_append

from ._harness import emit
from .core import PRICE, REGISTRY, SKUS, ItemAdded, Order

SUITE = "jetstream"
IN_FLIGHT = 256
STREAMS_PER_WORKER = 4


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """Yield a server URL: EVENTTAPE_BENCH_NATS_URL, or a fresh local nats-server."""
    url = os.environ.get("EVENTTAPE_BENCH_NATS_URL")
    if url:
        yield url
        return
    from tests.servers import NatsServer  # the same helper the tests use

    with tempfile.TemporaryDirectory() as directory:
        server = NatsServer(Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def fresh_store(url: str) -> JetStreamEventStore:
    name = f"B{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"bench.{name}")
    return await JetStreamEventStore.connect(url, REGISTRY, config=config)


def events(count: int) -> list[ItemAdded]:
    """Events to append (immutable, so reused: each append still gets fresh event ids)."""
    return _EVENTS[count]


_EVENTS = {
    count: [ItemAdded(sku=SKUS[n % len(SKUS)], quantity=1, price=PRICE) for n in range(count)]
    for count in (1, 3)
}


async def eventtape_concurrent(store: JetStreamEventStore, appends: int, per_append: int) -> float:
    """Appends/s with IN_FLIGHT workers, each appending to its own streams at exact versions."""
    rounds = appends // (IN_FLIGHT * STREAMS_PER_WORKER)
    run = uuid4().hex[:6]

    async def worker(w: int) -> None:
        versions = [0] * STREAMS_PER_WORKER
        for _ in range(rounds):
            for s in range(STREAMS_PER_WORKER):
                result = await store.append(
                    f"order-{run}x{w}x{s}", events(per_append), expected_version=versions[s]
                )
                versions[s] = result.version

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))
    return rounds * IN_FLIGHT * STREAMS_PER_WORKER / (time.perf_counter() - start)


async def raw_concurrent(nc: Client, prefix: str, appends: int, per_append: int) -> float:
    """The same with ``js.publish``: same bodies, same header, same concurrency."""
    js = nc.jetstream()
    rounds = appends // (IN_FLIGHT * STREAMS_PER_WORKER)
    run = uuid4().hex[:6]
    new = [NewEvent(event) for event in events(per_append)]
    body, _, _ = encode_append(REGISTRY, "order-x", 1, new, Metadata())

    async def worker(w: int) -> None:
        last = [0] * STREAMS_PER_WORKER
        for _ in range(rounds):
            for s in range(STREAMS_PER_WORKER):
                ack = await js.publish(
                    f"{prefix}.order.order-{run}x{w}x{s}",
                    body,
                    headers={
                        "Nats-Msg-Id": uuid4().hex,
                        "Nats-Expected-Last-Subject-Sequence": str(last[s]),
                    },
                )
                last[s] = ack.seq

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))
    return rounds * IN_FLIGHT * STREAMS_PER_WORKER / (time.perf_counter() - start)


async def latencies(store: JetStreamEventStore, count: int) -> tuple[list[float], list[float]]:
    """Sequential appends to one stream, and raw publishes with the same header, interleaved."""
    js = store.nc.jetstream()
    stream_id = f"order-{uuid4().hex[:8]}"
    raw_subject = store.config.subject("order", f"order-raw{uuid4().hex[:8]}")
    body, _, _ = encode_append(REGISTRY, stream_id, 1, [NewEvent(events(1)[0])], Metadata())
    ours, theirs = [], []
    version, last = 0, 0
    for _ in range(count):
        start = time.perf_counter()
        version = (await store.append(stream_id, events(1), expected_version=version)).version
        ours.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        ack = await js.publish(
            raw_subject,
            body,
            headers={"Nats-Msg-Id": uuid4().hex, "Nats-Expected-Last-Subject-Sequence": str(last)},
        )
        theirs.append((time.perf_counter() - start) * 1000)
        last = ack.seq
    return ours, theirs


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def direct_get_ms(store: JetStreamEventStore, subject: str, repeat: int) -> float:
    """Best-of-rounds mean round trip of one raw direct get (last message of a subject)."""
    api = f"$JS.API.DIRECT.GET.{store.config.stream}.{subject}"
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            await store.nc.request(api, b"", timeout=5)
        best = min(best, (time.perf_counter() - start) / repeat * 1000)
    return best


async def raw_batch_ms(nc: Client, stream: str, subject: str, repeat: int) -> float:
    """Best-of-rounds time for raw nats-py to fetch every message of a subject in one batch."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    request = json.dumps({"seq": 1, "next_by_subj": subject, "batch": 256}).encode()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
            while True:
                msg = await subscription.next_msg(timeout=5)
                if msg.headers and "Status" in msg.headers:
                    break
        best = min(best, (time.perf_counter() - start) / repeat * 1000)
    await subscription.unsubscribe()
    return best


async def wire_batch_ms(url: str, stream: str, subject: str, repeat: int) -> float:
    """Best-of-rounds time for the same batched get over a bare socket, no client library:
    the server's own floor for sending these messages (bytes received, nothing parsed)."""
    address = url.split("//")[-1].rsplit("@", 1)[-1]
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        writer.write(
            b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
            b"SUB _WIRE.x 1\r\nPING\r\n"
        )
        while await reader.readline() != b"PONG\r\n":
            pass
        request = json.dumps({"seq": 1, "next_by_subj": subject, "batch": 256}).encode()
        command = f"PUB $JS.API.DIRECT.GET.{stream} _WIRE.x {len(request)}\r\n".encode()
        command += request + b"\r\n"
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeat):
                writer.write(command)
                received = b""
                while b"NATS/1.0 204" not in received[-300:]:
                    received += await reader.read(1 << 20)
            best = min(best, (time.perf_counter() - start) / repeat * 1000)
        return best
    finally:
        writer.close()


async def load_ms(repo: Repository[Order], order_id: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            await repo.load(order_id)
        best = min(best, (time.perf_counter() - start) / repeat * 1000)
    return best


async def read_ms(store: JetStreamEventStore, stream_id: str, from_version: int) -> float:
    """Best-of-rounds time of ``read_stream(from_version=...)`` to the end."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            async for _record in store.read_stream(stream_id, from_version=from_version):
                pass
        best = min(best, (time.perf_counter() - start) / 10 * 1000)
    return best


async def tail_and_spread_figures(
    url: str,
    store: JetStreamEventStore,
    nc: Client,
    load_100: float,
    load_100_uncached: float,
    quick: bool,
) -> None:
    """``read_tail_3000``: the last event of a 3,000-event stream, read by a store that has
    never seen the stream, against the same read on a 10-event stream.
    ``load_100_in_200k_stream``: a 100-event order whose appends are spread through a stream
    of N messages (200,000; 20,000 with --quick), against ``load_100`` (contiguous appends)."""
    for count, stream_id in ((10, "order-tail10"), (3000, "order-tail3000")):
        for version in range(count):
            await store.append(stream_id, events(1), expected_version=version)
    cold = await JetStreamEventStore.connect(url, REGISTRY, config=store.config)
    try:
        short = await read_ms(cold, "order-tail10", 10)
        emit(
            SUITE,
            "read_tail_3000",
            "ms",
            "lower",
            await read_ms(cold, "order-tail3000", 3000),
            ("the same read on a 10-event stream", short),
        )
    finally:
        await cold.aclose()

    size = 20_000 if quick else 200_000
    js = nc.jetstream()
    noise, _, _ = encode_append(REGISTRY, "order-noise", 1, [NewEvent(events(1)[0])], Metadata())
    repo = Repository(store, Order)
    order = Order.place("spread", "user")
    await repo.save(order)
    gap = size // 100
    for n in range(99):
        futures = [
            await js.publish_async(store.config.subject("order", f"order-n{k % 5000}"), noise)
            for k in range(n * gap, (n + 1) * gap)
        ]
        await asyncio.gather(*futures)
        order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
        await repo.save(order)
    await js.publish_async_completed()
    name = "load_100_in_200k_stream"  # the same name at the quick size, which it states
    # A process that has not seen the order: the server walks between its appends, once.
    cold_spread = await cold_load_ms(url, store.config, "spread")
    cold_contiguous = await cold_load_ms(url, store.config, "load100")
    reader = await JetStreamEventStore.connect(url, REGISTRY, config=store.config)
    uncached = await JetStreamEventStore.connect(
        url, REGISTRY, config=dataclasses.replace(store.config, read_cache_events=0)
    )
    try:
        emit(
            SUITE,
            name,
            "ms",
            "lower",
            await load_ms(Repository(reader, Order), "spread", 5),
            (f"load_100 (contiguous); this stream holds {size} messages", load_100),
        )
        emit(
            SUITE,
            f"{name}_uncached",
            "ms",
            "lower",
            await load_ms(Repository(uncached, Order), "spread", 5),
            ("load_100_uncached (contiguous)", load_100_uncached),
        )
        emit(
            SUITE,
            f"{name}_cold",
            "ms",
            "lower",
            cold_spread,
            ("the same first load of the contiguous order", cold_contiguous),
        )
    finally:
        await reader.aclose()
        await uncached.aclose()


async def cold_load_ms(url: str, config: JetStreamConfig, order_id: str) -> float:
    """Best of 3 first loads, each by a store (its own connection) that never saw the order."""
    best = float("inf")
    for _ in range(3):
        fresh = await JetStreamEventStore.connect(url, REGISTRY, config=config)
        try:
            start = time.perf_counter()
            await Repository(fresh, Order).load(order_id)
            best = min(best, (time.perf_counter() - start) * 1000)
        finally:
            await fresh.aclose()
    return best


async def main(url: str, quick: bool) -> None:
    appends = 4 * IN_FLIGHT * STREAMS_PER_WORKER if quick else 20 * IN_FLIGHT * STREAMS_PER_WORKER
    store = await fresh_store(url)
    nc = await nats.connect(url)
    prefix = store.config.subject_prefix
    try:
        # Warm both paths up, then alternate sides and keep each side's best.
        await eventtape_concurrent(store, IN_FLIGHT * STREAMS_PER_WORKER, 1)
        await raw_concurrent(nc, prefix, IN_FLIGHT * STREAMS_PER_WORKER, 1)
        best: dict[str, float] = {"ours1": 0, "ours3": 0, "raw1": 0}
        for _ in range(2 if quick else 3):
            best["raw1"] = max(best["raw1"], await raw_concurrent(nc, prefix, appends, 1))
            best["ours1"] = max(best["ours1"], await eventtape_concurrent(store, appends, 1))
            best["ours3"] = max(best["ours3"], await eventtape_concurrent(store, appends, 3))
        emit(
            SUITE,
            "concurrent_append_1",
            "appends/s",
            "higher",
            best["ours1"],
            ("raw js.publish", best["raw1"]),
        )
        emit(
            SUITE,
            "concurrent_append_3",
            "appends/s",
            "higher",
            best["ours3"],
            ("eventtape, 1 event per append", best["ours1"]),
        )

        ours, theirs = await latencies(store, 300 if quick else 2000)
        for q in (50, 99):
            emit(
                SUITE,
                f"sequential_append_p{q}",
                "ms",
                "lower",
                percentile(ours, q),
                ("raw js.publish round trip", percentile(theirs, q)),
            )

        # Loads: an order of 100 single-event appends; one of 10,000 events with a snapshot.
        plain = Repository(store, Order)
        order = Order.place("load100", "user")
        await plain.save(order)
        for n in range(99):
            order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
            await plain.save(order)
        subject = store.config.subject("order", "order-load100")
        raw = await direct_get_ms(store, subject, 50)
        load_100 = await load_ms(plain, "load100", 20)
        emit(SUITE, "load_100", "ms", "lower", load_100, ("raw direct get", raw))
        # The same 100 messages fetched by raw nats-py (one batched direct get, no decoding):
        # what reading them costs before eventtape does anything.
        raw_batch = await raw_batch_ms(nc, store.config.stream, subject, 20)
        emit(
            SUITE,
            "load_100_vs_raw_batch",
            "ms",
            "lower",
            load_100,
            ("raw batched direct get", raw_batch),
        )

        wire = await wire_batch_ms(url, store.config.stream, subject, 20)
        emit(
            SUITE,
            "load_100_vs_wire",
            "ms",
            "lower",
            load_100,
            ("the same batched get over a bare socket, nothing parsed", wire),
        )
        # Every load fetches all 100 messages; without the decoded cache each is decoded too.
        uncached_store = await JetStreamEventStore.connect(
            url, REGISTRY, config=dataclasses.replace(store.config, read_cache_events=0)
        )
        try:
            load_100_uncached = await load_ms(Repository(uncached_store, Order), "load100", 20)
        finally:
            await uncached_store.aclose()
        emit(
            SUITE,
            "load_100_uncached",
            "ms",
            "lower",
            load_100_uncached,
            (
                "the same batched get over a bare socket, nothing parsed",
                wire,
            ),
        )
        await tail_and_spread_figures(url, store, nc, load_100, load_100_uncached, quick)

        snapshots = await JetStreamSnapshotStore.open(
            nc, stream=f"S{store.config.stream}", subject_prefix=f"{prefix}snap"
        )
        # 10,000 events saved 10 at a time, snapshots every 100 events by the default policy,
        # then a tail of 20 single-event saves after the last snapshot.
        with_snapshots = Repository(store, Order, snapshots=snapshots)
        big = Order.place("load10k", "user")
        for n in range(9_999):
            big.add_item(SKUS[n % len(SKUS)], 1, PRICE)
            if len(big.pending_events) == 10:
                await with_snapshots.save(big)
        await with_snapshots.save(big)
        for _ in range(20):
            big.add_item(SKUS[0], 1, PRICE)
            await plain.save(big)
        loaded = await with_snapshots.load("load10k")
        assert loaded.version == 10_020, "wrong state"
        assert loaded.total == PRICE * 10_019, "wrong state"
        emit(
            SUITE,
            "load_10000_snapshot",
            "ms",
            "lower",
            await load_ms(with_snapshots, "load10k", 20),
            ("raw direct get", raw),
        )
        await snapshots.aclose()
    finally:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(store.config.stream)
        await nc.close()
        await store.aclose()


def run(*, quick: bool) -> None:
    """Print every figure of the JetStream suite."""
    with nats_server() as url:
        asyncio.run(main(url, quick))
