"""Saga runners killed with SIGKILL between any two steps, again and again, while orders keep
coming: in the end every order is completed or fully compensated, money and stock are
conserved, and no command was applied twice. EVENTTAPE_CRASH_ROUNDS makes it longer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.shop import SHOP_REGISTRY
from tests.test_sagas import check_invariants, open_shop, place

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def start(url: str, config: JetStreamConfig, db: Path, kind: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_saga_runner",
            url,
            config.stream,
            config.subject_prefix,
            str(db),
            kind,
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


def done(db: Path, saga: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        row = connection.execute(
            "SELECT position FROM eventtape_checkpoints"
            " WHERE projection = ? AND partition = 'done'",
            (saga,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize(
    ("kind", "saga"), [("fulfillment", "fulfillment"), ("process", "orderprocess")]
)
async def test_sigkill_between_steps_keeps_every_invariant(
    nats_url: str, tmp_path: Path, kind: str, saga: str
) -> None:
    rounds = int(os.environ.get("EVENTTAPE_CRASH_ROUNDS", "5"))
    name = f"G{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"g.{name}")
    store = await JetStreamEventStore.connect(nats_url, SHOP_REGISTRY, config=config)
    db = tmp_path / "checkpoints.db"
    rng = random.Random(11)
    try:
        shop = await open_shop(store)
        placed = 0

        async def write(count: int) -> None:
            nonlocal placed
            for _ in range(count):
                await place(shop, str(placed), rng.choice(["rich", "poor"]), rng.randint(1, 3))
                placed += 1
                await asyncio.sleep(0.005)

        for _ in range(rounds):
            runner = start(nats_url, config, db, kind)
            writing = asyncio.create_task(write(8))
            await asyncio.sleep(rng.uniform(0.02, 0.15))
            kill(runner)
            await writing
        runner = start(nats_url, config, db, kind)
        try:
            stable = 0
            for _ in range(400):
                head = await store.head_position()
                stable = stable + 1 if done(db, saga) >= head else 0
                if stable >= 5:  # caught up, and nothing new caused for a while
                    break
                await asyncio.sleep(0.05)
        finally:
            kill(runner)
        await check_invariants(shop, 10, Decimal("101"))
        assert placed == rounds * 8
    finally:
        await store.nc.jetstream().delete_stream(name)
        await store.aclose()
