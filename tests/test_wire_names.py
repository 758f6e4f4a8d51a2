"""Names written into stores are storage format: this pins them, so a rename can't slip by.

Changing one of these values makes existing data unreadable or invisible. If you mean to,
change the value here too, and ship an alias or a migration with it (docs/decisions.md).
"""

from __future__ import annotations

import uuid

from eventtape import EventRegistry
from eventtape._core import wire
from eventtape._core.system_events import INTERNAL_EVENTS
from eventtape.sinks._sql import schema
from eventtape.stores.jetstream import JetStreamConfig


def test_persisted_names_are_pinned() -> None:
    assert wire.SYSTEM_EVENT_PREFIX == "eventtape."
    assert wire.DEFAULT_STREAM == "EVENTTAPE_EVENTS"
    assert wire.DEFAULT_SUBJECT_PREFIX == "eventtape.events"
    assert wire.STORED_PREFIX == "_eventtape_stored"
    assert wire.LAST_VERSION_HEADER == "Eventtape-Last-Version"
    assert wire.DEFAULT_SNAPSHOT_STREAM == "EVENTTAPE_SNAPSHOTS"
    assert wire.DCB_TAGS_HEADER == "Eventtape-Tags"
    assert wire.DEADLINE_TRACES_HEADER == "eventtape-deadline-traces"
    assert (wire.DCB_CATEGORY, wire.STREAM_TAG_PREFIX) == ("dcb", "stream:")
    assert wire.DEFAULT_SNAPSHOT_SUBJECT_PREFIX == "eventtape.snapshots"
    assert wire.DEFAULT_KEYS_BUCKET == "EVENTTAPE_KEYS"
    assert wire.SUBJECT_KEYS_TABLE == "eventtape_subject_keys"
    assert (wire.CHECKPOINTS_TABLE, wire.GENERATIONS_TABLE, wire.PARKED_TABLE) == (
        "eventtape_checkpoints",
        "eventtape_active_generations",
        "eventtape_parked",
    )
    assert (
        wire.SAGA_CLAIMED_PARTITION,
        wire.SAGA_DONE_PARTITION,
        wire.SAGA_PARKED_PARTITION,
    ) == ("claimed", "done", "saga")
    assert wire.OWNER_TOKEN_COLUMN == "owner_token"
    assert (wire.DEFAULT_LEASE_BUCKET, wire.LEASE_KEY_PREFIX, wire.MEMBER_KEY_PREFIX) == (
        "eventtape_leases",
        "lease",
        "member",
    )
    assert (wire.AUDIT_TABLE, wire.CONSOLE_ACTIONS_STREAM, wire.CONSOLE_ACTION_EVENT) == (
        "eventtape_audit",
        "eventtape_console-actions",
        "eventtape.ConsoleActionTaken",
    )
    assert uuid.UUID("4b0b8f57-55f3-4b4e-9a5c-3b3f7f2b6a10") == wire.SAGA_NAMESPACE


def test_system_event_type_names_are_pinned() -> None:
    registry = EventRegistry()
    assert sorted(registry.name_of(event) for event in INTERNAL_EVENTS) == [
        "eventtape.DeadlineCancelled",
        "eventtape.DeadlineFired",
        "eventtape.DeadlineScheduled",
        "eventtape.ProcessFinished",
        "eventtape.ProcessStarted",
        "eventtape.StepCompensated",
        "eventtape.StepCompleted",
        "eventtape.StepRefused",
    ]


def test_defaults_use_the_pinned_names() -> None:
    config = JetStreamConfig()
    assert config.stream == wire.DEFAULT_STREAM
    assert config.subject_prefix == wire.DEFAULT_SUBJECT_PREFIX
    assert config.wake_prefix == f"{wire.STORED_PREFIX}.{wire.DEFAULT_STREAM}"
    tables = " ".join(schema(position_type="INTEGER", timestamp_type="TEXT"))
    for table in (wire.CHECKPOINTS_TABLE, wire.GENERATIONS_TABLE, wire.PARKED_TABLE):
        assert f"EXISTS {table} (" in tables
