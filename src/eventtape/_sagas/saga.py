"""Sagas: react to events by issuing commands, so a business transaction spans aggregates
(and services) without a distributed transaction.

Every command a saga issues goes through :class:`SagaContext`, which gives the events it causes
deterministic ids (derived from the saga, the causing event and the call), the causing event's
id as causation id and its correlation id. A handler run again for the same event (after a
crash, a retry, a replay) therefore never applies a command twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from .._core.dispatch import collect_handlers, handler_for, mark_handler
from .._core.errors import ConcurrencyError, DuplicateEventId, StreamNotFound
from .._core.events import Event, NewEvent, RecordedEvent
from .._core.stream_ids import validate_stream_id
from .._core.telemetry import trace_headers
from .._core.wire import SAGA_NAMESPACE
from .._model.aggregate import Aggregate
from .._model.repository import Repository
from .deadlines import Deadline

if TYPE_CHECKING:
    from .._core.clock import Clock
    from .deadlines import DeadlineBook

__all__ = ["Deadline", "Saga", "SagaContext", "on_deadline", "reacts_to"]

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S", bound="Saga")
E = TypeVar("E", bound=Event)
Reaction = Callable[[Any, RecordedEvent[Any], "SagaContext"], Awaitable[None]]
DeadlineHandler = Callable[[Any, "Deadline", "SagaContext"], Awaitable[None]]

_REACTS_ATTR = "__eventtape_reacts_to__"
_DEADLINE_ATTR = "__eventtape_on_deadline__"
_CONFLICT_RETRIES = 20


def reacts_to(
    *event_types: type[E],
) -> Callable[
    [Callable[[S, RecordedEvent[E], SagaContext], Awaitable[None]]],
    Callable[[S, RecordedEvent[E], SagaContext], Awaitable[None]],
]:
    """Mark an async method as the saga's reaction to ``event_types``.

    The method receives the recorded event and a :class:`SagaContext` to issue commands with.
    A :class:`eventtape.DomainError` from a command is a business outcome to handle (compensate);
    any other error is retried by the runner.
    """
    return mark_handler("reacts_to", _REACTS_ATTR, event_types)


def on_deadline(name: str) -> Callable[[Any], Any]:
    """Mark an async method as what the saga does when its deadline ``name`` passes.

    The method receives the :class:`Deadline` and a :class:`SagaContext`.
    """

    def decorator(method: Any) -> Any:
        setattr(method, _DEADLINE_ATTR, name)
        return method

    return decorator


class Saga:
    """Base class of choreographed sagas: ``@reacts_to`` handlers and ``@on_deadline`` ones.

    Class attributes:
        name: A stable name: it keys the checkpoint and the ids of the events the saga causes.
            It must be a valid stream category (no ``-``).
        categories: Stream categories to read; ``None`` reads every stream.
    """

    name: ClassVar[str]
    categories: ClassVar[tuple[str, ...] | None] = None
    _reactions: ClassVar[dict[type[Event], Reaction]] = {}
    _deadline_handlers: ClassVar[dict[str, DeadlineHandler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()
        if "-" in cls.name:
            raise TypeError(f"saga name {cls.name!r} must not contain '-'")
        validate_stream_id(cls.name)
        deadlines: dict[str, DeadlineHandler] = {}
        for klass in reversed(cls.__mro__):
            own: set[str] = set()
            for member in vars(klass).values():
                deadline = getattr(member, _DEADLINE_ATTR, None)
                if deadline is not None:
                    if deadline in own:
                        raise TypeError(
                            f"{klass.__qualname__} has two @on_deadline({deadline!r}) handlers"
                        )
                    own.add(deadline)
                    deadlines[deadline] = member
        cls._reactions = collect_handlers(cls, _REACTS_ATTR, "reacts_to")
        cls._deadline_handlers = deadlines

    def ordering_key(self, record: RecordedEvent[Event]) -> str:
        """Which events must be handled one after another, in store order.

        The runner handles events with the same key one at a time and events with different
        keys concurrently. The default, the correlation id (else the stream id), keeps each
        business transaction in order: everything an order's saga causes carries the order's
        correlation id. Override it when a saga's instances are keyed otherwise (return a
        constant to handle every event in order).
        """
        return record.correlation_id or record.stream_id

    def reaction_to(self, event_type: type[Event]) -> Reaction | None:
        """Return the handler for ``event_type`` (or a base class of it), or ``None``."""
        reaction: Reaction | None = handler_for(self._reactions, event_type)
        return reaction


class StreamLocks:
    """One lock per stream, shared by the handlers a runner runs side by side, so commands
    to the same aggregate take turns (writers elsewhere are still caught by the expected
    version)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    @contextlib.asynccontextmanager
    async def hold(self, stream_id: str) -> AsyncIterator[_Slot]:
        slot = self._slots.get(stream_id)
        if slot is None:
            slot = self._slots[stream_id] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                yield slot
        finally:
            slot.users -= 1
            if not slot.users:  # forget idle streams: the map stays as small as the work
                del self._slots[stream_id]


