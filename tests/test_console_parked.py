"""Retrying and skipping a projection's parked events from the console (memory store, SQLite)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventtape import (
    Event,
    EventRegistry,
    InMemoryEventStore,
    Metadata,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    RunnerOptions,
    handles,
)
from eventtape._core.wire import CONSOLE_ACTIONS_STREAM
from eventtape.console import ConsoleSettings, create_console_app
from eventtape.sinks.sqlite import SqliteSink

ADMIN = {"Authorization": "Bearer admin-token"}


class Noted(Event):
    text: str


class Notes(Projection[Any]):
    """Refuses texts starting with "bad" while ``broken`` is set."""

    name = "notes"
    tables = ("notes",)
    broken = True

    async def create(self, tx: Any) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table('notes')} (text TEXT)")

    @handles(Noted)
    async def _noted(self, record: RecordedEvent[Noted], tx: Any) -> None:
        if self.broken and record.event.text.startswith("bad"):
            raise ValueError(f"cannot file {record.event.text!r}")
        await tx.execute(f"INSERT INTO {self.table('notes')} VALUES (?)", record.event.text)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[Any, ...]]:
    store = InMemoryEventStore(EventRegistry([Noted]))
    sink = SqliteSink(tmp_path / "read.db")
    notes = Notes()
    runner = ProjectionRunner(
        store, sink, [notes], RunnerOptions(max_attempts=1, park_failures=True)
    )
    await runner.start()
    app = create_console_app(
        ConsoleSettings(store=store, tokens={"admin-token": "admin:ops"}, projections=runner)
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://c"
        ) as http:
            yield store, sink, notes, runner, http
    finally:
        await runner.aclose()
        await sink.aclose()


async def parked_positions(sink: SqliteSink) -> list[int]:
    return [p.position for p in await sink.parked("notes")]


async def post(http: httpx.AsyncClient, path: str, **fields: object) -> httpx.Response:
    page = (await http.get("/ops", headers=ADMIN)).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    data = {k: str(v) for k, v in fields.items()} | {"csrf": csrf[1]}
    return await http.post(path, data=data, headers=ADMIN)


async def test_retry_after_a_fix_and_skip(console: tuple[Any, ...]) -> None:
    store, sink, notes, runner, http = console
    meta = Metadata(actor="user:1")
    await store.append("note-1", [Noted(text="bad one"), Noted(text="bad two")], metadata=meta)
    last = await store.append("note-1", [Noted(text="fine")], metadata=meta)
    await runner.wait_until(last.position, timeout=10)
    assert await parked_positions(sink) == [1, 2]
    page = (await http.get("/ops", headers=ADMIN)).text
    assert "cannot file" in page

    # Still broken: the retry fails, says so, and the event stays parked.
    failed = await post(http, "/ops/parked/retry", kind="projection", name="notes", position=1)
    assert failed.status_code == 409
    assert "cannot file" in failed.text
    assert await parked_positions(sink) == [1, 2]

    notes.broken = False
    done = await post(http, "/ops/parked/retry", kind="projection", name="notes", position=1)
    assert done.status_code == 303
    skipped = await post(http, "/ops/parked/skip", kind="projection", name="notes", position=2)
    assert skipped.status_code == 303
    assert await parked_positions(sink) == []
    rows = await sink.fetch("SELECT text FROM notes ORDER BY text")
    assert [row[0] for row in rows] == ["bad one", "fine"]
    missing = await post(http, "/ops/parked/skip", kind="projection", name="notes", position=2)
    assert missing.status_code == 404
    actions = [r async for r in store.read_stream(CONSOLE_ACTIONS_STREAM)]
    assert [(a.actor, a.event.action, a.event.target) for a in actions] == [
        ("admin:ops", "parked/retry", "notes@1"),  # the failed try is on record too
        ("admin:ops", "parked/retry", "notes@1"),
        ("admin:ops", "parked/skip", "notes@2"),
    ]
    assert actions[0].event.detail.startswith("still failing: ValueError")
