"""Console suite: how long the first page of a 10,000-event stream's timeline takes.

- ``timeline_first_page_memory`` / ``timeline_first_page_jetstream``: ms for ``GET
  /streams/<id>`` (50 events, with an aggregate class, so state before/after is computed),
  through the ASGI app with httpx, best of several rounds. The target is 200 ms.
- ``timeline_last_page_*``: the same for the last page (replays the whole stream for the state).
- ``find_by_actor_jetstream``: ms for ``GET /search?actor=…`` (10 hits among 10,000 events) with
  the audit projection in SQLite, against the baseline of scanning the log.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from eventtape import (
    Aggregate,
    Event,
    EventRegistry,
    InMemoryEventStore,
    Metadata,
    NewEvent,
    ProjectionRunner,
    applies,
)
from eventtape.console import AuditProjection, ConsoleSettings, create_console_app
from eventtape.sinks.sqlite import SqliteSink

from ._harness import emit
from .jetstream import nats_server


class Counted(Event):
    amount: int
    note: str


class Counter(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.total = 0
        self.last_note = ""

    @applies(Counted)
    def _counted(self, event: Counted) -> None:
        self.total += event.amount
        self.last_note = event.note


async def _fill(store: Any, events: int) -> None:
    batch = 500
    for start in range(0, events, batch):
        await store.append(
            "counter-big",
            [NewEvent(Counted(amount=n, note=f"note {n}")) for n in range(start, start + batch)],
        )


async def _time_pages(store: Any, suite_name: str, events: int) -> None:
    app = create_console_app(
        ConsoleSettings(store=store, tokens={"t": "admin:bench"}, aggregates={"counter": Counter})
    )
    headers = {"Authorization": "Bearer t"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as http:
        for name, query in (("first", ""), ("last", f"?from={events - 49}")):
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                response = await http.get(f"/streams/counter-big{query}", headers=headers)
                best = min(best, time.perf_counter() - start)
                assert response.status_code == 200, response.text
            emit("console", f"timeline_{name}_page_{suite_name}", "ms", "lower", best * 1000)


async def _run(quick: bool) -> None:
    events = 1_000 if quick else 10_000
    registry = EventRegistry([Counted])
    memory = InMemoryEventStore(registry)
    await _fill(memory, events)
    await _time_pages(memory, "memory", events)
    from eventtape.stores.jetstream import JetStreamEventStore

    with nats_server() as url, tempfile.TemporaryDirectory() as directory:
        store = await JetStreamEventStore.connect(url, registry)
        try:
            await _fill(store, events)
            await _time_pages(store, "jetstream", events)
            await _time_find(store, Path(directory) / "audit.db")
        finally:
            await store.aclose()


async def _time_find(store: Any, path: Path) -> None:
    result = None
    for n in range(10):
        result = await store.append(
            f"counter-{n}", [Counted(amount=n, note="x")], metadata=Metadata(actor="admin:night")
        )
    assert result is not None
    sink = SqliteSink(path)
    runner = ProjectionRunner(store, sink, [AuditProjection()])
    await runner.start()
    try:
        await runner.wait_until(result.position, timeout=120)
        timings = {}
        for name, audit in (("audit", sink), ("scan", None)):
            app = create_console_app(
                ConsoleSettings(store=store, tokens={"t": "admin:bench"}, audit_sink=audit)
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console"
            ) as http:
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    response = await http.get(
                        "/search",
                        params={"actor": "admin:night"},
                        headers={"Authorization": "Bearer t"},
                    )
                    best = min(best, time.perf_counter() - start)
                    assert "<p>10 events" in response.text, response.text[:500]
            timings[name] = best * 1000
        emit(
            "console",
            "find_by_actor_jetstream",
            "ms",
            "lower",
            timings["audit"],
            ("scanning the log", timings["scan"]),
        )
    finally:
        await runner.aclose()
        await sink.aclose()


def run(quick: bool = False) -> None:
    """Print the console figures as JSON lines."""
    asyncio.run(_run(quick))
