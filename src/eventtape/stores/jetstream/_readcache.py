"""What a store remembers to read faster: decoded appends, and where each stream's appends are.

Both are per process, bounded in memory, and only ever *hints*: whatever they say is checked
against what the server returns, and a read falls back to the plain path when they are wrong.

* :class:`DecodedCache` keeps the decoded events of recently read appends by message sequence,
  with the exact body bytes and server timestamp they were decoded from. A read that gets the
  same bytes back for the same sequence reuses them instead of parsing JSON and validating
  every event again (events and recorded events are immutable). The bytes still come from the
  server on every read: a deleted, purged or re-created message is never served from here.
* :class:`SequenceIndex` keeps, per stream, the sequence of each of its appends (learned from
  this process's appends and reads), so a load can ask for exactly those messages instead of
  letting the server walk every message of the store between them.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import decimal
import enum
import functools
import types
import typing
import uuid
from array import array
from typing import Any

from pydantic import BaseModel

from ..._core.events import Event, RecordedEvent
from ..._core.registry import EventRegistry
from ._codec import Envelope, StoredMessage

__all__ = ["DecodedCache", "SequenceIndex"]

# Body bytes the decoded cache may hold per event of its bound. The bound counts events, but
# one event may be a megabyte (up to the server's max_payload): without a byte budget as well,
# the default 10,000 events could pin gigabytes. Appends larger than the budget are not kept.
BYTES_PER_EVENT = 4096


# Values a caller cannot change in place, so one decoded event may be handed to every load.
_ATOMS = (
    str,
    int,
    float,
    bytes,
    type(None),
    decimal.Decimal,
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    enum.Enum,
)


def _immutable_type(annotation: Any) -> bool:
    """Whether every value a field annotated so can hold is deeply immutable (``False`` when
    unsure: ``Any``, a list, a forward reference ...)."""
    if annotation is None or (isinstance(annotation, type) and issubclass(annotation, _ATOMS)):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _immutable_class(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(arg, _ATOMS) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _immutable_type(typing.get_args(annotation)[0])
    if origin in (tuple, frozenset, typing.Union, types.UnionType):
        return all(arg is Ellipsis or _immutable_type(arg) for arg in typing.get_args(annotation))
    return False


@functools.cache
def _immutable_class(model: type[BaseModel]) -> bool:
    """Whether every instance of ``model`` is deeply immutable, by its field annotations
    (worked out once per class: a value check per event would cost a few microseconds)."""
    if not model.model_config.get("frozen"):
        return False
    return all(_immutable_type(field.annotation) for field in model.model_fields.values())


def _immutable(value: Any) -> bool:
    """Whether ``value`` is deeply immutable (frozen models, tuples and frozensets of atoms)."""
    if isinstance(value, BaseModel) and _immutable_class(type(value)):
        return True  # the usual case: known from the class alone
    if isinstance(value, _ATOMS):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_immutable(item) for item in value)
    if isinstance(value, BaseModel):
        return bool(value.model_config.get("frozen")) and all(
            _immutable(item) for item in value.__dict__.values()
        )
    return False


class DecodedCache:
    """Decoded appends by message sequence, at most ``max_events`` events in all (LRU).

    Args:
        registry: The registry events are decoded with; registering a type or an upcaster
            later empties the cache (the same bytes may then decode differently).
        max_events: The bound; 0 turns the cache off.
    """

    __slots__ = ("_bytes", "_entries", "_events", "_fingerprint", "_registry", "max_events")

    def __init__(self, registry: EventRegistry, max_events: int) -> None:
        self._registry = registry
        self.max_events = max_events
        self._entries: collections.OrderedDict[
            int, tuple[bytes, str | None, str, Envelope, list[RecordedEvent[Event]]]
        ] = collections.OrderedDict()
        self._events = 0
        self._bytes = 0  # body bytes held, bounded by max_events * BYTES_PER_EVENT
        self._fingerprint = self._registry_state()

    def _registry_state(self) -> tuple[int, int]:
        registry = self._registry
        return len(registry._by_name), len(registry._upcasters)

    def get(self, message: StoredMessage) -> tuple[Envelope, list[RecordedEvent[Event]]] | None:
        """The decoded append, if this very message (same bytes, time, subject) was seen."""
        entry = self._entries.get(message.sequence)
        if entry is None:
            return None
        data, timestamp, subject, envelope, records = entry
        if data != message.data or timestamp != message.timestamp or subject != message.subject:
            return None
        self._entries.move_to_end(message.sequence)
        return envelope, records

    def peek(self, sequence: int) -> tuple[Envelope, list[RecordedEvent[Event]]] | None:
        """The decoded append once read at ``sequence``, unchecked (see ``_cached_appends``)."""
        entry = self._entries.get(sequence)
        if entry is None:
            return None
        self._entries.move_to_end(sequence)
        return entry[3], entry[4]

    def clear(self) -> None:
        """Forget everything (the stream was deleted, re-created, updated or restored)."""
        self._entries.clear()
        self._events = 0
        self._bytes = 0

    def check_registry(self) -> None:
        """Empty the cache if the registry gained types or upcasters since it was filled."""
        state = self._registry_state()
        if state != self._fingerprint:
            self._entries.clear()
            self._events = 0
            self._bytes = 0
            self._fingerprint = state

    def put(
        self, message: StoredMessage, envelope: Envelope, records: list[RecordedEvent[Event]]
    ) -> None:
        """Remember every decoded event of one append (``records`` holds all of them)."""
        budget = self.max_events * BYTES_PER_EVENT
        if len(records) > self.max_events or len(message.data) > budget:
            return
        # An event with a list, dict or set inside (frozen events still allow them) could be
        # changed in place by one caller and the next load would return the change: such
        # appends are decoded afresh on every read instead.
        if not all(_immutable(record.event) for record in records):
            return
        entries = self._entries
        previous = entries.pop(message.sequence, None)
        if previous is not None:
            self._events -= len(previous[4])
            self._bytes -= len(previous[0])
        entries[message.sequence] = (
            message.data,
            message.timestamp,
            message.subject,
            envelope.slim(),
            records,
        )
        self._events += len(records)
        self._bytes += len(message.data)
        while self._events > self.max_events or self._bytes > budget:
            _, evicted = entries.popitem(last=False)
            self._events -= len(evicted[4])
            self._bytes -= len(evicted[0])

    def __len__(self) -> int:
        return len(self._entries)


class _Appends:
    """One stream's appends from a first known version on, without gaps: ``versions[i]`` is
    the first version of the append stored at ``sequences[i]``; ``next_version`` follows the
    last one."""

    __slots__ = ("next_version", "sequences", "versions")

    def __init__(self, first_version: int, last_version: int, sequence: int) -> None:
        self.versions = array("q", (first_version,))
        self.sequences = array("q", (sequence,))
        self.next_version = last_version + 1


class SequenceIndex:
    """Stream id -> the sequences of its appends, at most ``max_entries`` appends in all.

    Only contiguous runs of versions are kept: an append that does not follow the last one
    known (another process appended in between) is not recorded until a read fills the gap.
    Least recently used streams are forgotten first.
    """

    __slots__ = ("_entries", "_streams", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._streams: collections.OrderedDict[str, _Appends] = collections.OrderedDict()
        self._entries = 0

    def learn(self, stream_id: str, first_version: int, last_version: int, sequence: int) -> None:
        """Record that the append of versions ``first_version..last_version`` is at
        ``sequence``."""
        if self.max_entries <= 0:
            return
        known = self._streams.get(stream_id)
        if known is None or (first_version == 1 and known.versions[0] != 1):
            if known is not None:
                self._entries -= len(known.versions)
            self._streams[stream_id] = _Appends(first_version, last_version, sequence)
            self._entries += 1
        elif first_version == known.next_version:
            if sequence <= known.sequences[-1]:  # not after the last one: the store changed
                self.forget(stream_id)
                return
            known.versions.append(first_version)
            known.sequences.append(sequence)
            known.next_version = last_version + 1
            self._entries += 1
        elif first_version < known.next_version:
            at = bisect.bisect_right(known.versions, first_version) - 1
            if at < 0:
                return
            if known.versions[at] != first_version or known.sequences[at] != sequence:
                self.forget(stream_id)  # it contradicts what was learned: start over
                return
        else:
            return  # a gap: keep what is known, a read will fill it
        self._streams.move_to_end(stream_id)
        while self._entries > self.max_entries and self._streams:
            _, evicted = self._streams.popitem(last=False)
            self._entries -= len(evicted.versions)

    def clear(self) -> None:
        """Forget every stream."""
        self._streams.clear()
        self._entries = 0

    def forget(self, stream_id: str) -> None:
        """Drop what is known of a stream (it turned out wrong)."""
        known = self._streams.pop(stream_id, None)
        if known is not None:
            self._entries -= len(known.versions)

    def lookup(
        self, stream_id: str, from_version: int, last_version: int | None
    ) -> tuple[list[tuple[int, int]], int] | None:
        """The known appends holding ``from_version`` on (up to ``last_version``), as
        ``(sequence, first_version)`` pairs, and the version after the last one known; or
        ``None`` when ``from_version`` is not covered."""
        known = self._streams.get(stream_id)
        if known is None or not known.versions[0] <= from_version < known.next_version:
            return None
        self._streams.move_to_end(stream_id)
        start = bisect.bisect_right(known.versions, from_version) - 1
        end = len(known.versions)
        if last_version is not None:
            end = bisect.bisect_right(known.versions, last_version)
        pairs = list(zip(known.sequences[start:end], known.versions[start:end], strict=True))
        return pairs, known.next_version

    def __len__(self) -> int:
        return self._entries
