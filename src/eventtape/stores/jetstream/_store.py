"""The NATS JetStream event store."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, Self

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from ..._core.chain import UNKEYED, ChainReport, HashChain, StoredLink
from ..._core.conditions import AppendResult, ExpectedVersion, StreamState
from ..._core.dcb import AppendCondition, DcbReadResult, Query, TaggedEvent
from ..._core.errors import (
    InvalidArgument,
    StoreUnavailable,
    StreamNotFound,
)
from ..._core.events import Event, Metadata, NewEvent, RecordedEvent
from ..._core.registry import EventRegistry
from ..._core.stream_ids import category_of, validate_stream_id
from ..._core.telemetry import append_instruments, with_trace_context
from .._common import (
    check_metadata,
    event_type_names,
    validate_position_hint,
    validate_range,
)
from ._appends import Appender
from ._codec import (
    Envelope,
    StoredMessage,
    decode_envelope,
    position_of,
    sequence_of,
)
from ._config import JetStreamConfig
from ._dcb import DcbJetStream
from ._direct import DirectGet
from ._provision import provision_stream
from ._readcache import DecodedCache, SequenceIndex
from ._subscription import JetStreamSubscription
from ._verify import chain_links, removed_messages

__all__ = ["JetStreamEventStore"]

_STALE_READ_RETRIES = 14  # about a second in all

_WRONG_LAST_SEQUENCE = 10071
_ACTUAL_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")
_TAIL_CACHE_SIZE = 100_000
_FIRST_CACHE_SIZE = 100_000
# Appends of one stream at most this many sequences apart are read with one batched get (the
# server walks the messages between them); farther apart, each run gets its own request.
_RUN_GAP = 64
# How old the answer to "can this stream lose messages?" may be (see _append_only).
_APPEND_ONLY_RECHECK = 5.0


def _slice(
    records: list[RecordedEvent[Event]], skip: int, last: int | None, first: int
) -> list[RecordedEvent[Event]]:
    """The records of one append from index ``skip`` on, up to version ``last``."""
    end = len(records) if last is None else max(min(last - first + 1, len(records)), 0)
    start = max(skip, 0)
    if start == 0 and end == len(records):
        return records
    return records[start:end]


class JetStreamEventStore:
    """An :class:`eventtape.EventStore` on NATS JetStream.

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
        chain: How appended events are linked for tamper evidence (see
            :func:`eventtape.verify`): plain SHA-256 by default, HMAC with
            ``HashChain(key=...)``, none with ``None``.
    """

    def __init__(
        self,
        nc: Client,
        registry: EventRegistry,
        config: JetStreamConfig | None = None,
        *,
        owns_connection: bool = False,
        chain: HashChain | None = UNKEYED,
    ) -> None:
        if chain is not None and not isinstance(chain, HashChain):
            raise InvalidArgument(f"chain takes a HashChain or None, not {type(chain).__name__}")
        self._nc = nc
        self._chain = chain
        self._registry = registry
        self._config = config or JetStreamConfig()
        self._owns_connection = owns_connection
        self._direct = DirectGet(nc, self._config.stream, self._config.request_timeout)
        self._appender = Appender(nc, registry, self._config, self._direct, chain)
        self._dcb = DcbJetStream(nc, registry, self._config, self._direct, chain)
        self._subscriptions: set[JetStreamSubscription] = set()
        self._prefix = self._config.subject_prefix + "."
        self._started = False
        # Stream id -> sequence of its first message: where a read from version 1 starts.
        self._firsts: collections.OrderedDict[str, int] = collections.OrderedDict()
        # Decoded appends by sequence, and each stream's append sequences (see _readcache).
        self._decoded = DecodedCache(registry, self._config.read_cache_events)
        self._index = SequenceIndex(self._config.sequence_index_size)
        self._append_only_stream = False
        self._append_only_checked = -_APPEND_ONLY_RECHECK
        self._advisories: Any = None

    @classmethod
    async def connect(
        cls,
        servers: str | list[str],
        registry: EventRegistry,
        *,
        config: JetStreamConfig | None = None,
        chain: HashChain | None = UNKEYED,
        **connect_options: Any,
    ) -> Self:
        """Connect to NATS, create or verify the stream, and return a store owning the connection.

        Args:
            servers: Server URL(s), such as ``"nats://127.0.0.1:4222"``; a string may list
                several, comma-separated (the ``NATS_URL`` convention), as for a cluster.
            registry: The event registry.
            config: Stream layout and timeouts.
            chain: How appended events are linked (see the class's ``chain``).
            **connect_options: Passed to :func:`nats.connect` (credentials, TLS, names ...).

        Raises:
            StoreUnavailable: If no server answers.
            StoreConfigurationError: If the server is too old or the stream conflicts.
        """
        if isinstance(servers, str):
            servers = [url.strip() for url in servers.split(",") if url.strip()]
        try:
            nc = await nats.connect(servers, **connect_options)
        except Exception as error:
            raise StoreUnavailable(f"cannot connect to NATS at {servers!r}: {error!r}") from error
        store = cls(nc, registry, config, owns_connection=True, chain=chain)
        try:
            await store.start()
        except BaseException:
            await nc.close()
            raise
        return store

    @classmethod
    async def open(
        cls,
        nc: Client,
        registry: EventRegistry,
        *,
        config: JetStreamConfig | None = None,
        chain: HashChain | None = UNKEYED,
    ) -> Self:
        """Create or verify the stream on an existing connection and return the store."""
        store = cls(nc, registry, config, chain=chain)
        await store.start()
        return store

    async def start(self) -> None:
        """Check the server, create or verify the stream, and start reading replies."""
        if self._started:
            return
        await provision_stream(self._nc, self._config)
        await self._direct.start()
        # The JetStream stream deleted, re-created, updated or restored by anyone: what this
        # store remembers about its streams' tails (versions, sequences, links) may describe
        # messages that are gone, and a stream written again to the same sequence and version
        # would pass the append's sequence check, chained from a stale link. Forget it all.
        self._advisories = await self._nc.subscribe(
            f"$JS.EVENT.ADVISORY.STREAM.*.{self._config.stream}", cb=self._forget_tails
        )
        self._started = True

    async def _forget_tails(self, _: Any) -> None:
        self._appender.tails.clear()
        self._appender.links.clear()
        self._firsts.clear()
        # The same for loads: where appends are, what was decoded, whether the stream can
        # lose messages (an update may have added a limit: look at its configuration again).
        self._index.clear()
        self._decoded.clear()
        self._append_only_checked = -_APPEND_ONLY_RECHECK
        self._dcb.reset()  # the DCB tag index too: it records which sequences it has read

    @property
    def registry(self) -> EventRegistry:
        """The event registry this store names, encodes and decodes events with."""
        return self._registry

    @property
    def config(self) -> JetStreamConfig:
        """The stream layout and timeouts."""
        return self._config

    @property
    def chain(self) -> HashChain | None:
        """How this store links the events it appends (``None``: it does not)."""
        return self._chain

    # -- appending ----------------------------------------------------------------------

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
        self._check_started()
        metadata = with_trace_context(check_metadata(metadata))
        instruments = append_instruments()
        if instruments is None:
            return self._learn(
                await self._appender.append(
                    stream_id, events, expected_version=expected_version, metadata=metadata
                )
            )
        # The category for metrics, if the id is a valid one (else the append refuses it).
        category = category_of(stream_id) if isinstance(stream_id, str) else ""
        count = len(events) if isinstance(events, Sequence) else 0
        with instruments.measure("jetstream", category, count):
            return self._learn(
                await self._appender.append(
                    stream_id, events, expected_version=expected_version, metadata=metadata
                )
            )

    def _learn(self, result: AppendResult) -> AppendResult:
        """Note where an append was stored, for loads by sequence (see ``_readcache``)."""
        self._index.learn(
            result.stream_id,
            result.first_version,
            result.version,
            sequence_of(result.first_position),
        )
        return result

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
        """Yield a stream's events in order; see :meth:`eventtape.EventStore.read_stream`.

        One batched direct get per ``read_batch`` appends; with a ``position_hint`` (a
        snapshot's position) reading starts at that append instead of the stream's first.

        Reads your writes: on a replicated stream a direct get may be answered by a follower
        that has not yet stored the latest append. When this store knows the stream reached a
        later version (it appended it, or read it before), a read that ends short of it is
        read again from where it stopped, for up to a second, until it catches up.
        """
        self._check_started()
        validate_stream_id(stream_id)
        validate_range("from_version", from_version, 1)
        validate_range("to_version", to_version, 0)
        validate_range("limit", limit, 0)
        validate_position_hint(position_hint)
        last = to_version if to_version is not None else None
        if limit is not None:
            last = min(
                last if last is not None else limit + from_version - 1, from_version - 1 + limit
            )
        if from_version > 1 and position_hint is None and stream_id not in self._appender.tails:
            # One direct get for the stream's tail: a read of its last versions then starts
            # there instead of walking the whole store from sequence 1.
            await self._appender.refresh_tail(
                stream_id, self._config.subject(category_of(stream_id), stream_id)
            )
        seen = from_version - 1
        hint = position_hint
        for attempt in range(_STALE_READ_RETRIES):
            try:
                async for record in self._read_once(stream_id, seen + 1, last, hint):
                    seen = record.version
                    yield record
            except StreamNotFound:
                if stream_id not in self._appender.tails:
                    raise
            known = self._appender.tails.get(stream_id)
            target = known[0] if known is not None else 0
            if last is not None:
                target = min(target, last)
            if seen >= target:
                return
            hint = None
            await asyncio.sleep(0.01 * (attempt + 1))
        raise StoreUnavailable(
            f"the replicas answering reads of {stream_id!r} stay behind version {target}, which"
            f" this store saw; they returned up to version {seen}"
        )

    async def _read_once(
        self,
        stream_id: str,
        from_version: int,
        last: int | None,
        position_hint: int | None,
        *,
        use_hints: bool = True,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """One pass over a stream's messages from ``from_version`` up to ``last``."""
        subject = self._config.subject(category_of(stream_id), stream_id)
        self._decoded.check_registry()
        if use_hints:
            indexed = await self._read_indexed(stream_id, subject, from_version, last)
            if indexed is not None:
                envelopes, more_from = indexed
                for known, records in envelopes:
                    first = known.first_version
                    for record in _slice(records, from_version - first, last, first):
                        yield record
                if more_from:  # the stream goes on past what the index knew
                    async for record in self._read_once(
                        stream_id,
                        envelopes[-1][0].last_version + 1,
                        last,
                        position_of(more_from, 0),
                        use_hints=False,
                    ):
                        yield record
                elif envelopes:
                    self._remember_tail(stream_id, envelopes[-1][0])
                return
        if position_hint is not None and not use_hints:
            start = sequence_of(position_hint)  # a continuation right after indexed appends
        else:
            start = self._start_sequence(stream_id, from_version, position_hint) if use_hints else 1
        found = False
        envelope: Envelope | None = None
        async for message in self._direct.batch(start, subject, batch=self._config.read_batch):
            envelope, records = self._decode(message)
            if not found and envelope.first_version > from_version and start > 1:
                # A hint past the versions asked for (the stream was re-created, or the
                # range starts before the hinted message): read from the beginning instead.
                self._firsts.pop(stream_id, None)
                async for record in self._read_once(
                    stream_id, from_version, last, None, use_hints=False
                ):
                    yield record
                return
            if not found and envelope.first_version == 1:
                self._remember_first(stream_id, envelope.sequence)
            found = True
            self._index.learn(
                stream_id, envelope.first_version, envelope.last_version, envelope.sequence
            )
            if envelope.last_version < from_version:
                continue
            if last is not None and envelope.first_version > last:
                return
            first = envelope.first_version
            for record in _slice(records, from_version - first, last, first):
                yield record
        if not found:
            if start > 1:  # a hint past the stream's end: read from the beginning instead
                self._firsts.pop(stream_id, None)
                async for record in self._read_once(
                    stream_id, from_version, last, None, use_hints=False
                ):
                    yield record
                return
            raise StreamNotFound(stream_id)
        if envelope is not None:
            self._remember_tail(stream_id, envelope)

    def _remember_tail(self, stream_id: str, envelope: Envelope) -> None:
        """Note the last append a read returned: the next append needs no read first."""
        self._appender.remember_if_newer(stream_id, envelope.last_version, envelope.sequence)
        if self._chain is not None:
            self._appender.remember_read_link(
                stream_id,
                envelope.last_version,
                envelope.sequence,
                envelope.body["events"][-1].get("link"),
            )

    def _decode(self, message: StoredMessage) -> tuple[Envelope, list[RecordedEvent[Event]]]:
        """An append and all its events, decoded once per process while its bytes stay the
        same (see ``_readcache``)."""
        cached = self._decoded.get(message)
        if cached is not None:
            return cached
        envelope = decode_envelope(message, self._prefix)
        records = envelope.records(self._registry)
        if self._decoded.max_events:
            self._decoded.put(message, envelope, records)
        return envelope, records

    async def _read_indexed(
        self, stream_id: str, subject: str, from_version: int, last: int | None
    ) -> tuple[list[tuple[Envelope, list[RecordedEvent[Event]]]], int] | None:
        """Read the appends the sequence index knows, by their sequences, all requests at once.

        Returns the decoded appends holding ``from_version`` on, and the sequence to go on
        reading from (0 if nothing more matches), or ``None`` when the index does not cover
        ``from_version`` or the server's answer contradicts it (a message deleted or purged,
        the stream re-created, a replica behind): the caller then reads the usual way.
        """
        known = self._index.lookup(stream_id, from_version, last)
        if known is None:
            return None
        pairs, next_version = known
        if not pairs:
            return None
        to_end = last is None or last >= next_version
        cached = await self._cached_appends(stream_id, subject, pairs, to_end)
        if cached is not None:
            return cached
        # Runs of appends close together are one request each; the server walks only the
        # few messages between them.
        runs: list[list[int]] = []
        for sequence, _ in pairs:
            if runs and sequence - runs[-1][-1] <= _RUN_GAP:
                runs[-1].append(sequence)
            else:
                runs.append([sequence])
        # A lone append is fetched by its sequence alone (0: a plain direct get).
        requests = [(run[0], len(run) if len(run) > 1 else 0) for run in runs]
        if to_end:  # the last request also brings whatever was appended since
            requests[-1] = (runs[-1][0], max(len(runs[-1]), self._config.read_batch))
        answers = await self._direct.batches(subject, requests)
        envelopes: list[tuple[Envelope, list[RecordedEvent[Event]]]] = []
        expected = pairs[0][1]
        for run, (messages, _) in zip(runs, answers, strict=True):
            if [message.sequence for message in messages[: len(run)]] != run:
                self._index.forget(stream_id)
                return None
            for message in messages:
                envelope, records = self._decode(message)
                if (
                    message.subject != subject
                    or envelope.stream_id != stream_id
                    or envelope.first_version != expected
                ):
                    self._index.forget(stream_id)
                    return None
                expected = envelope.last_version + 1
                self._index.learn(
                    stream_id, envelope.first_version, envelope.last_version, envelope.sequence
                )
                envelopes.append((envelope, records))
        if envelopes[0][0].first_version > from_version:
            self._index.forget(stream_id)
            return None
        pending = answers[-1][1] if to_end else 0
        if pending and (last is None or expected <= last):
            return envelopes, envelopes[-1][0].sequence + 1
        return envelopes, 0

    async def _cached_appends(
        self, stream_id: str, subject: str, pairs: list[tuple[int, int]], to_end: bool
    ) -> tuple[list[tuple[Envelope, list[RecordedEvent[Event]]]], int] | None:
        """Serve the known appends from the decoded cache, fetching only the last one (and
        whatever follows it), when the stream cannot lose messages.

        On a stream that denies deletes and purges (which can never be undone) and has no
        limit that removes messages, messages are only ever added: if the message at the
        last known sequence is still the very one decoded (same bytes, same server time), so
        are all before it. A re-created stream has other times; a message gone is noticed.
        """
        peek = self._decoded.peek
        found: list[tuple[Envelope, list[RecordedEvent[Event]]]] = []
        for sequence, version in pairs[:-1]:
            entry = peek(sequence)
            if (
                entry is None
                or entry[0].first_version != version
                or entry[0].stream_id != stream_id
            ):
                return None
            found.append(entry)
        if peek(pairs[-1][0]) is None or not await self._append_only():
            return None
        last_sequence = pairs[-1][0]
        batch = self._config.read_batch if to_end else 1
        messages, pending = await self._direct.one_batch(last_sequence, subject, batch)
        if not messages or messages[0].sequence != last_sequence:
            return None
        if self._decoded.get(messages[0]) is None:
            return None  # not the message decoded before: the stream was re-created
        expected = pairs[-1][1]
        for message in messages:
            envelope, records = self._decode(message)
            if envelope.stream_id != stream_id or envelope.first_version != expected:
                self._index.forget(stream_id)
                return None
            expected = envelope.last_version + 1
            self._index.learn(
                stream_id, envelope.first_version, envelope.last_version, envelope.sequence
            )
            found.append((envelope, records))
        if to_end and pending:
            return found, found[-1][0].sequence + 1
        return found, 0

    async def _append_only(self) -> bool:
        """Whether the stream's messages can only ever be added, as its configuration on the
        server says (looked up again every ``_APPEND_ONLY_RECHECK`` seconds: an operator may
        add a limit, such as a maximum age, to a running stream)."""
        now = time.monotonic()
        if now - self._append_only_checked < _APPEND_ONLY_RECHECK:
            return self._append_only_stream
        self._append_only_checked = now
        try:
            config = (await self._direct.stream_info())["config"]
        except (StoreUnavailable, StreamNotFound):
            self._append_only_stream = False
            return False
        self._append_only_stream = bool(
            config.get("deny_delete")
            and config.get("deny_purge")
            and not config.get("max_age")
            and config.get("max_msgs", -1) <= 0
            and config.get("max_msgs_per_subject", -1) <= 0
            and config.get("discard") == "new"
            and not config.get("allow_msg_ttl")
            and not config.get("allow_rollup_hdrs")
        )
        return self._append_only_stream

    def _start_sequence(self, stream_id: str, from_version: int, position_hint: int | None) -> int:
        """Where a stream's batched read starts: never before what a hint says.

        The server walks every message between the start and the first match, so starting at
        sequence 1 costs the whole store. A snapshot's position, the cached tail (for a read of
        the last versions) or the remembered first message of the stream each say where the
        wanted versions can begin; a wrong hint is detected and the read starts over from 1.
        """
        if position_hint:
            return max(sequence_of(position_hint), 1)
        tail = self._appender.tails.get(stream_id)
        if tail is not None and from_version > 1:
            version, sequence = tail
            if from_version >= version:
                return sequence
        return self._firsts.get(stream_id, 1)

    def _remember_first(self, stream_id: str, sequence: int) -> None:
        firsts = self._firsts
        firsts[stream_id] = sequence
        firsts.move_to_end(stream_id)
        if len(firsts) > _FIRST_CACHE_SIZE:
            firsts.popitem(last=False)

    async def read_all(
        self,
        *,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        event_types: Collection[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yield events in global order; see :meth:`eventtape.EventStore.read_all`.

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

        def matching(message: StoredMessage, from_position: int) -> list[RecordedEvent[Event]]:
            return self._matching(message, from_position, wanted_categories, wanted_types)

        subscription = JetStreamSubscription(
            self._nc,
            self._direct,
            self._config,
            from_position,
            subject_filter,
            matching,
            self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription

    def _filters(
        self,
        categories: Collection[str] | None,
        event_types: Collection[str | type[Event]] | None,
    ) -> tuple[str, frozenset[str] | None, frozenset[str] | None]:
        if isinstance(categories, str):
            raise InvalidArgument("categories takes a collection of names, not one string")
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
        envelope = decode_envelope(message, self._prefix)
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

    # -- verifying ----------------------------------------------------------------------

    async def chain_links(
        self, stream_id: str | None = None
    ) -> AsyncIterator[StoredLink | ChainReport]:
        """Every stored event of ``stream_id`` (or of the whole store), raw, in sequence order,
        as :func:`eventtape.verify` reads it; a message that is not a readable append shows as
        an ``unreadable`` report of the stream its subject names."""
        self._check_started()
        async for item in chain_links(self._direct, self._config, stream_id):
            yield item

    async def removed_messages(self) -> tuple[tuple[int, int], ...]:
        """Ranges of message sequences gone from the stream: deleted (the store never deletes;
        ``deny_delete`` is on by default) or purged from its start."""
        self._check_started()
        return await removed_messages(self._direct)

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's version (0 if it has no events): one direct get."""
        self._check_started()
        validate_stream_id(stream_id)
        subject = self._config.subject(category_of(stream_id), stream_id)
        version, _ = await self._appender.refresh_tail(stream_id, subject)
        return version

    async def head_position(self) -> int:
        """Return the position of the store's last event (0 if it is empty)."""
        self._check_started()
        return await self._direct.head_position(self._prefix)

    # -- Dynamic Consistency Boundaries (see _dcb.py) ------------------------------------

    async def dcb_read(
        self, query: Query, *, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> DcbReadResult:
        """Return the events matching ``query`` after ``after``; see
        :meth:`eventtape.DcbStore.dcb_read`. A batched scan of the log from ``after``."""
        self._check_started()
        return await self._dcb.read(query, after=after, limit=limit, backwards=backwards)

    async def dcb_append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        condition: AppendCondition | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """Store ``events`` atomically unless the condition fails; see
        :meth:`eventtape.DcbStore.dcb_append`. One round trip when nothing was stored since
        the condition's position; otherwise only the newer messages are read and checked."""
        self._check_started()
        return await self._dcb.append(events, condition=condition, metadata=metadata)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """End every subscription, stop reading replies, and close an owned connection."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        self._started = False
        # Closing must not fail because the server is gone: what is lost then is lost anyway.
        with contextlib.suppress(OSError, NatsError):
            if self._advisories is not None and not self._nc.is_closed:
                await self._advisories.unsubscribe()
            self._advisories = None
            await self._direct.close()
        if self._owns_connection and not self._nc.is_closed:
            with contextlib.suppress(OSError, NatsError):
                await self._nc.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("start() the JetStream store (or use connect()/open()) first")

    @property
    def nc(self) -> Client:
        """The NATS connection the store uses (for tooling beside it, e.g. a snapshot store)."""
        return self._nc
