"""Runners sharing partitions: which partitions this runner should own, and holding their leases.

Each runner registers itself as a member (renewed every ``ttl / 3``) and computes, from the
live members, which partitions are its own by rendezvous hashing: every runner computes the same
answer from the same member list, and a member joining or leaving moves only its share. It then
takes the leases of its partitions, renews them, and gives up those that are no longer its own
(after stopping their work, so the handover loses nothing). A dead runner's leases expire after
``ttl``; the survivors, no longer seeing it among the members, take its partitions.

The leases say who *should* work. Exactly-once is kept by the fence on the checkpoint: the
lease's token goes with every checkpoint write, and the sink refuses an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence

from .._core.leases import Lease, LeaseStore
from .._core.wire import LEASE_KEY_PREFIX

__all__ = ["Coordinator", "Sharing", "lease_key", "owner_of"]

logger = logging.getLogger("eventtape.sharing")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")


def _default_member() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass(frozen=True, slots=True)
class Sharing:
    """Share every projection's (or saga's) partitions with other runners, with failover.

    Run the same runner, with the same ``partitions`` and a lease store on the same bucket, in
    as many processes as you like: each partition is worked on by one of them at a time.

    Attributes:
        leases: Where leases and members live (:class:`eventtape.stores.jetstream.JetStreamLeases`
            across processes).
        partitions: How many partitions each projection is cut into. It names the checkpoints
            (``"3/8"``), so it must stay the same for as long as the read model lives; more
            partitions than runners lets work spread again when runners are added.
        member: This runner's id among the members (default: host, pid and a random suffix).
    """

    leases: LeaseStore
    partitions: int = 8
    member: str = dataclasses.field(default_factory=_default_member)

    def __post_init__(self) -> None:
        if not isinstance(self.partitions, int) or not 1 <= self.partitions <= 1024:
            raise ValueError(f"partitions must be an int from 1 to 1024, got {self.partitions!r}")
        if not isinstance(self.member, str) or not _NAME.fullmatch(self.member):
            raise ValueError(f"a member id is 1-200 of A-Z a-z 0-9 _ -, got {self.member!r}")


def lease_key(kind: str, name: str, index: int, count: int) -> str:
    """The lease key of one partition of a projection or saga."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"to share partitions, a name must be 1-200 of A-Z a-z 0-9 _ -, got {name!r}"
        )
    return f"{LEASE_KEY_PREFIX}.{kind}.{name}.{index}-{count}"


def owner_of(key: str, members: Sequence[str]) -> str:
    """The member that should own ``key``: the highest hash of (key, member) (rendezvous)."""

    def score(member: str) -> bytes:
        return hashlib.blake2b(f"{key}\n{member}".encode(), digest_size=8).digest()

    return max(members, key=score)


class Coordinator:
    """Holds the leases of the partitions this runner should own, and says when that changes.

    Args:
        sharing: The lease store and this member's id.
        keys: Every lease key of the work shared (all partitions of all projections).
        on_acquired: Called with a key and the lease's token once its lease is taken: start
            the work (it should claim the checkpoint with the token first).
        on_lost: Called with a key to stop its work: before its lease is given up, or once
            it is found lost.
    """

    def __init__(
        self,
        sharing: Sharing,
        keys: Sequence[str],
        on_acquired: Callable[[str, int], Awaitable[None]],
        on_lost: Callable[[str], Awaitable[None]],
    ) -> None:
        self._leases = sharing.leases
        self._member = sharing.member
        self._keys = list(keys)
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._held: dict[str, Lease] = {}
        # Starting a partition's work runs beside the lease rounds: a claim can wait on the
        # database (a paused previous owner's open transaction), and renewals must not.
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def member(self) -> str:
        """This runner's member id."""
        return self._member

    @property
    def held(self) -> dict[str, Lease]:
        """The leases held now, by key."""
        return dict(self._held)

    async def start(self) -> None:
        """Register, take this runner's partitions once, then keep at it in the background."""
        with contextlib.suppress(Exception):
            await self.tick()
        # Return with this runner's first share started, as a runner's start does; but not
        # later than ttl (a partition whose claim waits on the database goes on starting).
        self._task = asyncio.create_task(self._loop(), name=f"eventtape-sharing-{self._member}")
        if self._starting:
            await asyncio.wait(list(self._starting.values()), timeout=self._leases.ttl)

    async def aclose(self) -> None:
        """Stop every partition's work, give the leases up and leave, so others take over now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            for key, lease in list(self._held.items()):
                del self._held[key]
                await self._stop(key)
                with contextlib.suppress(Exception):
                    await self._leases.release(lease)
        with contextlib.suppress(Exception):
            await self._leases.leave(self._member)

    async def _loop(self) -> None:
        interval = self._leases.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception as error:  # the store may be away for a while: try again
                logger.warning("member %s: lease round failed: %r", self._member, error)

    async def tick(self) -> None:
        """One round: heartbeat, renew or give up what is held, take what is this member's."""
        async with self._lock:
            leases = self._leases
            await leases.heartbeat(self._member)
            members = await leases.members()
            if self._member not in members:
                members.append(self._member)
            mine = {key for key in self._keys if owner_of(key, members) == self._member}
            for key, lease in list(self._held.items()):
                if key not in mine:
                    # Stop first, then release: the last batch commits under a valid lease.
                    del self._held[key]
                    await self._stop(key)
                    await leases.release(lease)
                    logger.info("member %s handed %s over", self._member, key)
                    continue
                renewed = await leases.renew(lease)
                if renewed is None:
                    del self._held[key]
                    logger.warning("member %s lost the lease of %s", self._member, key)
                    await self._stop(key)
                else:
                    self._held[key] = renewed
            for key in self._keys:
                if key not in mine or key in self._held:
                    continue
                taken = await leases.acquire(key, self._member)
                if taken is None:
                    continue  # still held by its previous owner: until it hands over or expires
                self._held[key] = taken
                self._starting[key] = asyncio.create_task(
                    self._start(key, taken), name=f"eventtape-take-{key}"
                )

    async def _start(self, key: str, lease: Lease) -> None:
        try:
            await self._on_acquired(key, lease.token)
        except Exception as error:
            logger.warning("member %s could not start %s: %r", self._member, key, error)
            async with self._lock:  # (a _stop waiting for this task cancels it first)
                current = self._held.get(key)
                if current is not None and current.token == lease.token:
                    del self._held[key]
                    with contextlib.suppress(Exception):
                        await self._leases.release(current)
            return
        finally:
            self._starting.pop(key, None)
        logger.info("member %s took %s (token %d)", self._member, key, lease.token)

    async def _stop(self, key: str) -> None:
        starting = self._starting.pop(key, None)
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        await self._on_lost(key)
