"""Dynamic Consistency Boundaries on JetStream (see docs/decisions.md and the DCB guide).

A DCB append is one message, like a stream append, on the subject of its own one-append stream
``dcb-<first event id>``, with its events' tags in a header. Its condition is checked with the
stream-level ``Nats-Expected-Last-Sequence``: the server stores the message only if the last
message of the whole stream is still the one the decision read up to. When something else was
stored meanwhile, the server says what the last sequence now is; only those newer messages are
read and matched against the query: a match fails the append, no match retries it expecting
the new last sequence. So the server orders every conditional append against everything stored
before it (linearizable, whatever the query), one round trip when nothing was stored meanwhile.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import re
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..._core.chain import HashChain
from ..._core.dcb import (
    AppendCondition,
    DcbReadResult,
    Query,
    SequencedEvent,
    TaggedEvent,
    dcb_stream_id,
    tags_of,
    to_tagged,
)
from ..._core.errors import (
    AppendConditionFailed,
    AppendRefused,
    DuplicateEventId,
    EventtapeError,
    SerializationError,
    StoreUnavailable,
)
from ..._core.events import EMPTY_METADATA, Event, Metadata, NewEvent
from ..._core.registry import EventRegistry
from ..._core.wire import DCB_CATEGORY, DCB_TAGS_HEADER, STREAM_TAG_PREFIX
from .._common import validate_range
from ._codec import (
    LAST_VERSION_HEADER,
    MAX_EVENTS_PER_APPEND,
    POSITION_STRIDE,
    Envelope,
    StoredMessage,
    decode_envelope,
    encode_append,
    position_of,
    sequence_of,
)
from ._config import JetStreamConfig
from ._direct import DirectGet

__all__ = ["DcbJetStream"]

_WRONG_LAST_SEQUENCE = 10071
_DUPLICATE_IN_PROCESS = 10158  # a retry overlapping its original, on a replicated stream
_ACTUAL_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")
_END = POSITION_STRIDE - 1
_CACHE_SIZE = 100_000


class DcbJetStream:
    """The DCB read and conditional append of :class:`JetStreamEventStore`."""

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
        self._index = TagIndex()
        self._append_lock = asyncio.Lock()

    def reset(self) -> None:
        """Forget the tag index (the JetStream stream was deleted, re-created or restored):
        the next read or conditional append builds it again from the log. Without this, an
        index that had seen sequences 1..N of the old stream would skip them in the new one,
        and a condition would pass over events it never looked at."""
        self._index = TagIndex()

    # -- reading -------------------------------------------------------------------------

    def _tagged_records(self, message: StoredMessage) -> list[SequencedEvent]:
        envelope = decode_envelope(message, self._prefix)
        given = _given_tags(message, envelope)
        stream_tag = STREAM_TAG_PREFIX + envelope.stream_id
        return [
            SequencedEvent(record, given[index] | tags_of(record.event) | {stream_tag})
            for index, record in enumerate(envelope.records(self._registry))
        ]

    async def read(
        self, query: Query, *, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> DcbReadResult:
        """See :meth:`eventtape.DcbStore.dcb_read`.

        A query whose every item names tags or types is answered from the store's tag index,
        after the index has read the messages stored since it last looked (and only those); a
        query with an item that names neither scans the log from ``after``. The consistency
        point is the end of the last message looked at (``sequence * 1000 + 999``), or
        ``after`` when nothing newer was stored.
        """
        if not isinstance(query, Query):
            raise TypeError(f"dcb_read takes a Query, not {type(query).__name__}")
        validate_range("after", after, 0)
        validate_range("limit", limit, 0)
        if query.is_all or any(not item.tags and not item.types for item in query.items):
            return await self._scan(query, after, limit, backwards)
        index = self._index
        await self._refresh()
        # No await from here to the end of the snapshot: the index cannot move under it.
        positions = index.candidates(query, after)
        point = max(after, position_of(index.upto, _END)) if index.upto else after
        if backwards:
            positions.reverse()
        found: list[SequencedEvent] = []
        for position in positions:
            item = await self._event_at(position)
            if query.matches(item.event_type, item.tags):
                found.append(item)
                if limit is not None and len(found) >= limit:
                    if not backwards:
                        point = max(after, position_of(sequence_of(position), _END))
                    break
        return DcbReadResult(tuple(found), point)

    async def _catch_up(self) -> None:
        """Index the messages stored since the index last looked (call with its lock held)."""
        index = self._index
        async for message in self._direct.batch(
            index.upto + 1, self._config.filter_subject(), batch=self._config.read_batch
        ):
            for item in self._tagged_records(message):
                index.add(item)
            index.upto = message.sequence

    async def _event_at(self, position: int) -> SequencedEvent:
        cached = self._index.cached(position)
        if cached is not None:
            return cached
        message = await self._direct.by_sequence(sequence_of(position))
        if message is None:
            raise EventtapeError(f"event at position {position} is gone from the stream")
        found = None
        for item in self._tagged_records(message):
            self._index.remember(item)
            if item.position == position:
                found = item
        if found is None:
            raise EventtapeError(f"no event at position {position}")
        return found

    async def _scan(
        self, query: Query, after: int, limit: int | None, backwards: bool
    ) -> DcbReadResult:
        found: list[SequencedEvent] = []
        point = after
        async for message in self._direct.batch(
            _first_sequence(after), self._config.filter_subject(), batch=self._config.read_batch
        ):
            point = max(point, position_of(message.sequence, _END))
            for item in self._tagged_records(message):
                if item.position > after and query.matches(item.event_type, item.tags):
                    found.append(item)
            if limit is not None and not backwards and len(found) >= limit:
                del found[limit:]
                break
        if backwards:
            found.reverse()
            if limit is not None:
                del found[limit:]
        return DcbReadResult(tuple(found), point)

    # -- appending -----------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        condition: AppendCondition | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """See :meth:`eventtape.DcbStore.dcb_append`."""
        items = to_tagged(events)
        if condition is not None and not isinstance(condition, AppendCondition):
            raise TypeError("condition takes an AppendCondition")
        if len(items) > MAX_EVENTS_PER_APPEND:
            raise ValueError(
                f"an append holds at most {MAX_EVENTS_PER_APPEND} events on JetStream, "
                f"not {len(items)}; split it"
            )
        new = [item.as_new_event() for item in items]
        stream_id = dcb_stream_id(items[0].event_id)
        subject = self._config.subject(DCB_CATEGORY, stream_id)
        body, _, _ = encode_append(
            self._registry, stream_id, 1, new, metadata or EMPTY_METADATA, self._chain
        )
        headers = {
            "Nats-Msg-Id": str(items[0].event_id),
            # A one-append stream: a second message on it can only be a retry of this append.
            "Nats-Expected-Last-Subject-Sequence": "0",
            LAST_VERSION_HEADER: str(len(items)),
            DCB_TAGS_HEADER: json.dumps([sorted(item.tags) for item in items]),
        }
        if condition is None:
            ack = await self._publish(subject, body, headers)
            return await self._outcome(ack, stream_id, subject, new)
        query, after = condition.fail_if_events_match, condition.after
        checked = 0 if after is None else sequence_of(after)
        if after is not None and after % POSITION_STRIDE != _END and checked > 0:
            # `after` lies inside a message: events later in that message count as newer.
            checked -= 1
        indexed = not (query.is_all or any(not i.tags and not i.types for i in query.items))
        # One conditional append at a time from this store: appends from tasks of one process
        # would otherwise make each other fail the expected sequence and retry; in turn, each
        # starts from what the index already knows, checked here without a round trip.
        async with self._append_lock:
            index = self._index
            if indexed and index.upto > checked:
                checked = await self._recheck(
                    query, after, checked, index.upto, stream_id, subject, new, refresh=False
                )
                if checked < 0:
                    return -checked
            while True:
                headers["Nats-Expected-Last-Sequence"] = str(checked)
                ack = await self._publish(subject, body, headers)
                error = ack.get("error")
                if error is None:
                    position = await self._outcome(ack, stream_id, subject, new)
                    if not ack.get("duplicate"):
                        await self._index_own(int(ack["seq"]), stream_id, items)
                    return position
                if error.get("err_code") == _DUPLICATE_IN_PROCESS:
                    # Replicated streams: an earlier try of this very append is being stored;
                    # once it is, the same publish is answered "duplicate".
                    await asyncio.sleep(0.01)
                    continue
                if error.get("err_code") != _WRONG_LAST_SEQUENCE:
                    raise AppendRefused("dcb", f"JetStream answered {error}")
                match = _ACTUAL_SEQUENCE.search(str(error.get("description", "")))
                if match is None:
                    raise AppendRefused("dcb", f"JetStream answered {error}")
                actual = int(match.group(1))
                if actual <= checked:
                    # Nothing newer to look at: the subject check failed, so an earlier try
                    # of this very append is stored.
                    return await self._earlier_try(stream_id, subject, new)
                checked = await self._recheck(
                    query, after, checked, actual, stream_id, subject, new
                )
                if checked < 0:  # an earlier try of this append was found stored
                    return -checked

    async def _index_own(self, sequence: int, stream_id: str, items: list[TaggedEvent]) -> None:
        """Add an append this store just stored to the index, if it is the next message."""
        index = self._index
        async with index.lock:
            if index.upto != sequence - 1:
                return  # others stored in between: the next catch-up reads them all
            stream_tag = STREAM_TAG_PREFIX + stream_id
            for offset, item in enumerate(items):
                index.add_postings(
                    position_of(sequence, offset),
                    self._registry.name_of(type(item.event)),
                    item.tags | {stream_tag},
                )
            index.upto = sequence

    async def _recheck(
        self,
        query: Query,
        after: int | None,
        checked: int,
        actual: int,
        stream_id: str,
        subject: str,
        new: list[NewEvent[Event]],
        *,
        refresh: bool = True,
    ) -> int:
        """Match the messages stored after sequence ``checked`` (up to at least ``actual``)
        against the query; return the sequence checked up to now, or ``-position`` of an
        earlier try of this append found stored.

        Raises:
            AppendConditionFailed: If one matches.
        """
        floor = max(after or 0, position_of(checked, _END) if checked else 0)
        if query.is_all or any(not item.tags and not item.types for item in query.items):
            async for message in self._direct.batch(
                checked + 1, self._config.filter_subject(), batch=self._config.read_batch
            ):
                if message.sequence > actual:
                    break
                if message.subject == subject:
                    return -(await self._earlier_try(stream_id, subject, new))
                for item in self._tagged_records(message):
                    if item.position > floor and query.matches(item.event_type, item.tags):
                        raise AppendConditionFailed(query, after, item.position)
            return actual
        # From the tag index, brought up to date once for every append waiting on it.
        if refresh:
            await self._refresh(actual)
        index = self._index
        upto = index.upto
        if index.by_tag.get(STREAM_TAG_PREFIX + stream_id):
            return -(await self._earlier_try(stream_id, subject, new))
        for position in index.candidates(query, floor):
            if sequence_of(position) > upto:
                break
            item = await self._event_at(position)
            if query.matches(item.event_type, item.tags):
                raise AppendConditionFailed(query, after, item.position)
        return upto

    async def _refresh(self, at_least: int = 0) -> None:
        """Bring the index up to the stream's end, sharing one catch-up among all callers
        waiting at the same time: a catch-up that began after this call serves it."""
        index = self._index
        ticket = index.began
        async with index.lock:
            if index.finished > ticket and index.upto >= at_least:
                return
            index.began += 1
            mine = index.began
            await self._catch_up()
            index.finished = mine

    async def _outcome(
        self, ack: dict[str, Any], stream_id: str, subject: str, new: list[NewEvent[Event]]
    ) -> int:
        error = ack.get("error")
        if error is not None:
            if error.get("err_code") == _WRONG_LAST_SEQUENCE:
                return await self._earlier_try(stream_id, subject, new)
            raise AppendRefused("dcb", f"JetStream answered {error}")
        if ack.get("duplicate"):
            return await self._earlier_try(stream_id, subject, new)
        return position_of(int(ack["seq"]), len(new) - 1)

    async def _earlier_try(self, stream_id: str, subject: str, new: list[NewEvent[Event]]) -> int:
        """The position of an earlier try of this append, checked to hold the same events."""
        message = await self._direct.last_for_subject(subject)
        if message is None:
            raise EventtapeError(f"the server reported {stream_id!r} as stored; it is not")
        envelope = decode_envelope(message, self._prefix)
        if not envelope.same_events(self._registry, new):
            raise DuplicateEventId(
                stream_id, new[0].event_id, "stored with other content or other events"
            )
        return position_of(envelope.sequence, len(new) - 1)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        try:
            reply = await self._nc.request(
                subject, body, timeout=self._config.request_timeout, headers=headers
            )
        except (NatsTimeout, ConnectionClosedError) as error:
            raise StoreUnavailable(
                f"no acknowledgement for the DCB append ({error!r}); it may or may not be "
                "stored: retrying the same events is safe"
            ) from error
        except NoRespondersError as error:
            raise StoreUnavailable("JetStream is not answering: nothing was appended") from error
        except MaxPayloadError as error:
            raise SerializationError(
                f"the DCB append is {len(body):,} bytes, more than the server takes in one "
                f"message ({self._nc.max_payload:,}): nothing was appended; split it"
            ) from error
        ack: dict[str, Any] = json.loads(reply.data)
        return ack


class TagIndex:
    """Which positions carry which tag and type: built from the log on first use, then kept
    current by reading only the messages stored since; with recently seen events decoded.

    Memory: one int per (event, tag) and per event, plus up to ``cache_size`` decoded events.
    """

    def __init__(self, cache_size: int = _CACHE_SIZE) -> None:
        self.lock = asyncio.Lock()
        self.upto = 0  # the last message sequence indexed
        self.began = 0  # catch-ups begun
        self.finished = 0  # the number of the last catch-up finished
        self.by_tag: dict[str, list[int]] = {}
        self.by_type: dict[str, list[int]] = {}
        self._cache: collections.OrderedDict[int, SequencedEvent] = collections.OrderedDict()
        self._cache_size = cache_size

    def add(self, item: SequencedEvent) -> None:
        self.add_postings(item.position, item.event_type, item.tags)
        self.remember(item)

    def add_postings(self, position: int, event_type: str, tags: frozenset[str]) -> None:
        for tag in tags:
            self.by_tag.setdefault(tag, []).append(position)
        self.by_type.setdefault(event_type, []).append(position)

    def remember(self, item: SequencedEvent) -> None:
        cache = self._cache
        cache[item.position] = item
        cache.move_to_end(item.position)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def cached(self, position: int) -> SequencedEvent | None:
        return self._cache.get(position)

    def candidates(self, query: Query, after: int) -> list[int]:
        """Positions after ``after`` that may match (every item names tags or types)."""
        chosen: set[int] = set()
        for item in query.items:
            if item.tags:
                # The rarest tag's postings: every match carries it.
                lists = [self.by_tag.get(tag, []) for tag in item.tags]
                postings = min(lists, key=len)
                chosen.update(_after(postings, after))
            else:
                for name in item.types:
                    chosen.update(_after(self.by_type.get(name, []), after))
        return sorted(chosen)


def _after(postings: list[int], after: int) -> list[int]:
    return postings[bisect.bisect_right(postings, after) :]


def _first_sequence(after: int) -> int:
    """The first message that can hold an event after position ``after``."""
    if after % POSITION_STRIDE == _END:
        return sequence_of(after) + 1
    return max(sequence_of(after), 1)


def _given_tags(message: StoredMessage, envelope: Envelope) -> list[frozenset[str]]:
    count = len(envelope.body["events"])
    header = message.headers.get(DCB_TAGS_HEADER)
    if header is None:
        return [frozenset()] * count
    try:
        tags = json.loads(header)
        result = [frozenset(str(tag) for tag in item) for item in tags]
    except (TypeError, ValueError) as error:
        raise SerializationError(
            f"bad tags header at position {position_of(message.sequence, 0)}: {error}"
        ) from error
    if len(result) != count:
        raise SerializationError(
            f"tags header at position {position_of(message.sequence, 0)} does not match its events"
        )
    return result
