"""Settings of the JetStream event store, in one small object."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from ..._core.errors import InvalidArgument
from ..._core.wire import DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, STORED_PREFIX

__all__ = ["JetStreamConfig"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclasses.dataclass(frozen=True, slots=True)
class JetStreamConfig:
    """How the JetStream event store lays out and reaches its stream.

    Attributes:
        stream: The JetStream stream holding every event.
        subject_prefix: Dot-separated tokens before ``<category>.<stream id>`` in each subject.
        replicas: Copies of the stream: 1 on a single server, 3 on a 3-node cluster (survives
            the loss of one node).
        storage: ``"file"`` (durable) or ``"memory"`` (lost when the server stops).
        duplicate_window: Seconds during which the server recognises a re-sent append by its
            first event id, whatever expected version it carries.
        max_bytes: Stream size limit in bytes (-1: none). When full, appends are refused
            (``discard: new``): events are never dropped to make room.
        deny_delete: Refuse deleting single events through the JetStream API.
        deny_purge: Refuse purging the stream.
        request_timeout: Seconds to wait for any server answer.
        read_batch: Messages asked for per batched direct get.
        poll_interval: Seconds a subscription waits before checking the stream even without
            a wake-up (a safety net; appends wake it at once).
        max_append_attempts: Tries for an append that expects ``ANY`` or ``STREAM_EXISTS``
            when others keep appending to the same stream in between.
        create_stream: Create the stream when it does not exist. Turn it off once a deployment
            holds events: a stream gone after a power loss or a mistaken delete is then an
            error (:class:`eventtape.StoreConfigurationError`) instead of an empty stream that
            everything carries on over.
        read_cache_events: Decoded events this store keeps, by message, so a stream read again
            is not decoded again (0: none). The messages are still fetched on every read and
            an entry is used only for the very bytes it was decoded from. It also holds at
            most 4 KB of message bytes per event in all (40 MB by default): appends of large
            events are evicted sooner, or not kept.
        sequence_index_size: Appends whose message sequence this store remembers, per stream
            it appended to or read (0: none), so a load fetches exactly those messages instead
            of the server walking the whole store between them. 16 bytes each.
        stored_prefix: Where the server republishes the headers of every stored message
            (default ``_eventtape_stored.<stream>``): subscriptions wake on these, which are sent
            only
            once a message is stored. Must not overlap ``subject_prefix``.
    """

    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    duplicate_window: float = 120.0
    max_bytes: int = -1
    deny_delete: bool = True
    deny_purge: bool = True
    request_timeout: float = 5.0
    read_batch: int = 256
    poll_interval: float = 1.0
    max_append_attempts: int = 50
    stored_prefix: str | None = None
    create_stream: bool = True
    read_cache_events: int = 10_000
    sequence_index_size: int = 1_000_000

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.stream):
            raise InvalidArgument(f"stream name {self.stream!r} must match {_TOKEN.pattern}")
        tokens = self.subject_prefix.split(".")
        if not all(_TOKEN.fullmatch(token) for token in tokens):
            raise InvalidArgument(
                f"subject_prefix {self.subject_prefix!r} must be dot-separated {_TOKEN.pattern}"
            )
        if self.replicas not in (1, 3, 5):
            raise InvalidArgument(f"replicas must be 1, 3 or 5, not {self.replicas}")
        if self.storage not in ("file", "memory"):
            raise InvalidArgument(f"storage must be 'file' or 'memory', not {self.storage!r}")
        for name in ("duplicate_window", "request_timeout", "poll_interval"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive")
        if self.read_cache_events < 0 or self.sequence_index_size < 0:
            raise InvalidArgument("read_cache_events and sequence_index_size must not be negative")
        if self.read_batch < 1 or self.max_append_attempts < 1:
            raise InvalidArgument("read_batch and max_append_attempts must be at least 1")
        stored = self.wake_prefix
        if not all(_TOKEN.fullmatch(token) for token in stored.split(".")):
            raise InvalidArgument(
                f"stored_prefix {stored!r} must be dot-separated {_TOKEN.pattern}"
            )
        if f"{stored}.".startswith(
            f"{self.subject_prefix}."
        ) or f"{self.subject_prefix}.".startswith(f"{stored}."):
            raise InvalidArgument(f"stored_prefix {stored!r} overlaps subject_prefix")

    @property
    def wake_prefix(self) -> str:
        """The prefix the server republishes stored messages' headers under."""
        return self.stored_prefix or f"{STORED_PREFIX}.{self.stream}"

    def wake_subject(self, filter_subject: str) -> str:
        """The republished twin of a subject filter."""
        return self.wake_prefix + filter_subject[len(self.subject_prefix) :]

    def subject(self, category: str, stream_id: str) -> str:
        """Return the subject of one event stream."""
        return f"{self.subject_prefix}.{category}.{stream_id}"

    def filter_subject(self, category: str | None = None) -> str:
        """Return the subject filter of one category, or of every stream."""
        if category is None:
            return f"{self.subject_prefix}.>"
        return f"{self.subject_prefix}.{category}.*"
