"""A projection runner sharing partitions, for the multi-process failover test.

Usage: python -m tests.shared_projection_runner NATS_URL STREAM PREFIX DB BUCKET TTL PARTS MEMBER

DB is a SQLite file, or a ``postgresql://`` URL (the schema in ``EVENTTAPE_TEST_SCHEMA``).

Prints ``ready`` once started; on SIGTERM it hands its partitions over and exits. Logs (lease
rounds, fenced commits) go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from eventtape import ProjectionRunner, RecordedEvent, Sharing, handles
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore, JetStreamLeases
from tests.domain import REGISTRY, OrderPlaced
from tests.projections import OrderSummary


class TolerantOrderSummary(OrderSummary):
    """Inserts that let a row already there be, as many real handlers do: only the ``applied``
    count shows an event applied twice (a runner committing after losing its partition)."""

    name = "order_summary"

    @handles(OrderPlaced)
    async def _placed(self, record: RecordedEvent[OrderPlaced], tx: Any) -> None:
        event = record.event
        await tx.execute(
            f"INSERT INTO {self.table('orders')} VALUES"
            f" ({self.p(1)}, {self.p(2)}, 'placed', {self.p(3)}, {self.p(4)})"
            " ON CONFLICT (order_id) DO NOTHING",
            event.order_id,
            event.user_id,
            len(event.items),
            record.version,
        )
        await self._applied(record, tx)


async def main(argv: list[str]) -> None:
    url, stream, prefix, db, bucket, ttl, parts, member = argv
    config = JetStreamConfig(stream=stream, subject_prefix=prefix, poll_interval=0.2)
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
    leases = await JetStreamLeases.open(store.nc, bucket=bucket, ttl=float(ttl))
    sharing = Sharing(leases, partitions=int(parts), member=member)
    if db.startswith("postgresql://"):
        from eventtape.sinks.postgres import PostgresSink

        sink: Any = PostgresSink(db, schema=os.environ["EVENTTAPE_TEST_SCHEMA"])
        projection = TolerantOrderSummary("$")
    else:
        sink, projection = SqliteSink(db), TolerantOrderSummary()
    runner = ProjectionRunner(store, sink, [projection], sharing=sharing)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await runner.start()
    print("ready", flush=True)
    await stop.wait()
    await runner.aclose()
    await store.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1:9]))
