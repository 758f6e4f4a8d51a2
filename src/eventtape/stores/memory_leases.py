"""Leases held in process memory: several runners in one process, for tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._core.leases import Lease

__all__ = ["InMemoryLeases"]


class InMemoryLeases:
    """An :class:`eventtape.LeaseStore` in process memory (runners of one process share it).

    Tokens grow by one on every write, like a key-value bucket's revisions, so a later holder's
    token is always larger. Every method is atomic on the event loop (no await inside).

    Args:
        ttl: Seconds a lease or membership lasts without renewal.
        clock: Monotonic seconds (swap it to expire leases without waiting).
    """

    def __init__(self, ttl: float = 3.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self._ttl = float(ttl)
        self._clock = clock
        self._revision = 0
        self._leases: dict[str, tuple[Lease, float]] = {}
        self._members: dict[str, float] = {}

    @property
    def ttl(self) -> float:
        """Seconds a lease or membership lasts without renewal."""
        return self._ttl

    def _next(self) -> int:
        self._revision += 1
        return self._revision

    def _current(self, key: str) -> Lease | None:
        held = self._leases.get(key)
        if held is None or held[1] <= self._clock():
            self._leases.pop(key, None)
            return None
        return held[0]

    async def acquire(self, key: str, owner: str) -> Lease | None:
        """See :meth:`eventtape.LeaseStore.acquire`."""
        if self._current(key) is not None:
            return None
        revision = self._next()
        lease = Lease(key, owner, revision, revision)
        self._leases[key] = (lease, self._clock() + self._ttl)
        return lease

    async def renew(self, lease: Lease) -> Lease | None:
        """See :meth:`eventtape.LeaseStore.renew`."""
        current = self._current(lease.key)
        if current is None or current.revision != lease.revision:
            return None
        renewed = Lease(lease.key, lease.owner, lease.token, self._next())
        self._leases[lease.key] = (renewed, self._clock() + self._ttl)
        return renewed

    async def release(self, lease: Lease) -> None:
        """See :meth:`eventtape.LeaseStore.release`."""
        current = self._current(lease.key)
        if current is not None and current.revision == lease.revision:
            del self._leases[lease.key]

    async def holders(self, keys: Sequence[str]) -> dict[str, Lease]:
        """See :meth:`eventtape.LeaseStore.holders`."""
        return {key: lease for key in keys if (lease := self._current(key)) is not None}

    async def heartbeat(self, member: str) -> None:
        """See :meth:`eventtape.LeaseStore.heartbeat`."""
        self._members[member] = self._clock() + self._ttl

    async def members(self) -> list[str]:
        """See :meth:`eventtape.LeaseStore.members`."""
        now = self._clock()
        return sorted(member for member, until in self._members.items() if until > now)

    async def leave(self, member: str) -> None:
        """See :meth:`eventtape.LeaseStore.leave`."""
        self._members.pop(member, None)

    def expire(self, key: str | None = None) -> None:
        """Forget a lease (or every lease) as if its holder had stopped renewing it long ago."""
        if key is None:
            self._leases.clear()
        else:
            self._leases.pop(key, None)
