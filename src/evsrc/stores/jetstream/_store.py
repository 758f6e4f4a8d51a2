"""The NATS JetStream event store."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, Self

import nats
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..._events import EMPTY_METADATA, Event, Metadata, NewEvent, RecordedEvent
from ..._exceptions import (
    ConcurrencyError,
    DuplicateEventId,
    EvsrcError,
    StoreUnavailable,
    StreamNotFound,
)
from ..._registry import EventRegistry
from ..._store import (
    AppendResult,
    ExpectedVersion,
    StreamState,
    event_type_names,
    to_new_events,
    validate_expected_version,
    validate_range,
)
from ..._stream_ids import category_of, validate_stream_id
from ._codec import (
    LAST_VERSION_HEADER,
    MAX_EVENTS_PER_APPEND,
    Envelope,
    decode_envelope,
    encode_append,
    position_of,
    sequence_of,
)
from ._config import JetStreamConfig
from ._direct import DirectGet, StoredMessage
from ._provision import provision_stream
from ._subscription import JetStreamSubscription

__all__ = ["JetStreamEventStore"]

_WRONG_LAST_SEQUENCE = 10071
_ACTUAL_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")
_TAIL_CACHE_SIZE = 100_000


class JetStreamEventStore:
    """An :class:`evsrc.EventStore` on NATS JetStream.

    One JetStream stream holds every event; each event stream is one subject,
    ``<subject_prefix>.<category>.<stream id>``, so per-stream concurrency checks and category
    filters run on the server. Each append is one message holding all its events, stored
    atomically in one round trip, conditional on the subject's last sequence
    (``Nats-Expected-Last-Subject-Sequence``) and de-duplicated by its first event id
    (``Nats-Msg-Id``). See the JetStream guide for what an acknowledged append guarantees.

    Build one with :meth:`connect` (it owns its connection) or :meth:`open` (on a connection you
    already have, with your credentials and TLS); both create or verify the stream.

    Args:
        nc: A connected nats-py client.
        registry: The event registry.
        config: Stream layout and timeouts.
        owns_connection: Close ``nc`` in :meth:`aclose`.
    """

    def __init__(
        self,
        nc: Client,
        registry: EventRegistry,
        config: JetStreamConfig | None = None,
        *,
        owns_connection: bool = False,
    ) -> None:
        self._nc = nc
        self._registry = registry
        self._config = config or JetStreamConfig()
        self._owns_connection = owns_connection
        self._direct = DirectGet(nc, self._config.stream, self._config.request_timeout)
        # stream id -> (version, sequence of the message holding that version): lets an
        # append to a stream this process has seen expect the right sequence without a read.
        self._tails: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._subscriptions: set[JetStreamSubscription] = set()
        self._prefix = self._config.subject_prefix + "."
        self._started = False

    @classmethod
    async def connect(
        cls,
        servers: str | list[str],
        registry: EventRegistry,
        *,
        config: JetStreamConfig | None = None,
        **connect_options: Any,
    ) -> Self:
        """Connect to NATS, create or verify the stream, and return a store owning the connection.

        Args:
            servers: Server URL(s), such as ``"nats://127.0.0.1:4222"``.
            registry: The event registry.
            config: Stream layout and timeouts.
            **connect_options: Passed to :func:`nats.connect` (credentials, TLS, names ...).

        Raises:
            StoreUnavailable: If no server answers.
            StoreConfigurationError: If the server is too old or the stream conflicts.
        """
        try:
            nc = await nats.connect(servers, **connect_options)
        except Exception as error:
            raise StoreUnavailable(f"cannot connect to NATS at {servers!r}: {error!r}") from error
        store = cls(nc, registry, config, owns_connection=True)
        try:
            await store.start()
        except BaseException:
            await nc.close()
            raise
        return store

    @classmethod
    async def open(
        cls, nc: Client, registry: EventRegistry, *, config: JetStreamConfig | None = None
    ) -> Self:
        """Create or verify the stream on an existing connection and return the store."""
        store = cls(nc, registry, config)
        await store.start()
        return store

    async def start(self) -> None:
        """Check the server, create or verify the stream, and start reading replies."""
        if self._started:
            return
        await provision_stream(self._nc, self._config)
        await self._direct.start()
        self._started = True

    @property
    def registry(self) -> EventRegistry:
        """The event registry this store names, encodes and decodes events with."""
        return self._registry

    @property
    def config(self) -> JetStreamConfig:
        """The stream layout and timeouts."""
        return self._config

    # -- appending ----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent[Event]],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Append events atomically as one message; see :meth:`evsrc.EventStore.append`.

        Costs one round trip when the expected version is exact and this store has seen the
        stream's tail (the usual case after loading an aggregate), or the stream is new.
        """
        self._check_started()
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
                self._remember(stream_id, version + len(new), acked)
                return _result(stream_id, version + 1, len(new), acked)
            if error.get("err_code") != _WRONG_LAST_SEQUENCE:
                raise EvsrcError(f"JetStream refused the append to {stream_id!r}: {error}")
            # Someone appended first, or an earlier try of this very append was stored.
            retried = await self._find_retry(stream_id, subject, version, sequence, new)
            if retried is not None:
                return retried
            actual = await self._refresh_tail(stream_id, subject)
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
        cached = self._tails.get(stream_id)
        if isinstance(expected, int):
            if cached is not None and cached[0] == expected:
                return cached
            tail = await self._refresh_tail(stream_id, subject)
            if tail[0] == expected:
                return tail
            retried = await self._find_retry(stream_id, subject, expected, None, new)
            if retried is not None:
                return retried
            raise ConcurrencyError(stream_id, expected, tail[0])
        # ANY or STREAM_EXISTS: a cached tail is only a guess; a wrong guess costs a retry.
        tail = cached if cached is not None else await self._refresh_tail(stream_id, subject)
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
                envelope = self._envelope(messages[0])
                if envelope.first_version == target:
                    return envelope
        last = await self._direct.last_for_subject(subject)
        low, high = 1, last.sequence if last is not None else 0
        while low <= high:
            messages, _ = await self._direct.one_batch((low + high) // 2, subject, 1)
            if not messages:
                return None
            envelope = self._envelope(messages[0])
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
            raise EvsrcError(f"the server reported a duplicate at sequence {sequence}, now gone")
        original = self._envelope(message)
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

    async def _refresh_tail(self, stream_id: str, subject: str) -> tuple[int, int]:
        """Read the stream's last message: its (version, sequence), or (0, 0)."""
        message = await self._direct.last_for_subject(subject)
        if message is None:
            self._tails.pop(stream_id, None)
            return 0, 0
        header = message.headers.get(LAST_VERSION_HEADER)
        version = int(header) if header else self._envelope(message).last_version
        self._remember(stream_id, version, message.sequence)
        return version, message.sequence

    def _remember(self, stream_id: str, version: int, sequence: int) -> None:
        tails = self._tails
        tails[stream_id] = (version, sequence)
        tails.move_to_end(stream_id)
        if len(tails) > _TAIL_CACHE_SIZE:
            tails.popitem(last=False)

    # -- reading -------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        position_hint: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield a stream's events in order; see :meth:`evsrc.EventStore.read_stream`.

        One batched direct get per ``read_batch`` appends; with a ``position_hint`` (a
        snapshot's position) reading starts at that append instead of the stream's first.
        """
        self._check_started()
        validate_stream_id(stream_id)
        validate_range("from_version", from_version, 1)
        validate_range("to_version", to_version, 0)
        validate_range("limit", limit, 0)
        subject = self._config.subject(category_of(stream_id), stream_id)
        last = to_version if to_version is not None else float("inf")
        if limit is not None:
            last = min(last, from_version - 1 + limit)
        start = sequence_of(position_hint) if position_hint else 1
        found = False
        envelope: Envelope | None = None
        async for message in self._direct.batch(start, subject, batch=self._config.read_batch):
            envelope = self._envelope(message)
            if not found and envelope.first_version > from_version and start > 1:
                # A hint past the versions asked for: read from the beginning instead.
                async for record in self.read_stream(
                    stream_id, from_version=from_version, to_version=to_version, limit=limit
                ):
                    yield record
                return
            found = True
            if envelope.last_version < from_version:
                continue
            if envelope.first_version > last:
                return
            first = envelope.first_version
            upto = None if last == float("inf") else int(last) - first
            for record in envelope.records(self._registry, from_version - first, upto):
                yield record
        if not found:
            if start > 1:  # a hint past the stream's end: read from the beginning instead
                async for record in self.read_stream(
                    stream_id, from_version=from_version, to_version=to_version, limit=limit
                ):
                    yield record
                return
            raise StreamNotFound(stream_id)
        if envelope is not None:
            self._remember(stream_id, envelope.last_version, envelope.sequence)

    async def read_all(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield events in global order; see :meth:`evsrc.EventStore.read_all`.

        A single category is filtered on the server (``<prefix>.<category>.*``); several, and
        event types, are filtered here.
        """
        self._check_started()
        validate_range("from_position", from_position, 1)
        validate_range("limit", limit, 0)
        subject_filter, wanted_categories, wanted_types = self._filters(categories, event_types)
        remaining = limit if limit is not None else -1
        if remaining == 0:
            return
        async for message in self._direct.batch(
            sequence_of(from_position), subject_filter, batch=self._config.read_batch
        ):
            for record in self._matching(message, from_position, wanted_categories, wanted_types):
                yield record
                remaining -= 1
                if remaining == 0:
                    return

    def subscribe(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
    ) -> JetStreamSubscription:
        """Catch up from ``from_position``, then follow live appends.

        Reads by sequence with direct gets, so it can neither skip nor repeat an event; the
        headers the server republishes once a message is stored wake it, and it also looks
        every ``poll_interval`` seconds, so a lost wake-up only delays it. It survives server
        restarts and reconnects, resuming after the last event it yielded.
        """
        self._check_started()
        validate_range("from_position", from_position, 1)
        subject_filter, wanted_categories, wanted_types = self._filters(categories, event_types)
        subscription = JetStreamSubscription(
            self, from_position, subject_filter, wanted_categories, wanted_types
        )
        self._subscriptions.add(subscription)
        return subscription

    def _filters(
        self,
        categories: Collection[str] | None,
        event_types: Collection[str | type[Event]] | None,
    ) -> tuple[str, frozenset[str] | None, frozenset[str] | None]:
        if isinstance(categories, str):
            raise TypeError("categories takes a collection of names, not one string")
        wanted_types = event_type_names(self._registry, event_types)
        if categories is None:
            return self._config.filter_subject(), None, wanted_types
        wanted = frozenset(categories)
        for category in wanted:
            validate_stream_id(category)
        if len(wanted) == 1:
            (only,) = wanted
            return self._config.filter_subject(only), None, wanted_types
        return self._config.filter_subject(), wanted, wanted_types

    def _matching(
        self,
        message: StoredMessage,
        from_position: int,
        categories: frozenset[str] | None,
        event_types: frozenset[str] | None,
    ) -> list[RecordedEvent[Event]]:
        envelope = self._envelope(message)
        if categories is not None and category_of(envelope.stream_id) not in categories:
            return []
        if event_types is not None and not any(
            event["type"] in event_types for event in envelope.body["events"]
        ):
            return []
        skip = max(from_position - position_of(envelope.sequence, 0), 0)
        return [
            record
            for record in envelope.records(self._registry, skip)
            if event_types is None or record.event_type in event_types
        ]

    def _envelope(self, message: StoredMessage) -> Envelope:
        return decode_envelope(
            message.sequence, message.subject, message.timestamp, message.data, self._prefix
        )

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's version (0 if it has no events): one direct get."""
        self._check_started()
        validate_stream_id(stream_id)
        subject = self._config.subject(category_of(stream_id), stream_id)
        version, _ = await self._refresh_tail(stream_id, subject)
        return version

    async def head_position(self) -> int:
        """Return the position of the store's last event (0 if it is empty)."""
        self._check_started()
        try:
            reply = await self._nc.request(
                f"$JS.API.STREAM.INFO.{self._config.stream}",
                b"",
                timeout=self._config.request_timeout,
            )
        except (NatsTimeout, NoRespondersError, ConnectionClosedError) as error:
            raise StoreUnavailable(f"cannot read the stream's state: {error!r}") from error
        last_sequence = int(json.loads(reply.data)["state"]["last_seq"])
        if last_sequence == 0:
            return 0
        message = await self._direct.by_sequence(last_sequence)
        if message is None:
            return position_of(last_sequence, 0)
        return position_of(last_sequence, len(self._envelope(message).body["events"]) - 1)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """End every subscription, stop reading replies, and close an owned connection."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        await self._direct.close()
        self._started = False
        if self._owns_connection and not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("start() the JetStream store (or use connect()/open()) first")

    # Used by subscriptions.
    @property
    def nc(self) -> Client:
        """The NATS connection."""
        return self._nc

    @property
    def direct(self) -> DirectGet:
        """The direct-get reader."""
        return self._direct

    def discard_subscription(self, subscription: JetStreamSubscription) -> None:
        """Forget a closed subscription."""
        self._subscriptions.discard(subscription)


def _result(stream_id: str, first_version: int, count: int, sequence: int) -> AppendResult:
    return AppendResult(
        stream_id,
        first_version,
        first_version + count - 1,
        position_of(sequence, 0),
        position_of(sequence, count - 1),
    )
