"""Projections: turn events into read models that answer queries fast (the Q of CQRS)."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

from .._core.dispatch import collect_handlers, handler_for, mark_handler
from .._core.events import Event, RecordedEvent
from .._core.stream_ids import validate_stream_id

__all__ = ["Partition", "Projection", "handles"]

Tx = TypeVar("Tx")
P = TypeVar("P", bound="Projection[Any]")
E = TypeVar("E", bound=Event)
Handler = Callable[[Any, RecordedEvent[Any], Any], Awaitable[None]]

_HANDLES_ATTR = "__eventtape_handles__"


def handles(
    *event_types: type[E],
) -> Callable[
    [Callable[[P, RecordedEvent[E], Tx], Awaitable[None]]],
    Callable[[P, RecordedEvent[E], Tx], Awaitable[None]],
]:
    """Mark an async method as the projection's handler for ``event_types``.

    The handler receives the recorded event (the event and its metadata: stream, version,
    position, actor, times ...) and the sink's open transaction; everything it writes commits
    together with the projection's checkpoint.

    Example:
        ```python
        @handles(OrderPlaced)
        async def _placed(self, record: RecordedEvent[OrderPlaced], tx: SqliteTransaction) -> None:
            await tx.execute(f"INSERT INTO {self.table('orders')} VALUES (?, ?)", ...)
        ```
    """
    return mark_handler("handles", _HANDLES_ATTR, event_types)


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    """One of ``count`` disjoint slices of the streams, by a stable hash of the stream id.

    Run one runner per partition (in separate processes, say) to spread a projection's load;
    each keeps its own checkpoint. ``Partition(0, 1)`` is everything.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"need 0 <= index < count, got index={self.index}, count={self.count}")

    @property
    def key(self) -> str:
        """The partition's name in checkpoints (``"all"`` for a single partition)."""
        return "all" if self.count == 1 else f"{self.index}/{self.count}"

    def owns(self, stream_id: str) -> bool:
        """Whether ``stream_id`` belongs to this partition (CRC-32 of the id, modulo count)."""
        return self.count == 1 or zlib.crc32(stream_id.encode()) % self.count == self.index


class Projection(Generic[Tx]):
    """Base class of projections that keep a read model in a sink of transaction type ``Tx``.

    Class attributes:
        name: A stable name: it keys the checkpoint, so renaming it means a rebuild.
        categories: Stream categories to read (on JetStream, filtered on the server);
            ``None`` reads every stream.
        tables: The read-model tables this projection owns. Handlers write to
            ``self.table("orders")`` (the table of the generation being built); queries read
            the view ``orders``, which always points to the active generation. That is what
            lets a blue/green rebuild fill new tables while the old ones keep serving.

    Define ``create(tx)`` to create the generation's tables, and ``@handles`` methods. The
    runner calls ``create`` when a generation starts; a rebuild drops the generation's tables
    and starts again, unless you override ``reset(tx)``.
    """

    name: ClassVar[str]
    categories: ClassVar[tuple[str, ...] | None] = None
    tables: ClassVar[tuple[str, ...]] = ()
    _handlers: ClassVar[dict[type[Event], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        cls._handlers = collect_handlers(cls, _HANDLES_ATTR, "handles")
        if cls.categories is not None:
            if isinstance(cls.categories, str):
                raise TypeError(f"{cls.__name__}.categories must be a tuple of names, not a str")
            for category in cls.categories:
                validate_stream_id(category)
        for table in cls.tables:
            if not table.isidentifier():
                raise TypeError(f"{cls.__name__}.tables: {table!r} is not a plain identifier")

    def __init__(self) -> None:
        self.generation = 1

    @property
    def event_types(self) -> frozenset[type[Event]]:
        """The event classes this projection has handlers for."""
        return frozenset(self._handlers)

    def table(self, name: str) -> str:
        """Return the physical table name of ``name`` in the generation being written."""
        if name not in self.tables:
            raise KeyError(f"{type(self).__name__}.tables does not declare {name!r}")
        return f"{name}__g{self.generation}"

    def handler_for(self, event_type: type[Event]) -> Handler | None:
        """Return the handler for ``event_type`` (or for a base class of it), or ``None``."""
        handler: Handler | None = handler_for(self._handlers, event_type)
        return handler

    async def create(self, tx: Tx) -> None:
        """Create this generation's tables (use :meth:`table` for their names)."""

    async def reset(self, tx: Tx) -> None:
        """Empty the read model before a rebuild in place (default: drop this generation's tables,
        then :meth:`create` them again)."""
        drop = getattr(tx, "drop_tables", None)
        if drop is None:
            raise NotImplementedError(f"override {type(self).__name__}.reset() for this sink")
        await drop([self.table(name) for name in self.tables])
        await self.create(tx)
