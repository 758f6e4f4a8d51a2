"""eventtape: async-first event sourcing for Python.

Record every change as an immutable event that says who did it and why, rebuild state from
events, serve queries from read models, and coordinate services with sagas.
"""

from ._core.chain import ChainBreak as ChainBreak
from ._core.chain import ChainReport as ChainReport
from ._core.chain import HashChain as HashChain
from ._core.chain import Verification as Verification
from ._core.chain import verify as verify
from ._core.clock import Clock as Clock
from ._core.clock import ManualClock as ManualClock
from ._core.clock import SystemClock as SystemClock
from ._core.conditions import AppendResult as AppendResult
from ._core.conditions import ExpectedVersion as ExpectedVersion
from ._core.conditions import StreamState as StreamState
from ._core.context import current_metadata as current_metadata
from ._core.context import metadata_scope as metadata_scope
from ._core.dcb import AppendCondition as AppendCondition
from ._core.dcb import DcbReadResult as DcbReadResult
from ._core.dcb import DcbStore as DcbStore
from ._core.dcb import Query as Query
from ._core.dcb import QueryItem as QueryItem
from ._core.dcb import SequencedEvent as SequencedEvent
from ._core.dcb import TaggedEvent as TaggedEvent
from ._core.dcb import tagged as tagged
from ._core.dcb import tags_of as tags_of
from ._core.errors import AggregateNotFound as AggregateNotFound
from ._core.errors import AppendConditionFailed as AppendConditionFailed
from ._core.errors import AppendRefused as AppendRefused
from ._core.errors import ConcurrencyError as ConcurrencyError
from ._core.errors import DomainError as DomainError
from ._core.errors import DuplicateEventId as DuplicateEventId
from ._core.errors import EventRegistrationError as EventRegistrationError
from ._core.errors import EventtapeError as EventtapeError
from ._core.errors import Fenced as Fenced
from ._core.errors import HistoryLost as HistoryLost
from ._core.errors import InvalidArgument as InvalidArgument
from ._core.errors import InvalidMetadata as InvalidMetadata
from ._core.errors import InvalidStreamId as InvalidStreamId
from ._core.errors import InvalidTag as InvalidTag
from ._core.errors import MissingApplyHandler as MissingApplyHandler
from ._core.errors import ProjectionFailed as ProjectionFailed
from ._core.errors import ProjectionTimeout as ProjectionTimeout
from ._core.errors import SerializationError as SerializationError
from ._core.errors import StoreConfigurationError as StoreConfigurationError
from ._core.errors import StoreError as StoreError
from ._core.errors import StoreUnavailable as StoreUnavailable
from ._core.errors import StreamNotFound as StreamNotFound
from ._core.errors import SubjectForgotten as SubjectForgotten
from ._core.errors import UnknownEventType as UnknownEventType
from ._core.errors import UpcastError as UpcastError
from ._core.events import Event as Event
from ._core.events import Metadata as Metadata
from ._core.events import NewEvent as NewEvent
from ._core.events import RecordedEvent as RecordedEvent
from ._core.leases import Lease as Lease
from ._core.leases import LeaseStore as LeaseStore
from ._core.registry import EventRegistry as EventRegistry
from ._core.registry import Upcaster as Upcaster
from ._core.sinks import ParkedEvent as ParkedEvent
from ._core.sinks import ReadModelSink as ReadModelSink
from ._core.snapshots import EveryNEvents as EveryNEvents
from ._core.snapshots import Snapshot as Snapshot
from ._core.snapshots import SnapshotPolicy as SnapshotPolicy
from ._core.snapshots import SnapshotStore as SnapshotStore
from ._core.store import EventStore as EventStore
from ._core.store import Subscription as Subscription
from ._core.stream_ids import MAX_STREAM_ID_LENGTH as MAX_STREAM_ID_LENGTH
from ._core.stream_ids import category_of as category_of
from ._core.stream_ids import validate_stream_id as validate_stream_id
from ._model.aggregate import Aggregate as Aggregate
from ._model.aggregate import applies as applies
from ._model.decision import Decision as Decision
from ._model.decision import DecisionProjection as DecisionProjection
from ._model.decision import build_decision as build_decision
from ._model.repository import Repository as Repository
from ._projections.projection import Partition as Partition
from ._projections.projection import Projection as Projection
from ._projections.projection import handles as handles
from ._projections.runner import ProjectionRunner as ProjectionRunner
from ._projections.runner import ProjectionStatus as ProjectionStatus
from ._projections.runner import RunnerOptions as RunnerOptions
from ._runtime.sharing import Sharing as Sharing
from ._sagas.process import ProcessInstance as ProcessInstance
from ._sagas.process import ProcessManager as ProcessManager
from ._sagas.process import Step as Step
from ._sagas.runner import SagaOptions as SagaOptions
from ._sagas.runner import SagaRunner as SagaRunner
from ._sagas.saga import Deadline as Deadline
from ._sagas.saga import Saga as Saga
from ._sagas.saga import SagaContext as SagaContext
from ._sagas.saga import on_deadline as on_deadline
from ._sagas.saga import reacts_to as reacts_to
from .stores.memory import InMemoryEventStore as InMemoryEventStore
from .stores.memory import InMemorySnapshotStore as InMemorySnapshotStore
from .stores.memory_leases import InMemoryLeases as InMemoryLeases

__version__ = "0.1.0"

__all__ = [
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
