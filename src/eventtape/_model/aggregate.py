"""Aggregates: pure, synchronous decision makers whose state is a fold of their events."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self, TypeVar

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from .._core.dispatch import collect_handlers, mark_handler
from .._core.errors import MissingApplyHandler, SerializationError
from .._core.events import Event, NewEvent

__all__ = ["Aggregate", "applies"]

A = TypeVar("A", bound="Aggregate")
E = TypeVar("E", bound=Event)
Handler = Callable[[Any, Any], None]

_APPLIES_ATTR = "__eventtape_applies__"
# Attributes the base class keeps for itself; everything else in ``vars(aggregate)`` is state.
_INTERNAL = frozenset({"_id", "_version", "_pending", "_position"})


def applies(*event_types: type[E]) -> Callable[[Callable[[A, E], None]], Callable[[A, E], None]]:
    """Mark a method as the handler that applies ``event_types`` to the aggregate's state.

    Apply handlers are the only place state changes. They must not check rules or raise: an
    event is a fact that already happened, and replaying history must always succeed.

    Example:
        ```python
        @applies(OrderCancelled)
        def _cancelled(self, event: OrderCancelled) -> None:
            self.status = "cancelled"
        ```
    """
    return mark_handler("applies", _APPLIES_ATTR, event_types)


class Aggregate:
    """Base class of event-sourced aggregates.

    An aggregate decides: a command method checks business rules against the current state and
    either raises a :class:`eventtape.DomainError` (recording nothing) or calls :meth:`record`.
    Every
    state change happens in an ``@applies`` handler, so the state is exactly the fold of the
    events and replaying them rebuilds it. Aggregates never await and never touch a store; a
    :class:`eventtape.Repository` loads and saves them.

    Subclasses must be constructible as ``cls(id)``: set the initial state in ``__init__`` after
    calling ``super().__init__(id)``.

    Class attributes:
        stream_category: The category of the aggregate's streams: ``Order`` with id ``12345``
            lives in stream ``order-12345``. Defaults to the lowercased class name.
        __snapshot_version__: Raise it whenever the shape of the state changes, so snapshots
            taken by the older shape are ignored instead of loaded wrong.

    Example:
        ```python
        class Order(Aggregate):
            status: str

            def __init__(self, id: str) -> None:
                super().__init__(id)
                self.status = "new"

            @classmethod
            def place(cls, order_id: str, user_id: str) -> Order:
                order = cls(order_id)
                order.record(OrderPlaced(order_id=order_id, user_id=user_id))
                return order

            def cancel(self, reason: str) -> None:
                if self.status == "cancelled":
                    raise OrderAlreadyCancelled(self.id)
                self.record(OrderCancelled(reason=reason))

            @applies(OrderPlaced)
            def _placed(self, event: OrderPlaced) -> None:
                self.status = "placed"

            @applies(OrderCancelled)
            def _cancelled(self, event: OrderCancelled) -> None:
                self.status = "cancelled"
        ```
    """

    stream_category: ClassVar[str]
    __snapshot_version__: ClassVar[int] = 1
    _apply_handlers: ClassVar[dict[type[Event], Handler]] = {}
    _snapshot_adapter: ClassVar[tuple[frozenset[str], TypeAdapter[Any]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "stream_category" not in cls.__dict__:
            cls.stream_category = cls.__name__.lower()
        cls._apply_handlers = collect_handlers(cls, _APPLIES_ATTR, "applies")
        cls._snapshot_adapter = None

    def __init__(self, id: str) -> None:
        self._id = id
        self._version = 0
        self._pending: list[NewEvent[Event]] = []
        # The global position of the last stored event applied (set by a repository). Stores
        # use it to find where a snapshot's stream continues; the domain never reads it.
        self._position: int | None = None

    @property
    def id(self) -> str:
        """The aggregate's id (its stream id is ``f"{stream_category}-{id}"``)."""
        return self._id

    @property
    def version(self) -> int:
        """The number of events applied, recorded ones included (0 for a new aggregate)."""
        return self._version

    @property
    def pending_events(self) -> tuple[NewEvent[Event], ...]:
        """Events recorded since the aggregate was loaded or last saved, oldest first."""
        return tuple(self._pending)

    def record(self, event: Event, *, event_id: Any = None) -> None:
        """Apply ``event`` to the state and keep it as pending until the next save.

        Call this from command methods once every rule has been checked.

        Args:
            event: The new event.
            event_id: A UUID to use instead of a random one (deterministic ids make a retried
                command idempotent).

        Raises:
            MissingApplyHandler: If the aggregate has no handler for the event's class.
        """
        self._apply(event)
        self._pending.append(NewEvent(event) if event_id is None else NewEvent(event, event_id))

    def _apply(self, event: Event) -> None:
        handler = self._apply_handlers.get(type(event))
        if handler is None:
            handler = self._handler_for_subclass(type(event))
        handler(self, event)
        self._version += 1

    @classmethod
    def _handler_for_subclass(cls, event_type: type[Event]) -> Handler:
        for base in event_type.__mro__[1:]:
            handler = cls._apply_handlers.get(base)
            if handler is not None:
                cls._apply_handlers[event_type] = handler
                return handler
        raise MissingApplyHandler(cls.__qualname__, event_type.__qualname__)

    def replay(self, events: Iterable[Event]) -> None:
        """Apply already-stored events (used when loading); they do not become pending."""
        apply = self._apply
        for event in events:
            apply(event)

    def mark_saved(self) -> list[NewEvent[Event]]:
        """Clear and return the pending events; a repository calls this after appending them."""
        pending, self._pending = self._pending, []
        return pending

    # -- snapshots ------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Return the state as JSON-compatible data, for a snapshot.

        The default covers every attribute set on the instance, and needs each to be annotated
        on the class (``status: str``), so that :meth:`from_snapshot` restores exact types
        (``Decimal`` stays ``Decimal``). Override both methods for anything else.

        Raises:
            SerializationError: If an attribute is not annotated or cannot be dumped to JSON.
        """
        state = {name: value for name, value in vars(self).items() if name not in _INTERNAL}
        adapter = type(self)._state_adapter(state)
        try:
            dumped: dict[str, Any] = adapter.dump_python(state, mode="json")
        except Exception as error:
            raise SerializationError(
                f"cannot snapshot {type(self).__qualname__}: {error}"
            ) from error
        return dumped

    @classmethod
    def from_snapshot(cls, id: str, version: int, state: dict[str, Any]) -> Self:
        """Rebuild an aggregate at ``version`` from what :meth:`to_snapshot` returned.

        Raises:
            SerializationError: If the data does not fit the annotated state.
        """
        aggregate = cls(id)
        adapter = cls._state_adapter(state)
        try:
            restored = adapter.validate_python(state)
        except ValidationError as error:
            raise SerializationError(
                f"snapshot does not fit {cls.__qualname__}'s state: {error}"
            ) from error
        vars(aggregate).update(restored)
        aggregate._version = version
        return aggregate

    @classmethod
    def _state_adapter(cls, state: dict[str, Any]) -> TypeAdapter[Any]:
        built = cls.__dict__.get("_snapshot_adapter")
        if built is None:
            hints = {
                name: hint
                for name, hint in typing.get_type_hints(cls).items()
                if typing.get_origin(hint) is not ClassVar and hint is not ClassVar
            }
            state_type = TypedDict(f"{cls.__name__}State", hints, total=False)  # type: ignore[misc]
            built = (frozenset(hints), TypeAdapter(state_type))
            cls._snapshot_adapter = built
        names, adapter = built
        missing = sorted(name for name in state if name not in names)
        if missing:
            raise SerializationError(
                f"cannot snapshot {cls.__qualname__}: annotate {', '.join(missing)} on the class "
                f"(e.g. `{missing[0]}: str`) or override to_snapshot/from_snapshot"
            )
        return adapter
