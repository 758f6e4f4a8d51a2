"""Audit suite: what tamper evidence costs.

Figures:

- ``verify_memory`` (events/s): :func:`eventtape.verify` over a whole in-memory store (1,000
  streams, the core suite's order events, 1- and 3-event appends, metadata with an actor and
  a correlation id). Target: 100,000/s.
- ``verify_jetstream`` (events/s): the same check reading a local nats-server (information).
- ``chained_append_memory`` and ``chained_append_jetstream`` (events/s): the same appends with
  the chain on (the default, SHA-256) as a ratio to the chain off (``chain=None``), interleaved
  round by round in one process, best round of each. Target: ratio >= 0.95. A keyed (HMAC)
  chain is measured too, as ``chained_append_memory_hmac`` (information).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from uuid import uuid4

from eventtape import HashChain, InMemoryEventStore, Metadata, verify
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

from ._harness import best_seconds, emit
from .core import REGISTRY, OrderPlaced
from .jetstream import nats_server

SUITE = "audit"
STREAMS = 1000


def _metadata(n: int) -> Metadata:
    return Metadata(actor=f"user:{n % 97}", correlation_id=f"c-{n}")


async def _fill(store: InMemoryEventStore | JetStreamEventStore, events: int) -> None:
    streams = [f"order-{uuid.uuid4().hex}" for _ in range(STREAMS)]
    n = 0
    while n < events:
        count = 3 if n % 4 == 0 else 1
        batch = [OrderPlaced(user_id=f"u{(n + i) % 100}") for i in range(count)]
        await store.append(streams[n % STREAMS], batch, metadata=_metadata(n))
        n += count


def verify_memory(runner: asyncio.Runner, events: int, rounds: int) -> None:
    """A fresh store per round: the in-memory store computes its links when first read, so
    the time includes computing them as well as checking them."""
    best, total = float("inf"), 0
    for _ in range(rounds):
        store = InMemoryEventStore(REGISTRY)
        runner.run(_fill(store, events))
        seconds = best_seconds(lambda store=store: runner.run(_verified(store)), 1)  # type: ignore[misc]
        best = min(best, seconds)
        total = store_events(store)
    emit(SUITE, "verify_memory", "events/s", "higher", total / best)


async def _verified(store: InMemoryEventStore) -> None:
    result = await verify(store)
    if not result.ok:
        raise AssertionError(result)


def store_events(store: InMemoryEventStore) -> int:
    return sum(len(records) for records in store._streams.values())


def chained_append_memory(runner: asyncio.Runner, appends: int, rounds: int) -> None:
    events = [OrderPlaced(user_id=f"u{n % 100}") for n in range(appends)]
    metadata = [_metadata(n) for n in range(appends)]
    streams = [f"order-{uuid.uuid4().hex}" for _ in range(STREAMS)]

    def appending(chain: HashChain | None) -> float:
        async def work() -> None:
            store = InMemoryEventStore(REGISTRY, chain=chain)
            for n, event in enumerate(events):
                await store.append(streams[n % STREAMS], [event], metadata=metadata[n])

        return best_seconds(lambda: runner.run(work()), 1)

    best = {"sha256": float("inf"), "hmac": float("inf"), "off": float("inf")}
    chains = {"sha256": HashChain(), "hmac": HashChain(b"k" * 32), "off": None}
    for _ in range(rounds):  # interleaved: every side sees the same noise
        for name, chain in chains.items():
            best[name] = min(best[name], appending(chain))
    rate = {name: appends / seconds for name, seconds in best.items()}
    emit(SUITE, "chained_append_memory", "events/s", "higher", rate["sha256"], ("off", rate["off"]))
    emit(
        SUITE,
        "chained_append_memory_hmac",
        "events/s",
        "higher",
        rate["hmac"],
        ("off", rate["off"]),
    )


async def _jetstream_store(url: str, name: str, chain: HashChain | None) -> JetStreamEventStore:
    config = JetStreamConfig(stream=name, subject_prefix=f"bench.{name}")
    return await JetStreamEventStore.connect(url, REGISTRY, config=config, chain=chain)


async def chained_append_jetstream(url: str, appends: int, rounds: int, writers: int) -> None:
    """``writers`` tasks, each appending one event at a time to its own streams, expecting the
    version it wrote last (the load-then-save path: the tail is cached)."""
    name = f"A{uuid4().hex[:10]}"
    stores = {
        "on": await _jetstream_store(url, name, HashChain()),
        "off": await _jetstream_store(url, name, None),
    }
    try:
        best = {"on": float("inf"), "off": float("inf")}
        for round_ in range(rounds):
            # Alternate which side goes first: neither always runs on a warmer server.
            order = list(stores.items()) if round_ % 2 == 0 else list(stores.items())[::-1]
            for side, store in order:
                streams = [f"order-{uuid.uuid4().hex}" for _ in range(writers)]

                async def writer(stream_id: str, store: JetStreamEventStore = store) -> None:
                    for version in range(appends // writers):
                        await store.append(
                            stream_id,
                            [OrderPlaced(user_id="u1")],
                            expected_version=version,
                            metadata=_metadata(version),
                        )

                start = time.perf_counter()
                await asyncio.gather(*(writer(stream) for stream in streams))
                best[side] = min(best[side], time.perf_counter() - start)
        total = appends // writers * writers
        emit(
            SUITE,
            "chained_append_jetstream",
            "events/s",
            "higher",
            total / best["on"],
            ("off", total / best["off"]),
        )
        start = time.perf_counter()
        result = await verify(stores["on"])
        seconds = time.perf_counter() - start
        emit(SUITE, "verify_jetstream", "events/s", "higher", result.events / seconds)
    finally:
        await stores["on"].nc.jetstream().delete_stream(name)
        for store in stores.values():
            await store.aclose()


def run(*, quick: bool) -> None:
    """Print every figure of the audit suite."""
    events, appends, rounds = (20_000, 20_000, 4) if quick else (200_000, 100_000, 8)
    with asyncio.Runner() as runner:
        verify_memory(runner, events, rounds)
        chained_append_memory(runner, appends, rounds)
    with nats_server() as url:
        # Many short rounds, sides alternating: the best of many is less at the mercy of one
        # noisy moment than the best of a few long ones.
        asyncio.run(
            chained_append_jetstream(
                url, 1_024 if quick else 2_048, 12 if quick else 24, writers=16
            )
        )
