"""Per-subject keys for personal data in a JetStream key-value bucket (never in the event log)."""

from __future__ import annotations

import base64
import os
from typing import Literal

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from ..._core.errors import StoreUnavailable, SubjectForgotten
from ..._core.privacy import check_subject
from ..._core.wire import DEFAULT_KEYS_BUCKET

__all__ = ["JetStreamKeyStore"]

_KEY_BYTES = 32
_UNAVAILABLE = (NatsTimeout, NoRespondersError, ConnectionClosedError, OutboundBufferLimitError)


def _kv_key(subject: str) -> str:
    check_subject(subject)
    # KV keys allow [-/_=.A-Za-z0-9]; a subject ("customer:789") may hold anything.
    return "s." + base64.urlsafe_b64encode(subject.encode()).decode().rstrip("=")


class JetStreamKeyStore:
    """A :class:`eventtape.privacy.KeyStore` on a JetStream key-value bucket.

    One entry per data subject, history 1. ``forget`` *purges* the entry: the key's bytes are
    removed from the bucket (and its history), and the purge marker that stays behind remembers
    that the subject was forgotten. Protect the bucket with NATS permissions: whoever can read
    it can read the personal data.

    Args:
        nc: A connected client.
        bucket: The bucket's name (created if missing).
        replicas: Copies of the bucket (3 on a 3-node cluster).
        storage: ``"file"`` (keys survive restarts) or ``"memory"``.
    """

    def __init__(
        self,
        nc: Client,
        *,
        bucket: str = DEFAULT_KEYS_BUCKET,
        replicas: int = 1,
        storage: Literal["file", "memory"] = "file",
    ) -> None:
        self._nc = nc
        self._bucket = bucket
        self._replicas = replicas
        self._storage = StorageType.FILE if storage == "file" else StorageType.MEMORY
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        """Open the bucket, creating it if missing."""
        js = self._nc.jetstream()
        try:
            try:
                self._kv = await js.key_value(self._bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=self._bucket,
                        history=1,
                        replicas=self._replicas,
                        storage=self._storage,
                        description="eventtape: per-subject keys of personal data",
                    )
                )
        except _UNAVAILABLE as error:
            raise StoreUnavailable(
                f"cannot open the key bucket {self._bucket!r}: {error!r}"
            ) from error

    def _bucket_or_fail(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("start() the JetStream key store first")
        return self._kv

    async def key_for(self, subject: str) -> bytes:
        """Return the subject's key, creating it if there is none yet."""
        kv = self._bucket_or_fail()
        name = _kv_key(subject)
        existing = await self._get(kv, name, subject)
        if existing is not None:
            return existing
        key = os.urandom(_KEY_BYTES)
        try:
            # Only if the subject has no entry at all, not even a purge marker: nats-py's
            # create() writes over a purge marker, which would undo a forget racing with us.
            await kv.update(name, key, last=0)
            return key
        except KeyWrongLastSequenceError:
            pass  # another process made it first, or forgot it meanwhile: read what is there
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot store a key for {subject!r}: {error!r}") from error
        found = await self._get(kv, name, subject)
        if found is None:
            raise StoreUnavailable(f"the key of {subject!r} vanished while it was being made")
        return found

    async def _get(self, kv: KeyValue, name: str, subject: str) -> bytes | None:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError as error:
            # nats-py reports a purged key as "not found" carrying the purge marker's operation.
            if error.op is not None:
                raise SubjectForgotten(subject) from None
            return None
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot read the key of {subject!r}: {error!r}") from error
        return entry.value or None

    async def existing_key(self, subject: str) -> bytes | None:
        """Return the subject's key, or ``None`` if it was forgotten or never made."""
        try:
            return await self._get(self._bucket_or_fail(), _kv_key(subject), subject)
        except SubjectForgotten:
            return None

    async def forget(self, subject: str) -> None:
        """Purge the subject's key from the bucket."""
        try:
            await self._bucket_or_fail().purge(_kv_key(subject))
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot forget {subject!r}: {error!r}") from error
