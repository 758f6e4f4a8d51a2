"""The audit projection: finds by actor, correlation, type and time on JetStream (which cannot
answer them cheaply), kept in SQLite or PostgreSQL by the ordinary ProjectionRunner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from eventtape import Event, EventRegistry, Metadata, ProjectionRunner
from eventtape.console import AuditProjection, AuditQuery, ConsoleSettings, create_console_app
from eventtape.console import find_events as find
from eventtape.sinks.postgres import PostgresSink
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore


class NoteTaken(Event):
    text: str


class NoteDropped(Event):
    text: str


@pytest.fixture(params=["sqlite", "postgres"])
async def audited(
    request: pytest.FixtureRequest, nats_url: str, tmp_path: Path
) -> AsyncIterator[tuple[JetStreamEventStore, ProjectionRunner, object, bool]]:
    name = f"AUDIT{uuid4().hex[:8].upper()}"
    config = JetStreamConfig(stream=name, subject_prefix=f"audit.{name.lower()}")
    store = await JetStreamEventStore.connect(
        nats_url, EventRegistry([NoteTaken, NoteDropped]), config=config
    )
    postgres = request.param == "postgres"
    sink: object
    if postgres:
        sink = PostgresSink(request.getfixturevalue("postgres_url"), schema=f"a{uuid4().hex[:8]}")
    else:
        sink = SqliteSink(tmp_path / "audit.db")
    runner = ProjectionRunner(store, sink, [AuditProjection(postgres)])  # type: ignore[arg-type]
    await runner.start()
    try:
        yield store, runner, sink, postgres
    finally:
        await runner.aclose()
        await sink.aclose()  # type: ignore[attr-defined]
        await store.aclose()


async def test_finds_by_actor_correlation_type_and_time(
    audited: tuple[JetStreamEventStore, ProjectionRunner, object, bool],
) -> None:
    store, runner, sink, postgres = audited
    await store.append(
        "note-1", [NoteTaken(text="a")], metadata=Metadata(actor="user:1", correlation_id="c1")
    )
    await store.append(
        "note-2",
        [NoteTaken(text="b"), NoteDropped(text="b")],
        metadata=Metadata(actor="admin:support-001", correlation_id="c2"),
    )
    result = await store.append(
        "note-1", [NoteDropped(text="a")], metadata=Metadata(actor="user:1", correlation_id="c1")
    )
    await runner.wait_until(result.position, timeout=10)

    async def found(query: AuditQuery) -> list[tuple[str, str]]:
        return [
            (r.stream_id, r.event_type)
            async for r in find(store, query, sink=sink, postgres=postgres)
        ]

    assert await found(AuditQuery(actor="admin:support-001")) == [
        ("note-2", "NoteTaken"),
        ("note-2", "NoteDropped"),
    ]
    assert await found(AuditQuery(correlation_id="c1")) == [
        ("note-1", "NoteTaken"),
        ("note-1", "NoteDropped"),
    ]
    assert await found(AuditQuery(event_type="NoteDropped", actor="user:1")) == [
        ("note-1", "NoteDropped")
    ]
    now = datetime.now(UTC)
    assert len(await found(AuditQuery(since=now - timedelta(minutes=5)))) == 4
    assert await found(AuditQuery(until=now - timedelta(minutes=5))) == []
    assert len(await found(AuditQuery(limit=1))) == 1
    # The index answers the same as scanning the log.
    for query in (AuditQuery(actor="user:1"), AuditQuery(correlation_id="c2")):
        scanned = [(r.stream_id, r.event_type) async for r in find(store, query)]
        assert await found(query) == scanned

    # Through the console, a hostile query value is a parameter, not SQL.
    app = create_console_app(
        ConsoleSettings(
            store=store, tokens={"t": "user:9"}, audit_sink=sink, audit_postgres=postgres
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as h:
        page = await h.get(
            "/search", params={"actor": "x' OR '1'='1"}, headers={"Authorization": "Bearer t"}
        )
        assert "<p>0 events" in page.text
        page = await h.get(
            "/search", params={"actor": "user:1"}, headers={"Authorization": "Bearer t"}
        )
        assert "<p>2 events" in page.text
