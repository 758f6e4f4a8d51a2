"""A projection runner killed with SIGKILL mid-batch, again and again, while events keep
coming: afterwards no event was applied twice and none was skipped.

EVENTTAPE_CRASH_ROUNDS makes it longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from eventtape import ProjectionRunner, Repository
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, Order, item
from tests.projections import OrderSummary

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def start_runner(url: str, config: JetStreamConfig, db: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_projection_runner",
            url,
            config.stream,
            config.subject_prefix,
            str(db),
            "20",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.stdout is not None
    process.stdout.close()


def checkpoint(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        row = connection.execute("SELECT max(position) FROM eventtape_checkpoints").fetchone()
    return int(row[0] or 0)


async def test_sigkill_mid_batch_applies_every_event_exactly_once(
    nats_url: str, tmp_path: Path
) -> None:
    rounds = int(os.environ.get("EVENTTAPE_CRASH_ROUNDS", "6"))
    name = f"P{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"p.{name}")
    store = await JetStreamEventStore.connect(nats_url, REGISTRY, config=config)
    orders = Repository(store, Order)
    db = tmp_path / "read.db"
    rng = random.Random(7)
    placed = 0

    async def write(count: int) -> None:
        nonlocal placed
        for _ in range(count):
            order = Order.place(str(placed), "u", [item()])
            for n in range(rng.randint(0, 3)):
                order.add_item(item(f"s{n}"))
            await orders.save(order)
            placed += 1

    try:
        await write(30)
        kills = 0
        for _ in range(rounds):
            runner = start_runner(nats_url, config, db)
            writing = asyncio.create_task(write(60))
            await asyncio.sleep(rng.uniform(0.03, 0.25))
            kill(runner)
            kills += 1
            await writing
        runner = start_runner(nats_url, config, db)
        head = await store.head_position()
        for _ in range(600):
            if checkpoint(db) >= head:
                break
            await asyncio.sleep(0.05)
        kill(runner)

        events = [r async for r in store.read_all(categories=["order"])]
        with contextlib.closing(sqlite3.connect(db)) as connection:
            applied = connection.execute("SELECT position, times FROM applied__g1").fetchall()
            crashed_rows = connection.execute("SELECT * FROM orders ORDER BY order_id").fetchall()
        assert sorted(position for position, _ in applied) == [r.position for r in events]
        assert all(times == 1 for _, times in applied), "an event was applied twice"

        # And the read model equals a clean, uninterrupted replay.
        clean_sink = SqliteSink(tmp_path / "clean.db")
        async with ProjectionRunner(store, clean_sink, [OrderSummary()]) as clean:
            await clean.wait_until(head, timeout=30)
            clean_rows = [
                tuple(r) for r in await clean_sink.fetch("SELECT * FROM orders ORDER BY order_id")
            ]
        await clean_sink.aclose()
        assert [tuple(r) for r in crashed_rows] == clean_rows
        assert len(clean_rows) == placed
        assert kills == rounds
    finally:
        await store.nc.jetstream().delete_stream(name)
        await store.aclose()
