"""The public surface is deliberate: this pins it."""

from __future__ import annotations

import inspect

import eventtape
import eventtape.testing

EXPECTED = [
    "MAX_STREAM_ID_LENGTH",
    "Aggregate",
    "AggregateNotFound",
    "AppendCondition",
    "AppendConditionFailed",
    "AppendRefused",
    "AppendResult",
    "ChainBreak",
    "ChainReport",
    "Clock",
    "ConcurrencyError",
    "DcbReadResult",
    "DcbStore",
    "Deadline",
    "Decision",
    "DecisionProjection",
    "DomainError",
    "DuplicateEventId",
    "Event",
    "EventRegistrationError",
    "EventRegistry",
    "EventStore",
    "EventtapeError",
    "EveryNEvents",
    "ExpectedVersion",
    "Fenced",
    "HashChain",
    "HistoryLost",
    "InMemoryEventStore",
    "InMemoryLeases",
    "InMemorySnapshotStore",
    "InvalidArgument",
    "InvalidMetadata",
    "InvalidStreamId",
    "InvalidTag",
    "Lease",
    "LeaseStore",
    "ManualClock",
    "Metadata",
    "MissingApplyHandler",
    "NewEvent",
    "ParkedEvent",
    "Partition",
    "ProcessInstance",
    "ProcessManager",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionTimeout",
    "Query",
    "QueryItem",
    "ReadModelSink",
    "RecordedEvent",
    "Repository",
    "RunnerOptions",
    "Saga",
    "SagaContext",
    "SagaOptions",
    "SagaRunner",
    "SequencedEvent",
    "SerializationError",
    "Sharing",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "Step",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "StreamNotFound",
    "StreamState",
    "SubjectForgotten",
    "Subscription",
    "SystemClock",
    "TaggedEvent",
    "UnknownEventType",
    "UpcastError",
    "Upcaster",
    "Verification",
    "__version__",
    "applies",
    "build_decision",
    "category_of",
    "current_metadata",
    "handles",
    "metadata_scope",
    "on_deadline",
    "reacts_to",
    "tagged",
    "tags_of",
    "validate_stream_id",
    "verify",
]


def test_all_is_exactly_the_intended_list() -> None:
    assert eventtape.__all__ == EXPECTED


def test_every_public_name_exists_and_is_documented() -> None:
    for name in eventtape.__all__:
        member = getattr(eventtape, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__doc__, f"eventtape.{name} has no docstring"
    for name in eventtape.testing.__all__:
        assert getattr(eventtape.testing, name).__doc__, (
            f"eventtape.testing.{name} has no docstring"
        )


def test_errors_share_one_base() -> None:
    errors = [getattr(eventtape, n) for n in eventtape.__all__ if n.endswith(("Error", "NotFound"))]
    errors += [eventtape.InvalidStreamId, eventtape.DuplicateEventId, eventtape.UnknownEventType]
    for error in errors:
        assert issubclass(error, eventtape.EventtapeError)


def test_importing_eventtape_needs_only_the_core_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, eventtape; "
        "bad = [m for m in ('nats', 'asyncpg', 'pytest', 'hypothesis') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
