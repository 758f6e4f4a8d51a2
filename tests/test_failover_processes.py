"""Several OS processes share a projection's partitions through JetStream leases, writing one
SQLite file: one is killed with SIGKILL, one paused with SIGSTOP past its lease, one restarted.
The others take over within seconds, and every event is applied exactly once throughout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import pytest

from eventtape import Repository
from eventtape._runtime.sharing import lease_key, owner_of
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore, JetStreamLeases
from tests.domain import REGISTRY, Order, item

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TTL = 1.5
PARTS = 6
KEYS = [lease_key("projection", "order_summary", n, PARTS) for n in range(PARTS)]


class ReadModel:
    """The shared read model, a SQLite file or a PostgreSQL schema, read from the test."""

    def __init__(self, tmp_path: Path, postgres_url: str | None) -> None:
        self.url = postgres_url
        self.schema = f"f{uuid4().hex[:10]}"
        self.path = tmp_path / "read.db"
        self.env = {**os.environ, "EVENTTAPE_TEST_SCHEMA": self.schema}

    @property
    def arg(self) -> str:
        if self.url is None:
            return str(self.path)
        # As the scaling-out guide advises: the server ends a transaction left open by a
        # paused runner, so the runner taking its partitions over is not kept waiting.
        return (
            f"{self.url}{'&' if '?' in self.url else '?'}idle_in_transaction_session_timeout=1000"
        )

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url is None:
            with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as connection:
                return [tuple(row) for row in connection.execute(sql).fetchall()]
        import asyncpg

        connection = await asyncpg.connect(self.url, server_settings={"search_path": self.schema})
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await connection.close()


class Runner:
    def __init__(self, argv: list[str], member: str, log: Path, env: dict[str, str]) -> None:
        self.member = member
        self.log = log
        self._stderr: IO[str] = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.shared_projection_runner", *argv, member],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def end(self, sig: signal.Signals = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
        self.process.wait(15)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


def members_sharing_every_way() -> list[str]:
    """Three member names such that each owns a partition, and still does with any one gone."""
    for n in itertools.count():
        names = [f"m{n}a", f"m{n}b", f"m{n}c"]
        groups = [names, *itertools.combinations(names, 2)]
        if all({owner_of(key, list(group)) for key in KEYS} == set(group) for group in groups):
            return names
    raise AssertionError("unreachable")


async def checkpoints(db: ReadModel) -> list[int]:
    rows = await db.rows(
        "SELECT partition, position FROM eventtape_checkpoints WHERE generation = 1"
    )
    found = {str(row[0]): int(row[1]) for row in rows}
    return [found.get(f"{n}/{PARTS}", 0) for n in range(PARTS)]


async def caught_up(db: ReadModel, head: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while min(reached := await checkpoints(db)) < head:
        assert time.monotonic() < deadline, f"stuck at {reached} < {head}"
        await asyncio.sleep(0.05)


async def owners(leases: JetStreamLeases) -> dict[str, str]:
    return {key: lease.owner for key, lease in (await leases.holders(KEYS)).items()}


async def settled(leases: JetStreamLeases, members: list[str], within: float = 20.0) -> float:
    """Wait until every partition is held by its owner among ``members``; return how long."""
    start = time.monotonic()
    wanted = {key: owner_of(key, members) for key in KEYS}
    while (held := await owners(leases)) != wanted:
        assert time.monotonic() - start < within, f"not settled: {held} != {wanted}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def exactly_once(db: ReadModel) -> list[tuple[int, int]]:
    rows = await db.rows("SELECT position, times FROM applied__g1 ORDER BY 1")
    return [(int(position), int(times)) for position, times in rows]


@pytest.fixture(params=["sqlite", "postgres"])
def read_model(request: pytest.FixtureRequest, tmp_path: Path) -> ReadModel:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return ReadModel(tmp_path, url)


async def test_runners_share_partitions_and_fail_over(
    nats_url: str, tmp_path: Path, read_model: ReadModel
) -> None:
    name = f"F{uuid4().hex[:10]}"
    bucket = f"L{name}"
    config = JetStreamConfig(stream=name, subject_prefix=f"f.{name}")
    store = await JetStreamEventStore.connect(nats_url, REGISTRY, config=config)
    leases = await JetStreamLeases.open(store.nc, bucket=bucket, ttl=TTL)
    orders = Repository(store, Order)
    db = read_model
    argv = [nats_url, name, config.subject_prefix, db.arg, bucket, str(TTL), str(PARTS)]
    placed = 0

    async def write(count: int, pause: float = 0.0) -> None:
        nonlocal placed
        for _ in range(count):
            order = Order.place(str(placed), "u", [item()])
            order.add_item(item("extra"))
            await orders.save(order)
            placed += 1
            await asyncio.sleep(pause)

    async def check() -> None:
        head = await store.head_position()
        await caught_up(db, head)
        events = [r.position async for r in store.read_all(categories=["order"])]
        assert await exactly_once(db) == [(position, 1) for position in events]

    a_name, b_name, c_name = members_sharing_every_way()
    runners: list[Runner] = []
    try:
        await write(30)
        runners = [
            Runner(argv, member, tmp_path / f"{member}.log", db.env)
            for member in (a_name, b_name, c_name)
        ]
        a, b, _ = runners
        await settled(leases, [a_name, b_name, c_name])
        await check()

        # kill -9 one owner while events keep coming: the others take its partitions.
        writing = asyncio.create_task(write(40, 0.01))
        a.end(signal.SIGKILL)
        took = await settled(leases, [b_name, c_name])
        await writing
        await check()
        print(f"taken over {took:.2f} s after SIGKILL (ttl {TTL} s)")
        assert took < 4 * TTL

        # Pause another past its lease: the last one takes its share; woken, it is fenced out.
        paused_share = [key for key, owner in (await owners(leases)).items() if owner == b_name]
        assert paused_share
        b.send(signal.SIGSTOP)
        writing = asyncio.create_task(write(30, 0.01))
        await settled(leases, [c_name])
        await writing
        b.send(signal.SIGCONT)
        await write(20)
        await check()
        await asyncio.sleep(TTL)  # b's next lease round
        b.end()
        log = b.log.read_text()
        # Woken, b tried to commit the batch it had read (its socket is read before its lease
        # timer fires) and the sink refused it: without the fence that event is applied twice.
        assert "is older than the stored" in log, log[-3000:]
        assert "lost the lease" in log

        # Restarted, the killed one gets its share back by hand-over, not by expiry.
        runners.append(Runner(argv, a_name, tmp_path / f"{a_name}.log", db.env))
        await settled(leases, [a_name, c_name])
        await write(20)
        await check()
        assert await db.rows("SELECT count(*) FROM orders") == [(placed,)]
    finally:
        for runner in runners:
            if runner.process.returncode is None:
                runner.end()
        await store.nc.jetstream().delete_key_value(bucket)
        await store.nc.jetstream().delete_stream(name)
        await store.aclose()
