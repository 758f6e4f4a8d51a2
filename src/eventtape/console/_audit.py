"""Finding events by who, which transaction, what and when.

A store answers "one stream" and "everything in order" cheaply; JetStream cannot answer "every
event admin:support-001 caused last night" without reading the whole log. :class:`AuditProjection`
is an ordinary projection (run by the ordinary :class:`eventtape.ProjectionRunner` into a SQLite
or PostgreSQL sink) that keeps one indexed row of metadata per event, which the console queries.
Without it the console scans the log (fine for the in-memory store and small demos).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from .._core.events import Event, RecordedEvent
from .._core.store import EventStore
from .._core.wire import AUDIT_TABLE, CONSOLE_ACTION_EVENT
from .._projections.projection import Projection, handles

__all__ = ["AuditProjection", "AuditQuery", "ConsoleActionTaken", "find_events"]

AUDIT_COLUMNS = (
    "position, stream_id, version, event_type, recorded_at, actor, correlation_id, causation_id"
)


class ConsoleActionTaken(Event):
    """An admin did something through the console (retry, skip, rebuild): who, what, on what."""

    __event_type__ = CONSOLE_ACTION_EVENT
    action: str
    target: str
    detail: str = ""


class AuditProjection(Projection[Any]):
    """One row of metadata per event in ``eventtape_audit``, indexed by actor, correlation, type.

    Args:
        postgres: Whether the sink is PostgreSQL (``$1`` placeholders) rather than SQLite.
    """

    name = "eventtape_audit"
    tables = (AUDIT_TABLE,)

    def __init__(self, postgres: bool = False) -> None:
        super().__init__()
        self.postgres = postgres

    async def create(self, tx: Any) -> None:
        table = self.table(AUDIT_TABLE)
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (position BIGINT PRIMARY KEY,"
            " stream_id TEXT NOT NULL, version BIGINT NOT NULL, event_type TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL, actor TEXT, correlation_id TEXT, causation_id TEXT)"
        )
        for column in ("actor", "correlation_id", "event_type"):
            await tx.execute(
                f"CREATE INDEX IF NOT EXISTS {table}_{column} ON {table} ({column}, position)"
            )
        await tx.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_time ON {table} (recorded_at, position)"
        )

    # Every event class derives from Event, so this one handler sees the whole log.
    @handles(Event)
    async def _recorded(self, record: RecordedEvent[Event], tx: Any) -> None:
        marks = ", ".join(f"${n}" if self.postgres else "?" for n in range(1, 9))
        conflict = " ON CONFLICT (position) DO NOTHING"
        await tx.execute(
            f"INSERT INTO {self.table(AUDIT_TABLE)} ({AUDIT_COLUMNS}) VALUES ({marks}){conflict}",
            record.position,
            record.stream_id,
            record.version,
            record.event_type,
            _stamp(record.recorded_at),
            record.actor,
            record.correlation_id,
            record.causation_id,
        )


def _stamp(moment: datetime) -> str:
    # One fixed-width UTC text form, so string order is time order in both databases.
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclasses.dataclass(frozen=True, slots=True)
class AuditQuery:
    """What to look for; every field given must match (``None``: any).

    ``since``/``until`` are naive UTC or aware datetimes; ``until`` is exclusive.
    """

    actor: str | None = None
    correlation_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200

    def matches(self, record: RecordedEvent[Event]) -> bool:
        """Whether a recorded event satisfies the query (the scanning fallback)."""
        stamp = _stamp(record.recorded_at)
        return (
            (self.actor is None or record.actor == self.actor)
            and (self.correlation_id is None or record.correlation_id == self.correlation_id)
            and (self.event_type is None or record.event_type == self.event_type)
            and (self.since is None or stamp >= _stamp(self.since))
            and (self.until is None or stamp < _stamp(self.until))
        )


async def find_events(
    store: EventStore, query: AuditQuery, *, sink: Any = None, postgres: bool = False
) -> AsyncIterator[RecordedEvent[Event]]:
    """Yield the events matching ``query`` in global order, at most ``query.limit`` of them.

    With ``sink`` (where an :class:`AuditProjection` runs) the index answers and each hit is
    fetched by position; without it the whole log is read and filtered.
    """
    if sink is None:
        found = 0
        async for record in store.read_all():
            if query.matches(record):
                yield record
                found += 1
                if found >= query.limit:
                    return
        return
    clauses: list[str] = []
    args: list[Any] = []

    def mark() -> str:
        return f"${len(args)}" if postgres else "?"

    for column, value in (
        ("actor", query.actor),
        ("correlation_id", query.correlation_id),
        ("event_type", query.event_type),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = {mark()}")
    if query.since is not None:
        args.append(_stamp(query.since))
        clauses.append(f"recorded_at >= {mark()}")
    if query.until is not None:
        args.append(_stamp(query.until))
        clauses.append(f"recorded_at < {mark()}")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(query.limit)
    rows = await sink.fetch(
        f"SELECT position FROM {AUDIT_TABLE}{where} ORDER BY position LIMIT {mark()}", *args
    )
    for row in rows:
        async for record in store.read_all(from_position=int(row[0]), limit=1):
            yield record
