"""The read-model sink port: where projections write, and where their checkpoints live.

A sink keeps each projection's checkpoint in the same database as its read model, and the
runner writes both in one transaction: after a crash at any point, the read model and the
checkpoint agree, so no event is applied twice and none is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, TypeVar

from .events import Event, RecordedEvent

__all__ = ["ParkedEvent", "ReadModelSink"]

Tx = TypeVar("Tx")


@dataclasses.dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection gave up on (with ``park_failures``), kept for a person to look at.

    Attributes:
        projection: The projection's name.
        partition: Its partition key.
        position: The event's global position.
        stream_id: The event's stream.
        event_id: The event's id.
        event_type: The event's type name.
        error: What the handler raised, last time.
        parked_at: When it was parked (UTC).
    """

    projection: str
    partition: str
    position: int
    stream_id: str
    event_id: str
    event_type: str
    error: str
    parked_at: datetime


class ReadModelSink(Protocol[Tx]):
    """What a projection runner needs from a database."""

    async def start(self) -> None:
        """Open connections and create eventtape's own tables (checkpoints, parked events)."""
        ...

    async def aclose(self) -> None:
        """Close the sink's connections."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """Open a transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def active_generation(self, projection: str) -> int | None:
        """Return the generation whose tables the views point to, or ``None`` if none yet."""
        ...

    async def load_position(self, projection: str, partition: str, generation: int) -> int:
        """Return the last position applied to a generation (0 if none)."""
        ...

    async def save_position(
        self,
        tx: Tx,
        projection: str,
        partition: str,
        generation: int,
        position: int,
        *,
        token: int | None = None,
    ) -> None:
        """Record the last position applied, inside the batch's transaction.

        With a ``token`` (a runner sharing partitions, holding a lease), the write is fenced:
        it raises :class:`eventtape.Fenced`, and the transaction must roll back, if the
        checkpoint already carries a newer owner token.
        """
        ...

    async def claim(
        self, tx: Tx, projection: str, partition: str, generation: int, token: int
    ) -> int:
        """Stamp a partition's checkpoint with a new owner's token and return its position.

        A runner calls this when it takes a partition over, before reading from the returned
        position: from then on the previous owner's commits are fenced out, so none can land
        between this read and the new owner's first commit.

        Raises:
            Fenced: If the checkpoint already carries a newer token.
        """
        ...

    async def activate(
        self, tx: Tx, projection: str, tables: Sequence[str], generation: int
    ) -> None:
        """Point the views ``<table>`` at ``<table>__g<generation>`` and make it the active one."""
        ...

    async def drop_generation(
        self, tx: Tx, projection: str, tables: Sequence[str], generation: int
    ) -> None:
        """Drop a generation's tables and forget its checkpoints."""
        ...

    async def park(
        self,
        tx: Tx,
        projection: str,
        partition: str,
        record: RecordedEvent[Event],
        error: str,
    ) -> None:
        """Keep a failed event aside, inside the transaction that moves the checkpoint past it."""
        ...

    async def parked(self, projection: str) -> list[ParkedEvent]:
        """Return the events parked by a projection, oldest first."""
        ...
