"""What the console reads and who may use it (no web imports here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .._core.store import EventStore
from .._model.aggregate import Aggregate

__all__ = ["ConsoleSettings"]


@dataclasses.dataclass
class ConsoleSettings:
    """What the console reads and who may use it.

    Attributes:
        store: The event store to show.
        tokens: Token -> actor. Actors starting with ``admin:`` may act; others only read.
        aggregates: Aggregate classes by stream category, for state before/after each event.
        projections: A running :class:`eventtape.ProjectionRunner` (status, parked, rebuild).
        sagas: A running :class:`eventtape.SagaRunner` (checkpoints, parked, deadlines).
        audit_sink: The sink where an :class:`AuditProjection` runs (else searches scan the log).
        audit_postgres: Whether ``audit_sink`` is PostgreSQL.
    """

    store: EventStore
    tokens: Mapping[str, str]
    aggregates: Mapping[str, type[Aggregate]] = dataclasses.field(default_factory=dict)
    projections: Any = None
    sagas: Any = None
    audit_sink: Any = None
    audit_postgres: bool = False
