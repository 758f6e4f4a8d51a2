"""Failover figures: how long partitions wait for a new owner, and what JetStream's pinned
consumers (ADR-42 priority groups) would give instead.

- ``lease_takeover``: seconds from a lease holder's last renewal to another member taking the
  lease (a JetStream key-value bucket with ``ttl``; the bucket's ``max_age`` removes it).
- ``pinned_failover``: seconds from the pinned client's last pull to the other client of the
  priority group getting messages (``priority_timeout`` 1 s).
- ``pinned_overlap_acks``: acks the first client still got accepted *after* the second one was
  pinned: the server does not stop a client that was pinned from finishing (and acknowledging)
  what it was given, so a pinned consumer alone is not exclusive; fencing must stay with the
  checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import uuid4

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from eventtape.stores.jetstream import JetStreamLeases

from ._harness import emit
from .jetstream import nats_server

SUITE = "failover"


async def lease_takeover(url: str, ttl: float) -> float:
    nc = await nats.connect(url)
    bucket = f"B{uuid4().hex[:10]}"
    try:
        leases = await JetStreamLeases.open(nc, bucket=bucket, ttl=ttl)
        held = await leases.acquire("lease.bench.x.0-1", "a")
        assert held is not None
        renewed = await leases.renew(held)
        last_renewal = time.monotonic()
        assert renewed is not None
        while await leases.acquire("lease.bench.x.0-1", "b") is None:
            await asyncio.sleep(0.02)
        return time.monotonic() - last_renewal
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


class Puller:
    """A client pulling from a priority group with the raw JetStream API (nats-py has none)."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.pin: str | None = None
        self.messages: list[Msg] = []
        self.statuses: list[str] = []

    async def pull(self, batch: int, expires: float) -> None:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        request: dict[str, Any] = {"batch": batch, "expires": int(expires * 1e9), "group": "g"}
        if self.pin:
            request["id"] = self.pin
        await self.nc.publish(self.subject, json.dumps(request).encode(), reply=inbox)
        deadline = time.monotonic() + expires + 0.5
        received = 0
        try:
            while received < batch and time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01))
                except TimeoutError:
                    break
                status = (msg.headers or {}).get("Status")
                if status:
                    self.statuses.append(status)
                    if status in ("404", "408", "409", "423"):
                        break
                    continue
                self.pin = (msg.headers or {}).get("Nats-Pin-Id", self.pin)
                self.messages.append(msg)
                received += 1
        finally:
            await sub.unsubscribe()


async def pinned(url: str) -> tuple[float, int]:
    nc_admin, nc_a, nc_b = [await nats.connect(url) for _ in range(3)]
    js = nc_admin.jetstream()
    stream, consumer = f"P{uuid4().hex[:10]}", "C"
    try:
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for n in range(200):
            await js.publish(f"{stream}.x", str(n).encode())
        config = {
            "durable_name": consumer,
            "ack_policy": "explicit",
            "ack_wait": 30_000_000_000,
            "priority_groups": ["g"],
            "priority_policy": "pinned_client",
            "priority_timeout": 1_000_000_000,
        }
        reply = await nc_admin.request(
            f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
            json.dumps({"stream_name": stream, "config": config}).encode(),
        )
        assert "error" not in json.loads(reply.data), reply.data
        a, b = Puller(nc_a, stream, consumer), Puller(nc_b, stream, consumer)
        await a.pull(20, 0.5)  # a is pinned, holds 20 unacknowledged messages
        assert a.pin, a.statuses
        assert len(a.messages) == 20, a.statuses
        last_pull = time.monotonic()
        while not b.messages:  # a stops pulling (paused): when does b get messages?
            await b.pull(20, 0.3)
        failover = time.monotonic() - last_pull
        acked = 0
        for msg in a.messages:  # a wakes up and finishes what it was given
            ack = await nc_a.request(msg.reply, b"+ACK", timeout=2)
            acked += ack.data == b""  # an empty reply: the server took the ack
        return failover, acked
    finally:
        await js.delete_stream(stream)
        for nc in (nc_admin, nc_a, nc_b):
            await nc.close()


async def main(url: str, quick: bool) -> None:
    rounds = 1 if quick else 3
    for ttl in (1.5, 3.0):
        best = min([await lease_takeover(url, ttl) for _ in range(rounds)])
        emit(SUITE, f"lease_takeover_ttl_{ttl:g}s", "s", "lower", best)
    failover, acked = await pinned(url)
    emit(SUITE, "pinned_failover_timeout_1s", "s", "lower", failover)
    emit(SUITE, "pinned_overlap_acks_of_20", "acks", "lower", acked)


def run(*, quick: bool) -> None:
    """Print every figure of the failover suite."""
    with nats_server() as url:
        asyncio.run(main(url, quick))
