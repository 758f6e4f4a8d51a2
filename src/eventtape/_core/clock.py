"""Clocks: the system's, and a manual one so tests of timeouts never sleep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Tells the time and waits for it (UTC, timezone-aware)."""

    def now(self) -> datetime:
        """The current time."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return at ``when`` (or at once if it has passed)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until ``when``."""
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when told to, for tests: ``await clock.advance(minutes=15)``.

    Args:
        start: The initial time (default: 2026-01-01 UTC).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        """Wait until the clock has been advanced to ``when``."""
        while self._now < when:
            moved = self._moved
            await moved.wait()

    async def advance(self, **delta: float) -> None:
        """Move the clock forward (``timedelta`` keywords) and let waiting tasks run."""
        self._now += timedelta(**delta)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        for _ in range(5):  # let woken sleepers and what they start take their turn
            await asyncio.sleep(0)