class _Slot:
    """A stream's turn, and the aggregate as the previous holder saved it: the next holder
    starts from it instead of loading the stream again (a stale one only costs a conflict
    and a reload: the save still checks the expected version)."""

    __slots__ = ("latest", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.latest: tuple[Repository[Any], Aggregate] | None = None

    def take(self, repository: Repository[A]) -> A | None:
        latest, self.latest = self.latest, None
        if latest is None or latest[0] is not repository:
            return None
        return latest[1]  # type: ignore[return-value]  # saved through this very repository

    def keep(self, repository: Repository[Any], aggregate: Aggregate) -> None:
        if self.users > 1:  # only when someone is waiting for this stream's turn
            self.latest = (repository, copy.deepcopy(aggregate))


class SagaContext:
    """What a saga handler uses to act: commands with exactly-once effects, and deadlines.

    Built by the runner for each handling of an event (or deadline).
    """

    def __init__(
        self,
        saga: str,
        cause_id: uuid.UUID,
        correlation_id: str | None,
        *,
        recovering: bool,
        clock: Clock,
        deadlines: DeadlineBook,
        locks: StreamLocks | None = None,
    ) -> None:
        self._saga = saga
        self._cause_id = cause_id
        self._correlation_id = correlation_id or str(cause_id)
        self._recovering = recovering
        self._clock = clock
        self._deadlines = deadlines
        self._locks = locks or StreamLocks()
        self._calls = 0
        self._scope = ""

    @property
    def now(self) -> datetime:
        """The runner clock's current time."""
        return self._clock.now()

    @property
    def correlation_id(self) -> str:
        """The business transaction this handling belongs to."""
        return self._correlation_id

    def scope(self, label: str) -> SagaContext:
        """Return a context whose event ids derive from ``label`` instead of the call order.

        Ids derive from the causing event and the order of calls, so a handler run again must
        make the same calls in the same order. Where the calls depend on state that earlier
        calls of the same handling changed (a process resuming half-way), give each part its
        own scope, so its ids do not depend on what ran before it.
        """
        child = SagaContext(
            self._saga,
            self._cause_id,
            self._correlation_id,
            recovering=self._recovering,
            clock=self._clock,
            deadlines=self._deadlines,
            locks=self._locks,
        )
        child._scope = f"{self._scope}/{label}"
        return child

    def _ids(self) -> Callable[[int], uuid.UUID]:
        call = self._calls
        self._calls += 1
        prefix = f"{self._saga}:{self._cause_id}{self._scope}:{call}"
        return lambda index: uuid.uuid5(SAGA_NAMESPACE, f"{prefix}:{index}")

    async def execute(
        self, repository: Repository[A], aggregate_id: str, command: Callable[[A], object]
    ) -> A:
        """Load an aggregate, run ``command`` on it, and save what it recorded, exactly once.

        Retries on a concurrency conflict (reloading first). A command already applied for
        this cause (the handler runs again after a crash) is not applied again.

        Raises:
            DomainError: When the command refuses: a business outcome for the saga to handle.
            AggregateNotFound: If the aggregate does not exist.
        """
        ids = self._ids()
        stream_id = repository.stream_id(aggregate_id)
        if self._recovering and await self._applied(repository, stream_id, ids(0)):
            return await repository.load(aggregate_id)
        for _ in range(_CONFLICT_RETRIES):
            # Handlers running side by side that command the same aggregate take turns here
            # instead of racing for its tail (each loser would cost a reload and a retry).
            async with self._locks.hold(stream_id) as slot:
                aggregate = slot.take(repository)
                if aggregate is None:
                    aggregate = await repository.load(aggregate_id)
                expected = aggregate.version
                command(aggregate)
                saved = await self._save(repository, aggregate, ids)
                if saved != "conflict":
                    if saved == "stored":
                        slot.keep(repository, aggregate)
                    return aggregate
        # Others kept saving first: a transient failure the runner retries with backoff.
        raise ConcurrencyError(
            stream_id, expected, await repository.store.stream_version(stream_id)
        )

    async def create(self, repository: Repository[A], factory: Callable[[], A]) -> A:
        """Create an aggregate with ``factory`` and save it, exactly once.

        Raises:
            DomainError: When the factory refuses.
            ConcurrencyError: If an aggregate with that id exists already (and not because
                this very call created it before a crash).
        """
        ids = self._ids()
        aggregate = factory()
        stream_id = repository.stream_id(aggregate.id)
        if self._recovering and await self._applied(repository, stream_id, ids(0)):
            return await repository.load(aggregate.id)
        try:
            async with self._locks.hold(stream_id):
                await self._save(repository, aggregate, ids)
        except ConcurrencyError:
            if await self._applied(repository, stream_id, ids(0)):
                return await repository.load(aggregate.id)
            raise
        return aggregate

    async def _save(
        self, repository: Repository[A], aggregate: A, ids: Callable[[int], uuid.UUID]
    ) -> Literal["stored", "already", "conflict"]:
        """Save with deterministic ids: ``"stored"``, ``"already"`` (an earlier run of this
        handler stored them), or ``"conflict"`` (worth a reload and a retry)."""
        aggregate._pending = [
            NewEvent(pending.event, ids(index)) for index, pending in enumerate(aggregate._pending)
        ]
        if not aggregate._pending:
            return "stored"
        try:
            await repository.save(
                aggregate,
                actor=f"system:{self._saga}",
                causation_id=str(self._cause_id),
                correlation_id=self._correlation_id,
            )
        except ConcurrencyError:
            return "conflict"
        except DuplicateEventId:
            aggregate.mark_saved()  # stored by an earlier run of this very handler
            return "already"
        return "stored"

    @staticmethod
    async def _applied(repository: Repository[Any], stream_id: str, event_id: uuid.UUID) -> bool:
        try:
            async for record in repository.store.read_stream(stream_id):
                if record.event_id == event_id:
                    return True
        except StreamNotFound:
            return False
        return False

    async def schedule(
        self, name: str, key: str, *, at: datetime | None = None, after: timedelta | None = None
    ) -> Deadline:
        """Schedule deadline ``name`` for ``key``, at a time or after a delay from now.

        Stored in the event store, so it survives restarts; fired once by the runner (the
        saga's ``@on_deadline(name)`` handler), unless :meth:`cancel` comes first.
        """
        if (at is None) == (after is None):
            raise ValueError("give exactly one of at= and after=")
        due = at if at is not None else self.now + after  # type: ignore[operator]
        deadline = Deadline(self._saga, name, key, due, self._correlation_id, trace_headers())
        await self._deadlines.schedule(deadline, self._ids()(0))
        return deadline

    async def cancel(self, name: str, key: str) -> None:
        """Cancel deadline ``name`` for ``key`` (nothing happens if it is not pending)."""
        await self._deadlines.cancel(self._saga, name, key, self._ids()(0))
