"""Appending to the JetStream event store: one message per append, one round trip, and
retries that never duplicate (see :class:`JetStreamEventStore` for the layout)."""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..._core.conditions import AppendResult, ExpectedVersion, StreamState
from ..._core.errors import ConcurrencyError, DuplicateEventId, EventtapeError, StoreUnavailable
from ..._core.events import EMPTY_METADATA, Event, Metadata, NewEvent
from ..._core.registry import EventRegistry
from ..._core.stream_ids import category_of, validate_stream_id
from .._common import to_new_events, validate_expected_version
from ._codec import (
    LAST_VERSION_HEADER,
    MAX_EVENTS_PER_APPEND,
    Envelope,
    decode_envelope,
    encode_append,
    position_of,
)
from ._config import JetStreamConfig
from ._direct import DirectGet

__all__ = ["Appender"]

_WRONG_LAST_SEQUENCE = 10071
_TAIL_CACHE_SIZE = 100_000


class Appender:
    """The append path of :class:`JetStreamEventStore`.

    Remembers, per stream it has seen, the sequence of the message holding the latest version
    (``tails``), so an append expecting that version needs no read first.
    """

    def __init__(
        self, nc: Client, registry: EventRegistry, config: JetStreamConfig, direct: DirectGet
    ) -> None:
        self._nc = nc
        self._registry = registry
        self._config = config
        self._direct = direct
        self._prefix = config.subject_prefix + "."
        self.tails: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Append events atomically as one message; see :meth:`eventtape.EventStore.append`.

        Costs one round trip when the expected version is exact and this store has seen the
        stream's tail (the usual case after loading an aggregate), or the stream is new.
        """
        validate_stream_id(stream_id)
        validate_expected_version(expected_version)
        new = to_new_events(events)
        if len(new) > MAX_EVENTS_PER_APPEND:
            raise ValueError(
                f"an append holds at most {MAX_EVENTS_PER_APPEND} events on JetStream, "
                f"not {len(new)}; split it"
            )
        subject = self._config.subject(category_of(stream_id), stream_id)
        meta = metadata or EMPTY_METADATA
        attempts = self._config.max_append_attempts
        for _ in range(attempts):
            tail = await self._expected_tail(stream_id, subject, expected_version, new)
            if isinstance(tail, AppendResult):
                return tail
            version, sequence = tail
            body, _ = encode_append(self._registry, stream_id, version + 1, new, meta)
            headers = {
                "Nats-Msg-Id": str(new[0].event_id),
                "Nats-Expected-Last-Subject-Sequence": str(sequence),
                LAST_VERSION_HEADER: str(version + len(new)),
            }
            ack = await self._publish(subject, body, headers)
            error = ack.get("error")
            if error is None:
                if ack.get("duplicate"):
                    return await self._original_result(stream_id, new, int(ack["seq"]))
                acked = int(ack["seq"])
                self.remember(stream_id, version + len(new), acked)
                return _result(stream_id, version + 1, len(new), acked)
            if error.get("err_code") != _WRONG_LAST_SEQUENCE:
                raise EventtapeError(f"JetStream refused the append to {stream_id!r}: {error}")
            # Someone appended first, or an earlier try of this very append was stored.
            retried = await self._find_retry(stream_id, subject, version, sequence, new)
            if retried is not None:
                return retried
            actual = await self.refresh_tail(stream_id, subject)
            if isinstance(expected_version, int) or expected_version is StreamState.NO_STREAM:
                raise ConcurrencyError(stream_id, expected_version, actual[0])
        raise StoreUnavailable(
            f"gave up appending to {stream_id!r} after {attempts} attempts: others kept "
            "appending first"
        )

    async def _expected_tail(
        self,
        stream_id: str,
        subject: str,
        expected: ExpectedVersion,
        new: list[NewEvent[Event]],
    ) -> tuple[int, int] | AppendResult:
        """Return the (version, sequence) to append after, or the result of an earlier try."""
        if expected == 0 or expected is StreamState.NO_STREAM:
            return 0, 0
        cached = self.tails.get(stream_id)
        if isinstance(expected, int):
            if cached is not None and cached[0] == expected:
                return cached
            tail = await self.refresh_tail(stream_id, subject)
            if tail[0] == expected:
                return tail
            retried = await self._find_retry(stream_id, subject, expected, None, new)
            if retried is not None:
                return retried
            raise ConcurrencyError(stream_id, expected, tail[0])
        # ANY or STREAM_EXISTS: a cached tail is only a guess; a wrong guess costs a retry.
        tail = cached if cached is not None else await self.refresh_tail(stream_id, subject)
        if expected is StreamState.STREAM_EXISTS and tail[0] == 0:
            raise ConcurrencyError(stream_id, expected, 0)
        return tail

    async def _find_retry(
        self,
        stream_id: str,
        subject: str,
        version: int,
        sequence: int | None,
        new: list[NewEvent[Event]],
    ) -> AppendResult | None:
        """If the append right after ``version`` holds ``new``'s first id, return its result.

        That is an earlier try of this append whose acknowledgement was lost: the server
        checks the expected sequence before de-duplicating, so a retry sees a conflict.
        """
        found = await self._envelope_after(subject, version, sequence)
        if found is None or found.event_ids[0] != str(new[0].event_id):
            return None
        if not found.same_events(self._registry, new):
            raise DuplicateEventId(
                stream_id, new[0].event_id, "stored with other content or other events"
            )
        return _result(stream_id, found.first_version, len(new), found.sequence)

    async def _envelope_after(
        self, subject: str, version: int, sequence: int | None
    ) -> Envelope | None:
        """Return the stored append holding version ``version + 1`` of the subject's stream.

        With the sequence of the append holding ``version``, one direct get. Without it (a
        conflict on a stream this store has not seen), a binary search over sequences.
        """
        target = version + 1
        if sequence is not None:
            messages, _ = await self._direct.one_batch(sequence + 1, subject, 1)
            if messages:
                envelope = decode_envelope(messages[0], self._prefix)
                if envelope.first_version == target:
                    return envelope
        last = await self._direct.last_for_subject(subject)
        low, high = 1, last.sequence if last is not None else 0
        while low <= high:
            messages, _ = await self._direct.one_batch((low + high) // 2, subject, 1)
            if not messages:
                return None
            envelope = decode_envelope(messages[0], self._prefix)
            if envelope.first_version == target:
                return envelope
            if envelope.first_version > target:
                high = (low + high) // 2 - 1
            elif envelope.last_version < target:
                low = envelope.sequence + 1
            else:  # `target` is inside another append: no append starts there
                return None
        return None

    async def _original_result(
        self, stream_id: str, new: list[NewEvent[Event]], sequence: int
    ) -> AppendResult:
        """Check a de-duplicated append really is a retry of ``new``, and return its result."""
        message = await self._direct.by_sequence(sequence)
        if message is None:
            raise EventtapeError(
                f"the server reported a duplicate at sequence {sequence}, now gone"
            )
        original = decode_envelope(message, self._prefix)
        if original.stream_id != stream_id:
            raise DuplicateEventId(
                stream_id, new[0].event_id, f"it belongs to stream {original.stream_id!r}"
            )
        if not original.same_events(self._registry, new):
            raise DuplicateEventId(
                stream_id, new[0].event_id, "stored with other content or other events"
            )
        return _result(stream_id, original.first_version, len(new), sequence)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        try:
            reply = await self._nc.request(
                subject, body, timeout=self._config.request_timeout, headers=headers
            )
        except (NatsTimeout, ConnectionClosedError) as error:
            raise StoreUnavailable(
                f"no acknowledgement for the append on {subject!r} ({error!r}); it may or may "
                "not be stored: retrying the same events is safe"
            ) from error
        except NoRespondersError as error:
            raise StoreUnavailable(
                f"JetStream is not answering on {subject!r}: nothing was appended"
            ) from error
        ack: dict[str, Any] = json.loads(reply.data)
        return ack

    async def refresh_tail(self, stream_id: str, subject: str) -> tuple[int, int]:
        """Read the stream's last message: its (version, sequence), or (0, 0)."""
        message = await self._direct.last_for_subject(subject)
        if message is None:
            self.tails.pop(stream_id, None)
            return 0, 0
        header = message.headers.get(LAST_VERSION_HEADER)
        version = int(header) if header else decode_envelope(message, self._prefix).last_version
        self.remember(stream_id, version, message.sequence)
        return version, message.sequence

    def remember(self, stream_id: str, version: int, sequence: int) -> None:
        tails = self.tails
        tails[stream_id] = (version, sequence)
        tails.move_to_end(stream_id)
        if len(tails) > _TAIL_CACHE_SIZE:
            tails.popitem(last=False)


def _result(stream_id: str, first_version: int, count: int, sequence: int) -> AppendResult:
    return AppendResult(
        stream_id,
        first_version,
        first_version + count - 1,
        position_of(sequence, 0),
        position_of(sequence, count - 1),
    )
