"""Reading a JetStream event store without the application's event classes (for the CLI).

Events come back as their stored type names and JSON data, so an operator can read any
store, whatever code wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from ..._core.chain import ChainReport, HashChain, StoredLink
from ..._core.errors import StreamNotFound
from ..._core.stream_ids import category_of, validate_stream_id
from ..._core.wire import LAST_VERSION_HEADER, SYSTEM_EVENT_PREFIX
from ._codec import Envelope, decode_envelope, position_of, sequence_of
from ._config import JetStreamConfig
from ._direct import DirectGet
from ._verify import chain_links, removed_messages

__all__ = ["RawReader"]

_COUNT_LIMIT = 10_000


class RawReader:
    """Registry-free reads of an eventtape JetStream store."""

    def __init__(self, nc: Client, config: JetStreamConfig) -> None:
        self._nc = nc
        self._config = config
        self._direct = DirectGet(nc, config.stream, config.request_timeout)
        self._prefix = config.subject_prefix + "."

    async def start(self) -> None:
        await self._direct.stream_info()  # fails early, and clearly, on a wrong stream name
        await self._direct.start()

    async def close(self) -> None:
        await self._direct.close()
        await self._nc.close()

    @staticmethod
    def _entries(envelope: Envelope) -> list[dict[str, Any]]:
        body = envelope.body
        return [
            {
                "stream_id": envelope.stream_id,
                "version": envelope.first_version + index,
                "position": position_of(envelope.sequence, index),
                "recorded_at": envelope.timestamp.isoformat(timespec="milliseconds"),
                "type": event["type"],
                "schema": event["schema"],
                "event_id": event["id"],
                "actor": body.get("actor"),
                "causation_id": body.get("causation_id"),
                "correlation_id": body.get("correlation_id"),
                "headers": body.get("headers") or {},
                "data": event["data"],
            }
            for index, event in enumerate(body["events"])
        ]

    async def history(self, stream_id: str) -> list[dict[str, Any]]:
        validate_stream_id(stream_id)
        subject = self._config.subject(category_of(stream_id), stream_id)
        entries: list[dict[str, Any]] = []
        async for message in self._direct.batch(1, subject, batch=self._config.read_batch):
            entries.extend(self._entries(decode_envelope(message, self._prefix)))
        if not entries:
            raise StreamNotFound(stream_id)
        return entries

    @property
    def chain(self) -> HashChain | None:
        """Unknown here: :func:`eventtape.verify` is given the chain (key) to check with."""
        return None

    def chain_links(self, stream_id: str | None = None) -> AsyncIterator[StoredLink | ChainReport]:
        """The stored links, raw (see :func:`eventtape.verify`)."""
        return chain_links(self._direct, self._config, stream_id)

    async def removed_messages(self) -> tuple[tuple[int, int], ...]:
        """Ranges of message sequences gone from the stream."""
        return await removed_messages(self._direct)

    async def head_position(self) -> int:
        return await self._direct.head_position(self._prefix)

    async def events_after(self, position: int, categories: Collection[str] | None = None) -> int:
        """How many events lie after ``position`` (counted up to 10,000).

        Args:
            position: Count the events after this one.
            categories: Count only events of these stream categories (``None``: all).
        """
        only = set(categories) if categories is not None else None
        subject = self._config.filter_subject(
            next(iter(only)) if only is not None and len(only) == 1 else None
        )
        count = 0
        async for message in self._direct.batch(
            max(sequence_of(position), 1), subject, batch=self._config.read_batch
        ):
            envelope = decode_envelope(message, self._prefix)
            if only is not None and category_of(envelope.stream_id) not in only:
                continue
            for entry in self._entries(envelope):
                if entry["position"] > position:
                    count += 1
            if count >= _COUNT_LIMIT:
                return count
        return count

    async def follow(
        self, from_position: int, category: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield events from ``from_position`` (0: only new ones), then live ones."""
        if category is not None:
            validate_stream_id(category)
        subject_filter = self._config.filter_subject(category)
        position = from_position or await self.head_position() + 1
        sequence = max(sequence_of(position), 1)
        wake = asyncio.Event()

        async def woken(msg: Msg) -> None:
            wake.set()

        subscription = await self._nc.subscribe(self._config.wake_subject(subject_filter), cb=woken)
        try:
            while True:
                wake.clear()
                messages, _ = await self._direct.one_batch(
                    sequence, subject_filter, self._config.read_batch
                )
                for message in messages:
                    for entry in self._entries(decode_envelope(message, self._prefix)):
                        if entry["position"] >= position:
                            yield entry
                    sequence = message.sequence + 1
                if not messages:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._config.poll_interval):
                            await wake.wait()
        finally:
            if not self._nc.is_closed:
                await subscription.unsubscribe()

    async def streams(self, category: str | None, limit: int) -> list[dict[str, Any]]:
        if category is not None:
            validate_stream_id(category)
        info = await self._direct.stream_info(self._config.filter_subject(category))
        subjects = sorted(info["state"].get("subjects") or {})[:limit]
        rows = []
        for subject in subjects:
            message = await self._direct.last_for_subject(subject)
            if message is None:
                continue
            envelope = decode_envelope(message, self._prefix)
            rows.append(
                {
                    "stream_id": envelope.stream_id,
                    "version": int(
                        message.headers.get(LAST_VERSION_HEADER) or envelope.last_version
                    ),
                    "last_recorded_at": envelope.timestamp.isoformat(timespec="seconds"),
                }
            )
        return rows

    async def info(self) -> dict[str, Any]:
        info = await self._direct.stream_info()
        config, state = info["config"], info["state"]
        version = self._nc.connected_server_version
        return {
            "server": f"nats-server {version.major}.{version.minor}.{version.patch}",
            "stream": config["name"],
            "subjects": ", ".join(config.get("subjects", [])),
            "storage": config.get("storage"),
            "replicas": config.get("num_replicas"),
            "duplicate window (s)": config.get("duplicate_window", 0) / 1e9,
            "discard": config.get("discard"),
            "deny delete": config.get("deny_delete", False),
            "deny purge": config.get("deny_purge", False),
            "messages (appends)": state.get("messages"),
            "bytes": state.get("bytes"),
            "streams": state.get("num_subjects"),
            "head position": await self.head_position(),
            "durability": (
                "an ack survives the loss of a node"
                if config.get("num_replicas", 1) >= 3
                else "single copy: an ack survives a server kill only with sync_interval: always"
            ),
        }

    async def unfinished_processes(self) -> dict[str, list[str]]:
        """Process instances that have not finished, by process manager."""
        info = await self._direct.stream_info(self._config.filter_subject("process"))
        found: dict[str, list[str]] = {}
        for subject in sorted(info["state"].get("subjects") or {}):
            message = await self._direct.last_for_subject(subject)
            if message is None:
                continue
            envelope = decode_envelope(message, self._prefix)
            if envelope.body["events"][-1]["type"] == f"{SYSTEM_EVENT_PREFIX}ProcessFinished":
                continue
            name, _, key = envelope.stream_id.removeprefix("process-").partition(":")
            found.setdefault(name, []).append(key)
        return found
