"""Direct gets (ADR-31): read stored messages by sequence or subject without a consumer.

nats-py has no helper for *batched* direct gets, which answer one request with many messages
and an end-of-batch marker, so this module sends the raw request. All batches share one
wildcard inbox subscription, routed by the reply subject's last token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..._core.errors import StoreUnavailable, StreamNotFound
from ._batch import BatchStatusError, PendingBatch, header_block, intercept, release
from ._codec import StoredMessage, decode_envelope, position_of

__all__ = ["DirectGet"]

_MAX_BATCH_BYTES = 8 * 1024 * 1024


def _status(msg: Msg) -> str | None:
    return msg.headers.get("Status") if msg.headers else None


class DirectGet:
    """Direct gets against one stream.

    Args:
        nc: A connected client.
        stream: The stream's name.
        timeout: Seconds to wait for each answer.
    """

    def __init__(self, nc: Client, stream: str, timeout: float) -> None:
        self._nc = nc
        self._stream = stream
        self._api = f"$JS.API.DIRECT.GET.{stream}"
        self._timeout = timeout
        self._inbox = nc.new_inbox()
        self._batches: dict[bytes, PendingBatch] = {}
        self._tokens = itertools.count()
        self._subscription: Any = None

    async def start(self) -> None:
        """Subscribe the shared reply inbox; its replies are parsed here (see ``_batch``)."""
        self._subscription = await self._nc.subscribe(
            f"{self._inbox}.*", cb=self._fallback, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        intercept(self._nc, self._subscription._id, self._route)

    async def close(self) -> None:
        """Unsubscribe the shared reply inbox."""
        if self._subscription is not None:
            release(self._nc, self._subscription._id)
            if not self._nc.is_closed:
                await self._subscription.unsubscribe()
        self._subscription = None

    async def _fallback(self, msg: Msg) -> None:
        """Replies nats-py parsed itself (when ``intercept`` could not hook this client)."""
        self._route(msg.subject.encode(), msg.data, header_block(msg.headers))

    def _route(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        batch = self._batches.get(subject.rpartition(b".")[2])
        if batch is not None:
            batch.feed(data, headers)

    async def stream_info(
        self, subjects_filter: str | None = None, *, deleted_details: bool = False
    ) -> dict[str, Any]:
        """Return the stream's info (config and state; per-subject counts with a filter; the
        deleted sequences with ``deleted_details``).

        Raises:
            StoreUnavailable: If JetStream does not answer.
            StreamNotFound: If the stream does not exist.
        """
        options: dict[str, Any] = {}
        if subjects_filter:
            options["subjects_filter"] = subjects_filter
        if deleted_details:
            options["deleted_details"] = True
        request = json.dumps(options).encode() if options else b""
        subject = f"$JS.API.STREAM.INFO.{self._stream}"
        try:
            reply = await self._nc.request(subject, request, timeout=self._timeout)
        except (NatsTimeout, NoRespondersError, ConnectionClosedError) as error:
            raise StoreUnavailable(f"cannot read the stream's state: {error!r}") from error
        info: dict[str, Any] = json.loads(reply.data)
        if "error" in info:
            description = info["error"].get("description")
            raise StreamNotFound(self._stream, f"JetStream stream {self._stream!r}: {description}")
        return info

    async def head_position(self, prefix: str) -> int:
        """Return the position of the stream's last event (0 if it is empty)."""
        last = int((await self.stream_info())["state"]["last_seq"])
        if last == 0:
            return 0
        message = await self.by_sequence(last)
        if message is None:
            return position_of(last, 0)
        return position_of(last, len(decode_envelope(message, prefix).body["events"]) - 1)

    async def last_for_subject(self, subject: str) -> StoredMessage | None:
        """Return the last message stored on ``subject``, or ``None``."""
        return await self._single(f"{self._api}.{subject}", b"")

    async def by_sequence(self, sequence: int) -> StoredMessage | None:
        """Return the message at ``sequence``, or ``None``."""
        return await self._single(self._api, json.dumps({"seq": sequence}).encode())

    async def _single(self, subject: str, payload: bytes) -> StoredMessage | None:
        try:
            msg = await self._nc.request(subject, payload, timeout=self._timeout)
        except (NatsTimeout, NoRespondersError, ConnectionClosedError) as error:
            raise StoreUnavailable(f"direct get on {subject!r} failed: {error!r}") from error
        status = _status(msg)
        if status == "404":
            return None
        if status is not None:  # 503: no stream, or no replica holding it, answers
            description = (msg.headers or {}).get("Description", "")
            raise StoreUnavailable(
                f"direct get on {subject!r} answered status {status} {description}".rstrip()
            )
        return StoredMessage(msg)

    async def batch(
        self, start: int, subject_filter: str, *, batch: int
    ) -> AsyncIterator[StoredMessage]:
        """Yield every message matching ``subject_filter`` from sequence ``start`` on.

        Reads batch after batch until none is pending; each batch is one request answered by
        up to ``batch`` messages and an end-of-batch marker saying how many more match.
        """
        next_sequence = max(start, 1)
        while True:
            messages, pending = await self.one_batch(next_sequence, subject_filter, batch)
            for message in messages:
                yield message
            if not messages or pending == 0:
                return
            next_sequence = messages[-1].sequence + 1

    async def one_batch(
        self, start: int, subject_filter: str, batch: int
    ) -> tuple[list[StoredMessage], int]:
        """Return up to ``batch`` messages from ``start`` on, and how many more match."""
        (answer,) = await self.batches(subject_filter, [(start, batch)])
        return answer

    async def batches(
        self, subject_filter: str, requests: list[tuple[int, int]]
    ) -> list[tuple[list[StoredMessage], int]]:
        """Send several batched gets at once, ``(start, batch)`` each, and return each one's
        messages and how many more match after it, in the order asked.

        All requests are written before any answer is awaited: a load of appends spread far
        apart costs one round trip, not one per append. ``batch`` 0 asks for the message at
        sequence ``start`` alone, whatever its subject, with a plain direct get (one message or
        none, and 0 for "more"): the server then need not count the subject's messages after it,
        which a batched get does for its end marker.
        """
        pendings: list[tuple[bytes, PendingBatch]] = []
        try:
            for start, batch in requests:
                token = str(next(self._tokens))
                pending = PendingBatch(single=batch == 0)
                self._batches[token.encode()] = pending
                pendings.append((token.encode(), pending))
                if batch == 0:
                    payload = b'{"seq":%d}' % start
                else:
                    payload = json.dumps(
                        {
                            "seq": start,
                            "next_by_subj": subject_filter,
                            "batch": batch,
                            "max_bytes": _MAX_BATCH_BYTES,
                        }
                    ).encode()
                await self._nc.publish(self._api, payload, reply=f"{self._inbox}.{token}")
            answers = []
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                async with asyncio.timeout(self._timeout):
                    for _, pending in pendings:
                        answers.append(await asyncio.shield(pending.done))
            except TimeoutError as error:
                raise StoreUnavailable(
                    f"batched direct get on {self._api!r} from {requests[0][0]} timed out"
                ) from error
            except BatchStatusError as error:
                raise StoreUnavailable(
                    f"batched direct get answered {error} (no stream, or no replica answering)"
                ) from error
            except (KeyError, ValueError) as error:
                raise StoreUnavailable(
                    f"batched direct get answered a malformed message: {error!r}"
                ) from error
            return answers
        except ConnectionClosedError as error:
            raise StoreUnavailable(f"connection closed during a direct get: {error!r}") from error
        finally:
            for key, pending in pendings:
                del self._batches[key]
                if not pending.done.done():
                    pending.done.cancel()
                elif not pending.done.cancelled():
                    pending.done.exception()  # retrieved, even when the caller was cancelled
