"""Snapshots on JetStream: a stream keeping one message (the latest snapshot) per subject."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Literal, Self

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ..._core.errors import SerializationError, StoreUnavailable
from ..._core.snapshots import Snapshot
from ..._core.stream_ids import category_of, validate_stream_id
from ..._core.wire import DEFAULT_SNAPSHOT_STREAM, DEFAULT_SNAPSHOT_SUBJECT_PREFIX
from ._direct import DirectGet

__all__ = ["JetStreamSnapshotStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Settings:
    stream: str
    subject_prefix: str
    replicas: int
    storage: Literal["file", "memory"]
    request_timeout: float


class JetStreamSnapshotStore:
    """An :class:`eventtape.SnapshotStore` on JetStream.

    Each aggregate stream's snapshot is the one message on ``<prefix>.<category>.<stream id>``
    of its own JetStream stream (``max_msgs_per_subject = 1``), read with one direct get.

    Args:
        nc: A connected client.
        stream: The snapshot stream's name.
        subject_prefix: Dot-separated tokens before ``<category>.<stream id>``.
        replicas: Copies of the stream.
        storage: ``"file"`` or ``"memory"`` (snapshots can always be rebuilt from events).
        request_timeout: Seconds to wait for any answer.
    """

    def __init__(
        self,
        nc: Client,
        *,
        stream: str = DEFAULT_SNAPSHOT_STREAM,
        subject_prefix: str = DEFAULT_SNAPSHOT_SUBJECT_PREFIX,
        replicas: int = 1,
        storage: Literal["file", "memory"] = "file",
        request_timeout: float = 5.0,
    ) -> None:
        self._nc = nc
        self._settings = _Settings(stream, subject_prefix, replicas, storage, request_timeout)
        self._direct = DirectGet(nc, stream, request_timeout)
        self._started = False

    @classmethod
    async def open(cls, nc: Client, **settings: object) -> Self:
        """Create or reuse the snapshot stream and return the store."""
        store = cls(nc, **settings)  # type: ignore[arg-type]
        await store.start()
        return store

    async def start(self) -> None:
        """Create the snapshot stream if it does not exist, and start reading replies."""
        if self._started:
            return
        settings = self._settings
        js = self._nc.jetstream(timeout=settings.request_timeout)
        try:
            await js.stream_info(settings.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=settings.stream,
                    description="eventtape snapshots: the latest per aggregate stream",
                    subjects=[f"{settings.subject_prefix}.>"],
                    storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
                    num_replicas=settings.replicas,
                    max_msgs_per_subject=1,
                    discard=DiscardPolicy.OLD,
                    allow_direct=True,
                )
            )
        await self._direct.start()
        self._started = True

    def _subject(self, stream_id: str) -> str:
        validate_stream_id(stream_id)
        return f"{self._settings.subject_prefix}.{category_of(stream_id)}.{stream_id}"

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` as its stream's one snapshot.

        Raises:
            SerializationError: If the state is not JSON-compatible.
            StoreUnavailable: If JetStream does not acknowledge it.
        """
        subject = self._subject(snapshot.stream_id)
        try:
            body = json.dumps(
                {
                    "stream_id": snapshot.stream_id,
                    "version": snapshot.version,
                    "aggregate_type": snapshot.aggregate_type,
                    "snapshot_version": snapshot.snapshot_version,
                    "state": snapshot.state,
                    "taken_at": snapshot.taken_at.isoformat(),
                    "position": snapshot.position,
                },
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as error:
            raise SerializationError(
                f"snapshot of {snapshot.stream_id!r} is not JSON-compatible: {error}"
            ) from error
        try:
            reply = await self._nc.request(subject, body, timeout=self._settings.request_timeout)
        except (NatsTimeout, NoRespondersError, ConnectionClosedError) as error:
            raise StoreUnavailable(
                f"snapshot of {snapshot.stream_id!r} not stored: {error!r}"
            ) from error
        ack = json.loads(reply.data)
        if "error" in ack:
            raise StoreUnavailable(f"snapshot of {snapshot.stream_id!r} refused: {ack['error']}")

    async def load(self, stream_id: str) -> Snapshot | None:
        """Return the snapshot of ``stream_id``, or ``None`` (also for one that is unreadable)."""
        message = await self._direct.last_for_subject(self._subject(stream_id))
        if message is None:
            return None
        try:
            data = json.loads(message.data)
            return Snapshot(
                stream_id=data["stream_id"],
                version=int(data["version"]),
                aggregate_type=data["aggregate_type"],
                snapshot_version=int(data["snapshot_version"]),
                state=data["state"],
                taken_at=datetime.fromisoformat(data["taken_at"]),
                position=data.get("position"),
            )
        except (ValueError, KeyError, TypeError):
            # A snapshot is only an optimisation: an unreadable one means "replay the events".
            return None

    async def delete(self, stream_id: str) -> None:
        """Forget the snapshot of ``stream_id``."""
        subject = self._subject(stream_id)
        try:
            await self._nc.request(
                f"$JS.API.STREAM.PURGE.{self._settings.stream}",
                json.dumps({"filter": subject}).encode(),
                timeout=self._settings.request_timeout,
            )
        except (NatsTimeout, NoRespondersError, ConnectionClosedError) as error:
            raise StoreUnavailable(f"snapshot of {stream_id!r} not deleted: {error!r}") from error

    async def aclose(self) -> None:
        """Stop reading replies (the connection stays open: it is yours)."""
        await self._direct.close()
        self._started = False
