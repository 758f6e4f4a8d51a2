"""Leases on a JetStream key-value bucket: compare-and-set on revision, expiry by the bucket's TTL.

Nothing here decides anything by itself: JetStream's per-subject expected-last-sequence check
(what a key-value ``create``/``update`` sends) picks exactly one winner for a key, replicated by
the server's own consensus on a cluster; the bucket's ``max_age`` removes a lease its holder
stopped renewing. A lease's fencing token is the revision of the write that took it: revisions
are the bucket stream's sequence numbers, so a later holder's token is always larger.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from ..._core.errors import StoreConfigurationError, StoreUnavailable
from ..._core.leases import Lease
from ..._core.wire import DEFAULT_LEASE_BUCKET, MEMBER_KEY_PREFIX

__all__ = ["JetStreamLeases"]

_WRONG_LAST_SEQUENCE = (10071, 10164)  # single server; a replicated stream with a write in flight
_MEMBER = re.compile(r"[A-Za-z0-9_-]{1,200}")
_KEY = re.compile(r"[A-Za-z0-9_=/.-]{1,1000}")


def _check_member(member: str) -> str:
    if not isinstance(member, str) or not _MEMBER.fullmatch(member):
        raise ValueError(f"a member id is 1-200 of A-Z a-z 0-9 _ -, got {member!r}")
    return member


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"not a valid lease key: {key!r}")
    return key


class JetStreamLeases:
    """An :class:`eventtape.LeaseStore` on a JetStream key-value bucket.

    Open it with :meth:`open`; it uses the connection you pass and does not close it.

    Args:
        nc: A connected nats-py client.
        kv: The bucket.
        bucket: The bucket's name.
        ttl: The bucket's time to live.
        timeout: Seconds to wait for JetStream on each request.
    """

    def __init__(self, nc: Client, kv: KeyValue, bucket: str, ttl: float, timeout: float) -> None:
        self._nc = nc
        self._kv = kv
        self._bucket = bucket
        self._ttl = ttl
        self._timeout = timeout

    @classmethod
    async def open(
        cls,
        nc: Client,
        *,
        bucket: str = DEFAULT_LEASE_BUCKET,
        ttl: float = 3.0,
        replicas: int = 1,
        timeout: float = 2.0,  # noqa: ASYNC109 (per request, not for the whole call)
    ) -> JetStreamLeases:
        """Create the bucket if missing (TTL ``ttl``, one revision per key), or open it.

        Choose ``ttl`` as how long a dead runner's partitions may wait for a new owner: they
        are taken over between ``ttl`` and about ``ttl * 4 / 3`` after its last renewal.
        Runners renew every ``ttl / 3``. Use ``replicas=3`` on a cluster.

        Raises:
            StoreConfigurationError: If the bucket exists with another TTL (every runner must
                agree on it), or ``ttl`` is not positive.
            StoreUnavailable: If JetStream does not answer.
        """
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 86_400:
            raise StoreConfigurationError(
                f"the lease ttl must be seconds in (0, 86400), got {ttl!r}"
            )
        if not isinstance(bucket, str) or not _MEMBER.fullmatch(bucket):
            raise StoreConfigurationError(
                f"a bucket name is 1-200 of A-Z a-z 0-9 _ -, got {bucket!r}"
            )
        js = nc.jetstream(timeout=timeout)
        try:
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket,
                        description="eventtape: partition leases and live runners",
                        history=1,
                        ttl=ttl,
                        storage=StorageType.FILE,
                        replicas=replicas,
                    )
                )
            info = await js.stream_info(f"KV_{bucket}")
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"lease bucket {bucket!r}: {error!r}") from error
        found = info.config.max_age
        if found is None or abs(found - ttl) > 1e-3:
            raise StoreConfigurationError(
                f"lease bucket {bucket!r} has ttl {found!r} s, this runner asks for {ttl!r} s:"
                " every runner sharing it must use the same ttl"
            )
        return cls(nc, kv, bucket, ttl, timeout)

    @property
    def ttl(self) -> float:
        """Seconds a lease or membership lasts without renewal (the bucket's TTL)."""
        return self._ttl

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    async def acquire(self, key: str, owner: str) -> Lease | None:
        """See :meth:`eventtape.LeaseStore.acquire`."""
        _check_key(key)
        _check_member(owner)
        value = json.dumps({"owner": owner}).encode()
        for _ in range(3):
            try:
                revision = await self._kv.create(key, value)
            except KeyWrongLastSequenceError:
                return None
            except KeyNotFoundError:
                # The holder's entry expired between create's refusal and its look at the key
                # (nats-py then raises this): the key is free now, so try again.
                continue
            except (TimeoutError, NatsError) as error:
                raise StoreUnavailable(f"acquiring lease {key!r}: {error!r}") from error
            return Lease(key, owner, revision, revision)
        return None

    async def renew(self, lease: Lease) -> Lease | None:
        """See :meth:`eventtape.LeaseStore.renew`."""
        value = json.dumps({"owner": lease.owner, "token": lease.token}).encode()
        try:
            revision = await self._kv.update(lease.key, value, last=lease.revision)
        except KeyWrongLastSequenceError:
            return None
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"renewing lease {lease.key!r}: {error!r}") from error
        return Lease(lease.key, lease.owner, lease.token, revision)

    async def release(self, lease: Lease) -> None:
        """See :meth:`eventtape.LeaseStore.release`."""
        try:
            await self._kv.delete(lease.key, last=lease.revision)
        except KeyWrongLastSequenceError:
            return  # someone else's now
        except APIError as error:
            if error.err_code in _WRONG_LAST_SEQUENCE:
                return  # (delete does not translate the code into the error above)
            raise StoreUnavailable(f"releasing lease {lease.key!r}: {error!r}") from error
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"releasing lease {lease.key!r}: {error!r}") from error

    async def holders(self, keys: Sequence[str]) -> dict[str, Lease]:
        """See :meth:`eventtape.LeaseStore.holders`."""
        found: dict[str, Lease] = {}
        for key in keys:
            try:
                entry = await self._kv.get(_check_key(key))
            except (KeyNotFoundError, KeyDeletedError, NotFoundError):
                continue
            except (TimeoutError, NatsError) as error:
                raise StoreUnavailable(f"reading lease {key!r}: {error!r}") from error
            value: dict[str, Any] = json.loads(entry.value or b"{}")
            revision = int(entry.revision or 0)
            found[key] = Lease(
                key, str(value["owner"]), int(value.get("token", revision)), revision
            )
        return found

    async def heartbeat(self, member: str) -> None:
        """See :meth:`eventtape.LeaseStore.heartbeat`."""
        try:
            await self._kv.put(f"{MEMBER_KEY_PREFIX}.{_check_member(member)}", b"")
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"registering member {member!r}: {error!r}") from error

    async def members(self) -> list[str]:
        """See :meth:`eventtape.LeaseStore.members`."""
        prefix = f"$KV.{self._bucket}.{MEMBER_KEY_PREFIX}."
        js = self._nc.jetstream(timeout=self._timeout)
        try:
            info = await js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}>")
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"listing members: {error!r}") from error
        subjects = info.state.subjects or {}
        return sorted(subject.removeprefix(prefix) for subject in subjects)

    async def leave(self, member: str) -> None:
        """See :meth:`eventtape.LeaseStore.leave`."""
        subject = f"$KV.{self._bucket}.{MEMBER_KEY_PREFIX}.{_check_member(member)}"
        js = self._nc.jetstream(timeout=self._timeout)
        try:
            # A purge of the subject leaves no marker behind, so the member vanishes at once.
            await js.purge_stream(f"KV_{self._bucket}", subject=subject)
        except (TimeoutError, NatsError) as error:
            raise StoreUnavailable(f"unregistering member {member!r}: {error!r}") from error
