"""What an append expects of its stream, and what it reports back.

A leaf module (it imports nothing of ours), so errors can name these types without a circle.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, TypeAlias

__all__ = ["AppendResult", "ExpectedVersion", "StreamState"]


class StreamState(enum.Enum):
    """Expected stream states for :meth:`EventStore.append`, besides an exact version."""

    ANY = "any"
    """Append whatever the stream's version is (no concurrency check)."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (the same as expecting version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already have at least one event."""


ExpectedVersion: TypeAlias = int | StreamState
"""An exact version (0 means "no stream") or a :class:`StreamState`."""


class AppendResult(NamedTuple):
    """Where an append put its events (an immutable named tuple).

    Attributes:
        stream_id: The stream appended to.
        first_version: The version of the first event appended.
        version: The version of the last event appended: the stream's new version.
        first_position: The global position of the first event.
        position: The global position of the last event (what to wait for to read your writes).
    """

    stream_id: str
    first_version: int
    version: int
    first_position: int
    position: int
