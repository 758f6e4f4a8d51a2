"""Raw nats-py measurements behind the JetStream DCB design (docs/decisions.md): the cost of
each condition header, and 16 concurrent writers on disjoint data under each."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from typing import Any

import nats

_ACTUAL = re.compile(r"wrong last sequence: (\d+)")
BODY = b'{"x":1}' * 20
WRITERS = 16


async def measure(url: str, count: int) -> dict[str, float]:
    """Return p50 ms per conditional publish and appends/s of 16 concurrent writers."""
    nc = await nats.connect(url)
    name = f"H{time.monotonic_ns()}"
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])

    async def pub(subject: str, headers: dict[str, str]) -> dict[str, Any]:
        reply = await nc.request(subject, BODY, headers=headers, timeout=5)
        ack: dict[str, Any] = json.loads(reply.data)
        return ack

    out: dict[str, float] = {}
    last, latencies = 0, []
    for i in range(count):
        t = time.perf_counter()
        last = (await pub(f"{name}.s.{i}", {"Nats-Expected-Last-Sequence": str(last)}))["seq"]
        latencies.append(time.perf_counter() - t)
    out["stream_level_p50_ms"] = statistics.median(latencies) * 1000
    latencies = []
    for i in range(count):
        t = time.perf_counter()
        await pub(
            f"{name}.t.tag{i}.x",
            {
                "Nats-Expected-Last-Subject-Sequence": "0",
                "Nats-Expected-Last-Subject-Sequence-Subject": f"{name}.t.tag{i}.*",
            },
        )
        latencies.append(time.perf_counter() - t)
    out["subject_filter_p50_ms"] = statistics.median(latencies) * 1000
    latencies = []
    for i in range(count):
        t = time.perf_counter()
        await pub(f"{name}.p.{i}", {})
        latencies.append(time.perf_counter() - t)
    out["plain_p50_ms"] = statistics.median(latencies) * 1000

    per = max(count // WRITERS, 1)
    state = {"last": (await js.stream_info(name)).state.last_seq, "tries": 0}

    async def retrying(k: int) -> None:
        for i in range(per):
            expected = state["last"]
            while True:
                state["tries"] += 1
                ack = await pub(f"{name}.c.{k}.{i}", {"Nats-Expected-Last-Sequence": str(expected)})
                if "error" not in ack:
                    state["last"] = max(state["last"], ack["seq"])
                    break
                expected = int(_ACTUAL.search(ack["error"]["description"]).group(1))  # type: ignore[union-attr]

    async def filtered(k: int) -> None:
        for i in range(per):
            await pub(
                f"{name}.d.k{k}i{i}.x",
                {
                    "Nats-Expected-Last-Subject-Sequence": "0",
                    "Nats-Expected-Last-Subject-Sequence-Subject": f"{name}.d.k{k}i{i}.*",
                },
            )

    lock = asyncio.Lock()

    async def taking_turns(k: int) -> None:
        for i in range(per):
            async with lock:
                ack = await pub(
                    f"{name}.e.{k}.{i}", {"Nats-Expected-Last-Sequence": str(state["last"])}
                )
                state["last"] = ack["seq"]

    for key, worker in (
        ("concurrent_stream_level_retrying", retrying),
        ("concurrent_subject_filter", filtered),
        ("concurrent_stream_level_taking_turns", taking_turns),
    ):
        state["last"] = (await js.stream_info(name)).state.last_seq
        state["tries"] = 0
        t = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(WRITERS)))
        out[key] = per * WRITERS / (time.perf_counter() - t)
        if key == "concurrent_stream_level_retrying":
            out["tries_per_append_retrying"] = state["tries"] / (per * WRITERS)
    await js.delete_stream(name)
    await nc.close()
    return out
