"""evsrc: async-first event sourcing for Python.

Record every change as an immutable event that says who did it and why, rebuild state from
events, serve queries from read models, and coordinate services with sagas.
"""

from ._aggregate import Aggregate as Aggregate
from ._aggregate import applies as applies
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import SystemClock as SystemClock
from ._context import current_metadata as current_metadata
from ._context import metadata_scope as metadata_scope
from ._events import Event as Event
from ._events import Metadata as Metadata
from ._events import NewEvent as NewEvent
from ._events import RecordedEvent as RecordedEvent
from ._exceptions import AggregateNotFound as AggregateNotFound
from ._exceptions import ConcurrencyError as ConcurrencyError
from ._exceptions import DomainError as DomainError
from ._exceptions import DuplicateEventId as DuplicateEventId
from ._exceptions import EventRegistrationError as EventRegistrationError
from ._exceptions import EvsrcError as EvsrcError
from ._exceptions import InvalidStreamId as InvalidStreamId
from ._exceptions import MissingApplyHandler as MissingApplyHandler
from ._exceptions import ProjectionFailed as ProjectionFailed
from ._exceptions import ProjectionTimeout as ProjectionTimeout
from ._exceptions import SerializationError as SerializationError
from ._exceptions import StoreConfigurationError as StoreConfigurationError
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._exceptions import StreamNotFound as StreamNotFound
from ._exceptions import UnknownEventType as UnknownEventType
from ._exceptions import UpcastError as UpcastError
from ._process import ProcessInstance as ProcessInstance
from ._process import ProcessManager as ProcessManager
from ._process import Step as Step
from ._projection import Partition as Partition
from ._projection import Projection as Projection
from ._projection import handles as handles
from ._registry import EventRegistry as EventRegistry
from ._registry import Upcaster as Upcaster
from ._repository import Repository as Repository
from ._runner import ProjectionRunner as ProjectionRunner
from ._runner import ProjectionStatus as ProjectionStatus
from ._runner import RunnerOptions as RunnerOptions
from ._saga import Deadline as Deadline
from ._saga import Saga as Saga
from ._saga import SagaContext as SagaContext
from ._saga import on_deadline as on_deadline
from ._saga import reacts_to as reacts_to
from ._saga_runner import SagaOptions as SagaOptions
from ._saga_runner import SagaRunner as SagaRunner
from ._sinks import ParkedEvent as ParkedEvent
from ._sinks import ReadModelSink as ReadModelSink
from ._snapshots import EveryNEvents as EveryNEvents
from ._snapshots import Snapshot as Snapshot
from ._snapshots import SnapshotPolicy as SnapshotPolicy
from ._snapshots import SnapshotStore as SnapshotStore
from ._store import AppendResult as AppendResult
from ._store import EventStore as EventStore
from ._store import ExpectedVersion as ExpectedVersion
from ._store import StreamState as StreamState
from ._store import Subscription as Subscription
from ._stream_ids import MAX_STREAM_ID_LENGTH as MAX_STREAM_ID_LENGTH
from ._stream_ids import category_of as category_of
from ._stream_ids import validate_stream_id as validate_stream_id
from .stores.memory import InMemoryEventStore as InMemoryEventStore
from .stores.memory import InMemorySnapshotStore as InMemorySnapshotStore

__version__ = "0.1.0"

__all__ = [
    "MAX_STREAM_ID_LENGTH",
    "Aggregate",
    "AggregateNotFound",
    "AppendResult",
    "Clock",
    "ConcurrencyError",
    "Deadline",
    "DomainError",
    "DuplicateEventId",
    "Event",
    "EventRegistrationError",
    "EventRegistry",
    "EventStore",
    "EveryNEvents",
    "EvsrcError",
    "ExpectedVersion",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "InvalidStreamId",
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
    "ReadModelSink",
    "RecordedEvent",
    "Repository",
    "RunnerOptions",
    "Saga",
    "SagaContext",
    "SagaOptions",
    "SagaRunner",
    "SerializationError",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "Step",
    "StoreConfigurationError",
    "StoreUnavailable",
    "StreamNotFound",
    "StreamState",
    "Subscription",
    "SystemClock",
    "UnknownEventType",
    "UpcastError",
    "Upcaster",
    "__version__",
    "applies",
    "category_of",
    "current_metadata",
    "handles",
    "metadata_scope",
    "on_deadline",
    "reacts_to",
    "validate_stream_id",
]
