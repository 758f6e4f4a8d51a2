"""How appends are laid out in JetStream messages, and read back.

One append is one message on the stream's subject, holding all of its events: the server
stores it atomically in one round trip, and a multi-event append costs what a single-event one
does. The body is JSON::

    {"stream": "order-12345", "version": 3, "actor": "user:789", "causation_id": null,
     "correlation_id": "...", "headers": {...},
     "events": [{"id": "<uuid>", "type": "OrderPlaced", "schema": 1, "data": {...}}, ...]}

``version`` is that of the first event; the header ``Eventtape-Last-Version`` carries the last, so
the stream's version can be read from its last message without parsing it. Events get the
message's server timestamp as ``recorded_at``, and the global position
``sequence * POSITION_STRIDE + index``: strictly increasing, contiguous within an append.
"""

from __future__ import annotations

import functools
import json
import re
from binascii import hexlify
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

import pydantic_core
from nats.aio.msg import Msg

from ..._core.chain import HashChain, StoredLink
from ..._core.errors import SerializationError
from ..._core.events import EMPTY_HEADERS, Event, Metadata, NewEvent, RecordedEvent
from ..._core.registry import EventRegistry
from ..._core.wire import LAST_VERSION_HEADER

__all__ = [
    "LAST_VERSION_HEADER",
    "MAX_EVENTS_PER_APPEND",
    "POSITION_STRIDE",
    "Envelope",
    "StoredMessage",
    "decode_envelope",
    "encode_append",
    "position_of",
    "sequence_of",
]

POSITION_STRIDE = 1000
"""Positions are ``message sequence * 1000 + index in the message``."""
MAX_EVENTS_PER_APPEND = POSITION_STRIDE
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9 _:@=+,;~!#%&'()/\[\]{}<>*.|$^?-]*")


def _dumps(value: str | None) -> str:
    """JSON for a string or None; the common plain-text case without the encoder's overhead."""
    if value is None:
        return "null"
    if _PLAIN_TEXT.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value)


_EPOCH = datetime.fromtimestamp(0, UTC)


def position_of(sequence: int, index: int) -> int:
    """Return the global position of the ``index``-th event of message ``sequence``."""
    return sequence * POSITION_STRIDE + index


def sequence_of(position: int) -> int:
    """Return the message sequence a global position lies in."""
    return position // POSITION_STRIDE


def encode_append(
    registry: EventRegistry,
    stream_id: str,
    first_version: int,
    events: list[NewEvent[Event]],
    metadata: Metadata,
    chain: HashChain | None = None,
    previous: bytes | None = None,
) -> tuple[bytes, list[str], bytes | None]:
    """Return the message body of an append, the type names of its events, and its last link.

    With a ``chain``, each event carries its link (``"link"``, hex) chained from ``previous``
    (the link of the stream's last event; ``None`` for a new or unchained stream).
    """
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValueError(
            f"an append holds at most {MAX_EVENTS_PER_APPEND} events on JetStream, "
            f"not {len(events)}; split it"
        )
    names = []
    parts = [
        b'{"stream":',
        _dumps(stream_id).encode(),
        b',"version":',
        str(first_version).encode(),
        b',"actor":',
        _dumps(metadata.actor).encode(),
        b',"causation_id":',
        _dumps(metadata.causation_id).encode(),
        b',"correlation_id":',
        _dumps(metadata.correlation_id).encode(),
        b',"headers":',
        json.dumps(dict(metadata.headers)).encode() if metadata.headers else b"{}",
        b',"events":[',
    ]
    shared = (
        chain.append_part(
            stream_id,
            metadata.actor,
            metadata.causation_id,
            metadata.correlation_id,
            metadata.headers,
        )
        if chain is not None
        else b""
    )
    link = previous
    for index, item in enumerate(events):
        name, schema, data = registry.encode(item.event)
        names.append(name)
        event_id = str(item.event_id)
        parts += (
            b',{"id":"' if index else b'{"id":"',
            event_id.encode(),
            _type_and_schema(name, schema),
            data,
        )
        if chain is None:
            parts.append(b"}")
        else:
            link = chain.link(
                link, first_version + index, item.event_id, name, schema, shared, data
            )
            parts += (b',"link":"', hexlify(link), b'"}')
    parts.append(b"]}")
    return b"".join(parts), names, link if chain is not None else None


@functools.lru_cache(maxsize=4096)
def _type_and_schema(name: str, schema: int) -> bytes:
    return f'","type":{json.dumps(name)},"schema":{schema},"data":'.encode()


