"""Snapshots: a saved aggregate state, so loading a long stream reads only its tail."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["EveryNEvents", "Snapshot", "SnapshotPolicy", "SnapshotStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at one version of its stream.

    Attributes:
        stream_id: The aggregate's stream.
        version: The stream version the state includes.
        aggregate_type: The aggregate class's name, so a snapshot is never restored into another.
        snapshot_version: The class's ``__snapshot_version__`` when it was taken; a snapshot
            whose version differs from the class's current one is ignored.
        state: The JSON-compatible state from :meth:`eventtape.Aggregate.to_snapshot`.
        taken_at: When it was taken (UTC).
        position: The global position of the event at ``version``, if known: a store can start
            reading the rest of the stream there instead of searching for it.
    """

    stream_id: str
    version: int
    aggregate_type: str
    snapshot_version: int
    state: dict[str, Any]
    taken_at: datetime
    position: int | None = None

    def replace(self, **changes: Any) -> Self:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@runtime_checkable
class SnapshotStore(Protocol):
    """Where snapshots are kept: the latest one per stream is enough."""

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot (an older one of the same stream may be replaced)."""
        ...

    async def load(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of a stream, or ``None``."""
        ...

    async def delete(self, stream_id: str) -> None:
        """Forget a stream's snapshot."""
        ...


class SnapshotPolicy(Protocol):
    """Decides, after a save, whether to take a snapshot."""

    def should_snapshot(self, previous_version: int, new_version: int) -> bool:
        """Return ``True`` to snapshot an aggregate just saved from ``previous_version``."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class EveryNEvents:
    """Snapshot whenever a save crosses a multiple of ``n`` events (100, 200, ...).

    Attributes:
        n: The interval, in events.
    """

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"EveryNEvents needs n >= 1, not {self.n!r}")

    def should_snapshot(self, previous_version: int, new_version: int) -> bool:
        """Return ``True`` if a multiple of ``n`` lies in ``(previous_version, new_version]``."""
        return previous_version // self.n != new_version // self.n
