"""Server restarts and kill -9 against the JetStream store: nothing acknowledged is lost,
nothing is duplicated, subscriptions resume where they were.

Sizes are small by default so CI stays fast; EVENTTAPE_CRASH_ROUNDS and
EVENTTAPE_CRASH_APPENDERS make
the crash test longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path
from uuid import UUID

import pytest

from eventtape import ConcurrencyError, Event, NewEvent, RecordedEvent, StoreUnavailable
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, OrderCancelled
from tests.servers import NatsServer

pytestmark = pytest.mark.slow

CONNECT = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1, "connect_timeout": 1}


async def connect(server: NatsServer, **settings: object) -> JetStreamEventStore:
    config = JetStreamConfig(request_timeout=1.0, poll_interval=0.2, **settings)  # type: ignore[arg-type]
    return await JetStreamEventStore.connect(server.url, REGISTRY, config=config, **CONNECT)


async def test_subscription_resumes_after_a_server_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        store = await connect(server)
        for n in range(10):
            await store.append(f"order-{n % 3}", [OrderCancelled(reason=f"before-{n}")])
        received: list[RecordedEvent[Event]] = []
        subscription = store.subscribe()
        first_ten = asyncio.Event()

        async def consume() -> None:
            async for record in subscription:
                received.append(record)
                if len(received) == 10:
                    first_ten.set()
                if len(received) == 20:
                    return

        consuming = asyncio.create_task(consume())
        await asyncio.wait_for(first_ten.wait(), 10)
        server.stop()
        await asyncio.sleep(0.3)
        server.start()
        for n in range(10):
            while True:
                try:
                    await store.append(f"order-{n % 3}", [OrderCancelled(reason=f"after-{n}")])
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
        await asyncio.wait_for(consuming, 30)
        reasons = [r.event.reason for r in received]  # type: ignore[attr-defined]
        assert reasons[:10] == [f"before-{n}" for n in range(10)]
        assert sorted(reasons[10:]) == sorted(f"after-{n}" for n in range(10))
        positions = [r.position for r in received]
        assert positions == sorted(set(positions))
        await subscription.aclose()
        await store.aclose()
    finally:
        server.stop()


async def test_kill_9_loses_no_acknowledged_append_and_duplicates_nothing(tmp_path: Path) -> None:
    rounds = int(os.environ.get("EVENTTAPE_CRASH_ROUNDS", "3"))
    appenders = int(os.environ.get("EVENTTAPE_CRASH_APPENDERS", "8"))
    server = NatsServer(tmp_path / "nats", sync_always=True)
    server.start()
    acknowledged: set[UUID] = set()
    retried = 0
    stop = asyncio.Event()

    async def appender(worker: int, store: JetStreamEventStore) -> None:
        nonlocal retried
        rng = random.Random(worker)
        stream_id = f"order-w{worker}"
        version = 0
        while not stop.is_set():
            batch = [NewEvent(OrderCancelled(reason=f"{worker}")) for _ in range(rng.randint(1, 3))]
            while True:  # the same events until they are in: a retry must not duplicate
                try:
                    result = await store.append(stream_id, batch, expected_version=version)
                    break
                except StoreUnavailable:
                    retried += 1
                    await asyncio.sleep(0.05)
                except ConcurrencyError as error:  # only this worker writes here
                    raise AssertionError(f"unexpected conflict: {error}") from error
            assert result.first_version == version + 1
            version = result.version
            acknowledged.update(item.event_id for item in batch)

    try:
        store = await connect(server)
        workers = [asyncio.create_task(appender(w, store)) for w in range(appenders)]
        for _ in range(rounds):
            await asyncio.sleep(0.8)
            before = len(acknowledged)
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            assert len(acknowledged) >= before
        await asyncio.sleep(0.8)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 60)

        checker = await connect(server)
        seen: set[UUID] = set()
        for worker in range(appenders):
            records = [r async for r in checker.read_stream(f"order-w{worker}")]
            assert [r.version for r in records] == list(range(1, len(records) + 1))
            ids = [r.event_id for r in records]
            assert len(ids) == len(set(ids)), "an event was stored twice"
            seen.update(ids)
        lost = acknowledged - seen
        assert not lost, f"{len(lost)} acknowledged events were lost"
        assert len(acknowledged) > 50 * rounds
        await checker.aclose()
        await store.aclose()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            server.stop()
    print(f"acknowledged {len(acknowledged)} events, {retried} retries after errors")
