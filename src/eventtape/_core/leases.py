"""The lease port: who owns a piece of work for now, and the fencing token that proves it.

Runners that share partitions take a lease per partition. A lease lasts ``ttl`` seconds unless
its holder renews it; a holder that dies (or pauses, or is cut off) loses it, and another
runner takes it. The lease's ``token`` is a number that only grows from one holder to the next:
the runner writes it with the checkpoint, and the sink refuses a checkpoint whose token is
older than the stored one (:class:`eventtape.Fenced`). That fence, not the lease, is what keeps
effects exactly once: a lease only says who *should* work; a paused holder can wake up after
its lease expired and still try to commit.

Members (the runners alive now) are registered the same way, with the same ``ttl``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Lease", "LeaseStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A lease held on one key.

    Attributes:
        key: What is leased (a partition of a projection or saga).
        owner: The member holding it.
        token: The fencing token: the same for the whole tenure, larger than any earlier
            holder's.
        revision: The store's revision of the lease, for compare-and-set renewals.
    """

    key: str
    owner: str
    token: int
    revision: int


class LeaseStore(Protocol):
    """Leases with a time to live, renewed by compare-and-set, and a member list.

    Implementations: :class:`eventtape.stores.jetstream.JetStreamLeases` (a JetStream key-value
    bucket), :class:`eventtape.InMemoryLeases` (one process, for tests).
    """

    @property
    def ttl(self) -> float:
        """Seconds a lease or a membership lasts without renewal."""
        ...

    async def acquire(self, key: str, owner: str) -> Lease | None:
        """Take ``key`` if nobody holds it; ``None`` if someone (else) does."""
        ...

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend a lease still held (same token, new revision); ``None`` if it was lost."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give a lease up at once, if still held (a no-op otherwise)."""
        ...

    async def holders(self, keys: Sequence[str]) -> dict[str, Lease]:
        """Return the current lease of each of ``keys`` that is held."""
        ...

    async def heartbeat(self, member: str) -> None:
        """Register ``member`` as alive for ``ttl`` seconds."""
        ...

    async def members(self) -> list[str]:
        """Return the members alive now, sorted."""
        ...

    async def leave(self, member: str) -> None:
        """Unregister ``member`` at once."""
        ...