_MAX_U32 = 2**32 - 1  # a link holds the schema version in 4 bytes, the version in 8
_MAX_VERSION = 2**63 - MAX_EVENTS_PER_APPEND  # far beyond any real stream, and still 8 bytes


def _text_or_none(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} is {type(value).__name__}, not text")
    return value


class Envelope:
    """One stored append: its parsed body and where it is."""

    __slots__ = (
        "body",
        "first_version",
        "last_version",
        "sequence",
        "stream_id",
        "subject",
        "timestamp",
    )

    def __init__(self, sequence: int, subject: str, timestamp: datetime, body: dict[str, Any]):
        self.sequence = sequence
        self.subject = subject
        self.timestamp = timestamp
        self.body = body
        self.stream_id: str = body["stream"]
        #: The versions of the append's first and last events.
        self.first_version: int = int(body["version"])
        self.last_version: int = self.first_version + len(body["events"]) - 1

    def slim(self) -> Envelope:
        """A copy without most of the parsed body, for keeping beside decoded records: where
        it is, which versions it holds and its last event's chain link (``body["events"]``
        holds only that), at a fraction of the memory. Not for :meth:`records`,
        :meth:`same_events` or :attr:`event_ids`."""
        slim = Envelope.__new__(Envelope)
        slim.sequence, slim.subject, slim.timestamp = self.sequence, self.subject, self.timestamp
        slim.stream_id = self.stream_id
        slim.first_version, slim.last_version = self.first_version, self.last_version
        last = self.body["events"][-1]
        slim.body = {
            "stream": self.stream_id,
            "version": self.first_version,
            "events": [{"link": last["link"]} if "link" in last else {}],
        }
        return slim

    @property
    def event_ids(self) -> list[str]:
        """The ids of the append's events, in order."""
        return [event["id"] for event in self.body["events"]]

    def same_events(self, registry: EventRegistry, events: list[NewEvent[Event]]) -> bool:
        """Whether this append stored exactly ``events`` (ids, types and data)."""
        stored = self.body["events"]
        if len(stored) != len(events):
            return False
        for item, event in zip(events, stored, strict=True):
            name, schema, data = registry.encode(item.event)
            if (event["id"], event["type"], event["schema"]) != (str(item.event_id), name, schema):
                return False
            if pydantic_core.from_json(data) != event["data"]:
                return False
        return True

    def links(self) -> list[StoredLink]:
        """The append's events as a chain verifier reads them (raw, without the registry).

        Raises:
            SerializationError: If an event lacks a field a link covers.
        """
        body = self.body
        stream_id = self.stream_id
        base = self.sequence * POSITION_STRIDE
        version = self.first_version
        try:
            # Strict types, as the store writes them: a forged message may hold anything, and a
            # lenient parse would either crash the verifier (``len(5)``, ``(-1).to_bytes``) or
            # pass a forgery as genuine (a schema ``"1"`` or ``1.5`` read as the linked ``1``).
            headers = body.get("headers") or {}
            if not isinstance(headers, dict) or not all(
                isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
            ):
                raise TypeError("headers are not a mapping of text to text")
            actor, causation, correlation = (
                _text_or_none(body, "actor"),
                _text_or_none(body, "causation_id"),
                _text_or_none(body, "correlation_id"),
            )
        except (TypeError, ValueError) as error:
            raise SerializationError(
                f"corrupt append at stream {stream_id!r}, position {base}: {error}"
            ) from error
        links = []
        for index, stored in enumerate(body["events"]):
            try:
                link, event_id, type_name, schema = (
                    stored.get("link"),
                    stored["id"],
                    stored["type"],
                    stored["schema"],
                )
                if not (link is None or (isinstance(link, str) and link.isascii())):
                    raise TypeError(f"link is not ASCII text: {link!r:.80}")
                if not isinstance(event_id, str) or not isinstance(type_name, str):
                    raise TypeError("id or type is not text")
                if type(schema) is not int or not 0 <= schema <= _MAX_U32:
                    raise TypeError(f"schema {schema!r:.40} is not a 32-bit unsigned integer")
                links.append(
                    StoredLink(
                        stream_id,
                        version + index,
                        base + index,
                        UUID(event_id),
                        type_name,
                        schema,
                        actor,
                        causation,
                        correlation,
                        headers,
                        pydantic_core.to_json(stored["data"]),
                        link,
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                raise SerializationError(
                    f"corrupt event at stream {stream_id!r}, position {base + index}: {error!r}"
                ) from error
        return links

    def records(
        self, registry: EventRegistry, first_index: int = 0, last_index: int | None = None
    ) -> list[RecordedEvent[Event]]:
        """Decode the append's events from ``first_index`` to ``last_index`` (inclusive),
        upcasting old ones; the others are not decoded at all."""
        body = self.body
        stream_id = self.stream_id
        headers: Mapping[str, str] = (
            MappingProxyType(body["headers"]) if body.get("headers") else EMPTY_HEADERS
        )
        actor, causation, correlation = (
            body.get("actor"),
            body.get("causation_id"),
            body.get("correlation_id"),
        )
        base = self.sequence * POSITION_STRIDE
        version = self.first_version
        records = []
        stored_events = body["events"]
        end = len(stored_events) if last_index is None else min(last_index + 1, len(stored_events))
        for index in range(max(first_index, 0), end):
            stored = stored_events[index]
            position = base + index
            try:
                event = registry.decode(
                    stored["type"],
                    stored["schema"],
                    stored["data"],
                    stream_id=stream_id,
                    position=position,
                )
                event_id = UUID(stored["id"])
            except (KeyError, TypeError, ValueError) as error:
                raise SerializationError(
                    f"corrupt event at stream {stream_id!r}, position {position}: {error!r}"
                ) from error
            records.append(
                RecordedEvent(
                    stream_id,
                    version + index,
                    position,
                    event_id,
                    stored["type"],
                    self.timestamp,
                    event,
                    actor,
                    causation,
                    correlation,
                    headers,
                )
            )
        return records


class StoredMessage:
    """A message as a direct get returns it."""

    __slots__ = ("_block", "_headers", "data", "sequence", "subject", "timestamp")

    def __init__(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self.sequence = int(headers["Nats-Sequence"])
        self.subject: str = headers["Nats-Subject"]
        self.timestamp: str | None = headers.get("Nats-Time-Stamp")
        self._headers: dict[str, str] | None = headers
        self._block: bytes = b""
        self.data: bytes = msg.data

    @classmethod
    def raw(
        cls, sequence: int, subject: str, timestamp: str | None, block: bytes, data: bytes
    ) -> StoredMessage:
        """Build one from a reply read off the wire (see ``_batch``): the header block is
        kept raw and parsed only if :attr:`headers` is asked for."""
        message = cls.__new__(cls)
        message.sequence = sequence
        message.subject = subject
        message.timestamp = timestamp
        message._headers = None
        message._block = block
        message.data = data
        return message

    @property
    def headers(self) -> dict[str, str]:
        """Every header of the message."""
        if self._headers is None:
            headers: dict[str, str] = {}
            for line in self._block.decode("utf-8", "replace").split("\r\n")[1:]:
                if line:
                    key, _, value = line.partition(":")
                    headers[key] = value.strip()
            self._headers = headers
        return self._headers


def decode_envelope(message: StoredMessage, expected_prefix: str) -> Envelope:
    """Parse a stored message into an :class:`Envelope`, or explain why it is not one.

    Raises:
        SerializationError: For anything that is not an eventtape append (a foreign or corrupt
            message), naming the subject and position.
    """
    sequence, subject, timestamp = message.sequence, message.subject, message.timestamp
    data = message.data
    where = f"subject {subject!r}, position {position_of(sequence, 0)}"
    try:
        body = pydantic_core.from_json(data)
    except ValueError as error:
        raise SerializationError(f"message at {where} is not eventtape JSON: {error}") from error
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("stream"), str)
        # A version the store could have written: a forged 0, -5, true or 2**70 would make the
        # next append's version nonsense (and its link uncomputable).
        or type(body.get("version")) is not int
        or not 1 <= body["version"] <= _MAX_VERSION
        or not isinstance(body.get("events"), list)
        or not body["events"]
        or not all(isinstance(event, dict) for event in body["events"])
    ):
        raise SerializationError(f"message at {where} is not an eventtape append")
    if not subject.startswith(expected_prefix) or not subject.endswith("." + body["stream"]):
        raise SerializationError(
            f"message at {where} claims stream {body['stream']!r}, which does not match its subject"
        )
    try:
        when = datetime.fromisoformat(timestamp) if timestamp else _EPOCH
    except ValueError as error:
        raise SerializationError(f"message at {where} has a bad timestamp {timestamp!r}") from error
    return Envelope(sequence, subject, when, body)
