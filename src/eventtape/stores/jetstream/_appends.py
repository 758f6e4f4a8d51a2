"""Appending to the JetStream event store: one message per append, one round trip, and
retries that never duplicate (see :class:`JetStreamEventStore` for the layout)."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    MaxPayloadError,
    NoRespondersError,
    OutboundBufferLimitError,
)
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from ..._core.chain import HashChain
from ..._core.conditions import AppendResult, ExpectedVersion, StreamState
from ..._core.errors import (
    AppendRefused,
    ConcurrencyError,
    DuplicateEventId,
    InvalidArgument,
    SerializationError,
    StoreUnavailable,
)
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

# "wrong last sequence": 10071 on a single server; 10164 on a replicated stream while another
# conditional publish to the same subject is in flight. Both mean "someone else was first".
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
# "duplicate message id is in process" (replicated streams): a retry overlapping its original.
_DUPLICATE_IN_PROCESS = 10158
_TAIL_CACHE_SIZE = 100_000
# Room the protocol line and the headers take besides the body, when checking max_payload.
_HEADER_ALLOWANCE = 512
_BACKOFF_BASE, _BACKOFF_CAP = 0.002, 0.1


class Appender:
    """The append path of :class:`JetStreamEventStore`.

    Remembers, per stream it has seen, the sequence of the message holding the latest version
    (``tails``), so an append expecting that version needs no read first.
    """

    def __init__(
        self,
        nc: Client,
        registry: EventRegistry,
        config: JetStreamConfig,
        direct: DirectGet,
        chain: HashChain | None = None,
    ) -> None:
        self._nc = nc
        self._chain = chain
        self._registry = registry
        self._config = config
        self._direct = direct
        self._prefix = config.subject_prefix + "."
        self.tails: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        # Stream id -> (version, sequence of the message holding it, link of the event at that
        # version; None: stored unchained). Keyed by the sequence too: after the JetStream
        # stream is deleted and re-created elsewhere, the same version at another sequence is
        # another event, and chaining from the old link would break the chain.
        self.links: dict[str, tuple[int, int, bytes | None]] = {}

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
            raise InvalidArgument(
                f"an append holds at most {MAX_EVENTS_PER_APPEND} events on JetStream, "
                f"not {len(new)}; split it"
            )
        subject = self._config.subject(category_of(stream_id), stream_id)
        meta = metadata or EMPTY_METADATA
        attempts = self._config.max_append_attempts
        refresh = False  # re-read the tail: the cached one lost a race a moment ago
        for attempt in range(attempts):
            try:
                tail = await self._expected_tail(stream_id, subject, expected_version, new, refresh)
            except StoreUnavailable as unavailable:
                raise StoreUnavailable(
                    f"cannot read {stream_id!r} before appending to it ({unavailable}): nothing"
                    " was stored",
                    stored=False,
                ) from unavailable
            if isinstance(tail, AppendResult):
                return tail
            version, sequence = tail
            previous = None
            if self._chain is not None and version:
                cached = self.links.get(stream_id)  # inline: the usual case awaits nothing
                if cached is not None and cached[0] == version and cached[1] == sequence:
                    previous = cached[2]
                else:
                    previous = await self._previous_link(stream_id, version, sequence)
            body, _, link = encode_append(
                self._registry, stream_id, version + 1, new, meta, self._chain, previous
            )
            self._check_size(stream_id, body, len(new))
            headers = {
                "Nats-Msg-Id": str(new[0].event_id),
                "Nats-Expected-Last-Subject-Sequence": str(sequence),
                LAST_VERSION_HEADER: str(version + len(new)),
            }
            ack = await self._publish(stream_id, subject, body, headers)
            error = ack.get("error")
            if error is None:
                if ack.get("duplicate"):
                    return await self._original_result(stream_id, new, int(ack["seq"]))
                acked = int(ack["seq"])
                self.remember(stream_id, version + len(new), acked)
                if self._chain is not None:
                    self.remember_link(stream_id, version + len(new), acked, link)
                return _result(stream_id, version + 1, len(new), acked)
            code = error.get("err_code")
            if code == _DUPLICATE_IN_PROCESS:
                # An earlier try of this very append is being stored right now: wait for it,
                # then the same publish is answered "duplicate" (or conflicts, and is found).
                await _backoff(attempt)
                continue
            if code not in _WRONG_LAST_SEQUENCE:
                raise AppendRefused(stream_id, f"JetStream answered {error}")
            # Someone appended first, or an earlier try of this very append was stored.
            retried = await self._find_retry(stream_id, subject, version, sequence, new)
            if retried is not None:
                return retried
            if isinstance(expected_version, int) or expected_version is StreamState.NO_STREAM:
                actual = await self.refresh_tail(stream_id, subject)
                raise ConcurrencyError(stream_id, expected_version, actual[0])
            # ANY or STREAM_EXISTS: after a random pause (racing writers spread out instead of
            # the last winner winning every time), read the tail again and retry.
            refresh = True
            await _backoff(attempt)
        raise AppendRefused(
            stream_id,
            f"others kept appending first; gave up after {attempts} attempts (max_append_attempts)",
        )

    async def _previous_link(self, stream_id: str, version: int, sequence: int) -> bytes | None:
        """The link of the stream's event ``version``, read from message ``sequence``."""
        message = await self._direct.by_sequence(sequence)
        envelope = decode_envelope(message, self._prefix) if message is not None else None
        if envelope is None or envelope.stream_id != stream_id or envelope.last_version != version:
            # The tail moved (deleted, or the stream re-created) since it was read: the
            # expected sequence then fails the append as well, and the retry reads it afresh.
            return None
        link = envelope.body["events"][-1].get("link")
        try:
            return _link_bytes(link)
        except ValueError as error:
            raise SerializationError(
                f"the last event of {stream_id!r} (version {version}) has a corrupt link"
                f" {link!r:.80}: run `eventtape verify {stream_id}`"
            ) from error

    def remember_link(
        self, stream_id: str, version: int, sequence: int, link: bytes | None
    ) -> None:
        links = self.links
        if len(links) >= _TAIL_CACHE_SIZE and stream_id not in links:
            # Bounded without LRU bookkeeping on every append: a forgotten link costs one
            # direct get at that stream's next append.
            links.clear()
        links[stream_id] = (version, sequence, link)

    def remember_read_link(
        self, stream_id: str, version: int, sequence: int, hex_link: object
    ) -> None:
        """Remember the link of the last event a read returned (saves a get at the next append)."""
        try:
            link = _link_bytes(hex_link)
        except ValueError:
            return  # a corrupt link: the append reads it and reports it
        self.remember_link(stream_id, version, sequence, link)

    def _check_size(self, stream_id: str, body: bytes, count: int) -> None:
        """Refuse, before sending, what the server would refuse as too large."""
        limit = self._nc.max_payload
        if limit and len(body) + _HEADER_ALLOWANCE > limit:
            raise AppendRefused(
                stream_id,
                f"{count} event(s) encode to {len(body)} bytes, more than the server's"
                f" max_payload of {limit} bytes (an append is one message: split it, or raise"
                " max_payload in the server's configuration, up to 8 MiB)",
            )

    async def _expected_tail(
        self,
        stream_id: str,
        subject: str,
        expected: ExpectedVersion,
        new: list[NewEvent[Event]],
        refresh: bool = False,
    ) -> tuple[int, int] | AppendResult:
        """Return the (version, sequence) to append after, or the result of an earlier try.

        ``refresh``: read the tail from the server even if one is cached.
        """
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
        if cached is not None and not refresh:
            tail = cached
        else:
            tail = await self.refresh_tail(stream_id, subject)
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
            raise StoreUnavailable(
                f"the server reported a duplicate of the append to {stream_id!r} at sequence"
                f" {sequence}, which cannot be read back: the outcome is unknown"
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

    async def _publish(
        self, stream_id: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, Any]:
        """Send one append and return the server's answer; every failure is one of ours."""
        try:
            reply = await self._nc.request(
                subject, body, timeout=self._config.request_timeout, headers=headers
            )
        except (NatsTimeout, ConnectionClosedError) as error:
            raise StoreUnavailable(
                f"no acknowledgement for the append to {stream_id!r} ({error!r}): the outcome"
                " is unknown, the events may or may not be stored; retrying the same events is"
                " safe"
            ) from error
        except NoRespondersError as error:
            raise StoreUnavailable(
                f"JetStream is not answering on {subject!r} (no stream, or no server holding"
                f" it): nothing was stored for {stream_id!r}",
                stored=False,
            ) from error
        except MaxPayloadError as error:
            raise AppendRefused(stream_id, f"too large for the server ({error})") from error
        except (
            OutboundBufferLimitError,
            ConnectionReconnectingError,
            ConnectionDrainingError,
        ) as error:
            raise StoreUnavailable(
                f"the connection is down or closing ({error!r}): the append to {stream_id!r}"
                " was not sent, nothing was stored",
                stored=False,
            ) from error
        except NatsError as error:
            raise StoreUnavailable(
                f"the append to {stream_id!r} failed in the client ({error!r}): the outcome is"
                " unknown; retrying the same events is safe"
            ) from error
        try:
            ack: dict[str, Any] = json.loads(reply.data)
        except ValueError as error:
            raise StoreUnavailable(
                f"the acknowledgement for {stream_id!r} is not JSON ({reply.data[:200]!r}):"
                " the outcome is unknown"
            ) from error
        return ack

    async def refresh_tail(self, stream_id: str, subject: str) -> tuple[int, int]:
        """Read the stream's last message: its (version, sequence), or (0, 0)."""
        message = await self._direct.last_for_subject(subject)
        if message is None:
            self.tails.pop(stream_id, None)
            return 0, 0
        header = message.headers.get(LAST_VERSION_HEADER)
        if header and header.isascii() and header.isdigit():
            version = int(header)
        else:  # none, or a forged one: the body tells (or is our SerializationError)
            version = decode_envelope(message, self._prefix).last_version
        self.remember(stream_id, version, message.sequence)
        return version, message.sequence

    def remember_if_newer(self, stream_id: str, version: int, sequence: int) -> None:
        """Remember a tail seen by a read, unless a later one is known (a replica behind)."""
        known = self.tails.get(stream_id)
        if known is None or known[1] < sequence:
            self.remember(stream_id, version, sequence)

    def remember(self, stream_id: str, version: int, sequence: int) -> None:
        tails = self.tails
        tails[stream_id] = (version, sequence)
        tails.move_to_end(stream_id)
        if len(tails) > _TAIL_CACHE_SIZE:
            tails.popitem(last=False)


def _link_bytes(stored: object) -> bytes | None:
    """A stored link (hex text, or absent) as bytes; ``ValueError`` for anything else (a forged
    link of another type must not read as "no link")."""
    if stored is None:
        return None
    if not isinstance(stored, str):
        raise ValueError(stored)
    return bytes.fromhex(stored)


async def _backoff(attempt: int) -> None:
    """Sleep a random time up to an exponentially growing cap ("full jitter")."""
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))


def _result(stream_id: str, first_version: int, count: int, sequence: int) -> AppendResult:
    return AppendResult(
        stream_id,
        first_version,
        first_version + count - 1,
        position_of(sequence, 0),
        position_of(sequence, count - 1),
    )
