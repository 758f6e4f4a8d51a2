"""Names that are storage format, not branding: written into stores and read back later.

Renaming any of these makes existing data unreadable (or invisible), so they live here, once,
pinned by ``tests/test_wire_names.py``. They say ``eventtape`` because nothing was ever
published under the earlier working name; from the first release on, a change here needs an
alias or a migration, not an edit.
"""

from __future__ import annotations

import uuid
from typing import Final

__all__ = [
    "AUDIT_TABLE",
    "CHECKPOINTS_TABLE",
    "CONSOLE_ACTIONS_STREAM",
    "CONSOLE_ACTION_EVENT",
    "DCB_CATEGORY",
    "DCB_TAGS_HEADER",
    "DEADLINE_TRACES_HEADER",
    "DEFAULT_KEYS_BUCKET",
    "DEFAULT_LEASE_BUCKET",
    "DEFAULT_SNAPSHOT_STREAM",
    "DEFAULT_SNAPSHOT_SUBJECT_PREFIX",
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT_PREFIX",
    "GENERATIONS_TABLE",
    "LAST_VERSION_HEADER",
    "LEASE_KEY_PREFIX",
    "MEMBER_KEY_PREFIX",
    "OWNER_TOKEN_COLUMN",
    "PARKED_TABLE",
    "SAGA_CLAIMED_PARTITION",
    "SAGA_DONE_PARTITION",
    "SAGA_NAMESPACE",
    "SAGA_PARKED_PARTITION",
    "STORED_PREFIX",
    "STREAM_TAG_PREFIX",
    "SUBJECT_KEYS_TABLE",
    "SYSTEM_EVENT_PREFIX",
]

SYSTEM_EVENT_PREFIX: Final = "eventtape."
"""Type names of the library's own events (saga deadlines, process managers) start with this."""

# JetStream layout.
DEFAULT_STREAM: Final = "EVENTTAPE_EVENTS"
"""The JetStream stream that holds every event unless configured otherwise."""
DEFAULT_SUBJECT_PREFIX: Final = "eventtape.events"
"""Subjects are ``<prefix>.<category>.<stream id>``."""
STORED_PREFIX: Final = "_eventtape_stored"
"""Where the stream republishes stored messages' headers: ``<prefix>.<stream>.…``."""
LAST_VERSION_HEADER: Final = "Eventtape-Last-Version"
"""Header carrying the version of the last event of a multi-event append."""
DCB_TAGS_HEADER: Final = "Eventtape-Tags"
"""Header of a DCB append: the tags of each of its events, as a JSON list of lists."""
DEADLINE_TRACES_HEADER: Final = "eventtape-deadline-traces"
"""Metadata header of an append of saga deadline events: which trace scheduled each deadline,
as ``<first 12 hex digits of the event id>=<traceparent>`` pairs joined by commas."""
DEFAULT_SNAPSHOT_STREAM: Final = "EVENTTAPE_SNAPSHOTS"
DEFAULT_SNAPSHOT_SUBJECT_PREFIX: Final = "eventtape.snapshots"
DEFAULT_KEYS_BUCKET: Final = "EVENTTAPE_KEYS"
"""The JetStream key-value bucket holding per-subject keys of personal data."""
SUBJECT_KEYS_TABLE: Final = "eventtape_subject_keys"
"""The SQL table holding per-subject keys of personal data (SQLite and PostgreSQL)."""

# Dynamic Consistency Boundaries.
DCB_CATEGORY: Final = "dcb"
"""A DCB append is stored as the one-append stream ``dcb-<its first event id>``."""
STREAM_TAG_PREFIX: Final = "stream:"
"""Every event of a stream carries the implicit tag ``stream:<stream id>``."""

# SQL read-model sinks: the library's own tables beside the user's.
CHECKPOINTS_TABLE: Final = "eventtape_checkpoints"
GENERATIONS_TABLE: Final = "eventtape_active_generations"
PARKED_TABLE: Final = "eventtape_parked"
OWNER_TOKEN_COLUMN: Final = "owner_token"
"""The checkpoint column holding the fencing token of the runner that last wrote it."""

# Runners sharing partitions: leases and members in one JetStream key-value bucket.
DEFAULT_LEASE_BUCKET: Final = "eventtape_leases"
LEASE_KEY_PREFIX: Final = "lease"
"""A partition's lease is ``lease.<kind>.<name>.<index>-<count>``."""
MEMBER_KEY_PREFIX: Final = "member"
"""A live runner is ``member.<member id>``."""

# Saga runners keep their marks in the checkpoint table under these partition names.
SAGA_CLAIMED_PARTITION: Final = "claimed"
SAGA_DONE_PARTITION: Final = "done"
SAGA_PARKED_PARTITION: Final = "saga"

# The web console: its audit projection's table, the stream and event type of admin actions.
AUDIT_TABLE: Final = "eventtape_audit"
CONSOLE_ACTIONS_STREAM: Final = "eventtape_console-actions"
CONSOLE_ACTION_EVENT: Final = "eventtape.ConsoleActionTaken"

SAGA_NAMESPACE: Final = uuid.UUID("4b0b8f57-55f3-4b4e-9a5c-3b3f7f2b6a10")
"""The namespace of the deterministic (version 5) ids of events that sagas cause."""
