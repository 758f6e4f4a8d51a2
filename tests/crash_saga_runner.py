"""A saga runner process for the crash test: JetStream, checkpoints in SQLite, until killed.

Usage: python -m tests.crash_saga_runner NATS_URL STREAM PREFIX DB_PATH (fulfillment|process)
"""

from __future__ import annotations

import asyncio
import sys

from eventtape import SagaOptions, SagaRunner
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.shop import SHOP_REGISTRY, Fulfillment, OrderProcess, Shop


async def main(url: str, stream: str, prefix: str, db_path: str, kind: str) -> None:
    config = JetStreamConfig(stream=stream, subject_prefix=prefix, poll_interval=0.2)
    store = await JetStreamEventStore.connect(url, SHOP_REGISTRY, config=config)
    shop = Shop(store)
    saga = OrderProcess(shop) if kind == "process" else Fulfillment(shop)
    runner = SagaRunner(store, SqliteSink(db_path), [saga], options=SagaOptions(batch_size=5))
    await runner.start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
