"""A projection runner process for the crash test: JetStream -> SQLite, until killed.

Usage: python -m tests.crash_projection_runner NATS_URL STREAM PREFIX DB_PATH BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from eventtape import ProjectionRunner, RecordedEvent, RunnerOptions
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY
from tests.projections import OrderSummary


class SlowOrderSummary(OrderSummary):
    """Sleeps inside every batch's transaction, so a kill often lands mid-batch."""

    async def _applied(self, record: RecordedEvent[Any], tx: Any) -> None:
        await super()._applied(record, tx)
        await asyncio.sleep(0.002)


async def main(url: str, stream: str, prefix: str, db_path: str, batch_size: int) -> None:
    config = JetStreamConfig(stream=stream, subject_prefix=prefix, poll_interval=0.2)
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
    runner = ProjectionRunner(
        store, SqliteSink(db_path), [SlowOrderSummary()], RunnerOptions(batch_size=batch_size)
    )
    await runner.start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    url, stream, prefix, db_path, batch = sys.argv[1:6]
    asyncio.run(main(url, stream, prefix, db_path, int(batch)))
