"""The event registry: type names, schema versions, upcasters, encoding and decoding.

A registry is an explicit object you build once and hand to your stores; nothing is registered
globally as a side effect of importing a module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from .errors import EventRegistrationError, SerializationError, UnknownEventType, UpcastError
from .events import Event
from .system_events import INTERNAL_EVENTS

__all__ = ["EventRegistry", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""A function that takes an event's data at schema version N and returns it at version N+1."""

EventT = TypeVar("EventT", bound=type[Event])


class EventRegistry:
    """Maps stable type names to event classes, and brings old stored events up to date.

    Example:
        ```python
        registry = EventRegistry([OrderPlaced, OrderCancelled])

        @registry.upcaster("OrderPlaced", from_version=1)
        def add_currency(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "currency": "EUR"}
        ```

    Stored events carry their type name and the schema version they were written with. On read,
    :meth:`decode` applies the upcasters from that version to the class's current
    ``__event_version__`` one step at a time, then validates the result with the class.

    Every registry also knows eventtape's own events (``eventtape.*``: saga deadlines, process
    instances), so any process can read a store sagas have written to.

    Args:
        event_types: Event classes to register now; more can be added with :meth:`register`.
    """

    def __init__(self, event_types: Iterable[type[Event]] = ()) -> None:
        self._by_name: dict[str, type[Event]] = {}
        self._names: dict[type[Event], str] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for event_type in (*INTERNAL_EVENTS, *event_types):
            self.register(event_type)

    @overload
    def register(self, event_type: EventT) -> EventT: ...

    @overload
    def register(self, event_type: None = None, *, name: str) -> Callable[[EventT], EventT]: ...

    def register(
        self, event_type: EventT | None = None, *, name: str | None = None
    ) -> EventT | Callable[[EventT], EventT]:
        """Register an event class under its ``__event_type__`` (or ``name``, to alias it).

        Usable as a plain call, a bare decorator, or ``@registry.register(name="old-name")``
        to make an extra stored name resolve to this class. Registering the same class under the
        same name twice is harmless.

        Raises:
            EventRegistrationError: If the name already belongs to another class, or the class is
                not an :class:`Event`.
        """
        if event_type is None:
            assert name is not None
            alias = name
            return lambda cls: self._register(cls, alias)
        return self._register(event_type, name)

    def _register(self, event_type: EventT, name: str | None) -> EventT:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise EventRegistrationError(f"{event_type!r} is not a subclass of eventtape.Event")
        type_name = name or event_type.__event_type__
        existing = self._by_name.get(type_name)
        if existing is not None and existing is not event_type:
            raise EventRegistrationError(
                f"type name {type_name!r} is already registered to {existing.__qualname__}; "
                f"cannot register {event_type.__qualname__} under it"
            )
        self._by_name[type_name] = event_type
        if name is None or event_type not in self._names:
            self._names[event_type] = event_type.__event_type__
        return event_type

    def upcaster(self, type_name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register ``fn`` as the step from ``from_version`` to ``from_version + 1`` of a type.

        Upcasters are plain functions on the event's JSON data (a dict) so they keep working
        after the old class is gone. Register one per step; a chain 1→2→3 needs two.

        Raises:
            EventRegistrationError: If that step already has an upcaster.
        """

        def decorator(fn: Upcaster) -> Upcaster:
            key = (type_name, from_version)
            if key in self._upcasters:
                raise EventRegistrationError(
                    f"an upcaster for {type_name!r} from version {from_version} "
                    "is already registered"
                )
            self._upcasters[key] = fn
            return fn

        return decorator

    def __contains__(self, item: object) -> bool:
        return item in self._names or item in self._by_name

    @property
    def type_names(self) -> frozenset[str]:
        """Every registered type name, aliases included."""
        return frozenset(self._by_name)

    def name_of(self, event_type: type[Event]) -> str:
        """Return the type name an event class is stored under.

        Raises:
            UnknownEventType: If the class was never registered.
        """
        try:
            return self._names[event_type]
        except KeyError:
            raise UnknownEventType(event_type.__qualname__) from None

    def class_of(
        self, type_name: str, *, stream_id: str | None = None, position: int | None = None
    ) -> type[Event]:
        """Return the class registered under ``type_name``.

        Raises:
            UnknownEventType: Naming the type, and the stream and position when given.
        """
        try:
            return self._by_name[type_name]
        except KeyError:
            raise UnknownEventType(type_name, stream_id=stream_id, position=position) from None

    def encode(self, event: Event) -> tuple[str, int, bytes]:
        """Encode an event for storage.

        Returns:
            The type name, the schema version and the JSON data.

        Raises:
            UnknownEventType: If the event's class is not registered.
            SerializationError: If its data cannot be written as JSON (e.g. a lone surrogate
                in a string, or a value pydantic cannot serialize).
        """
        event_class = type(event)
        name = self.name_of(event_class)
        try:
            data = event.__pydantic_serializer__.to_json(event)
        except PydanticSerializationError as error:
            raise SerializationError(f"cannot encode a {name} event as JSON: {error}") from None
        return name, event_class.__event_version__, data

    def decode(
        self,
        type_name: str,
        schema_version: int,
        data: bytes | str | dict[str, Any],
        *,
        stream_id: str | None = None,
        position: int | None = None,
    ) -> Event:
        """Decode stored data into the current event class, upcasting it if it is old.

        Args:
            type_name: The stored type name.
            schema_version: The schema version the data was written with.
            data: The event's JSON text, or the already parsed JSON object.
            stream_id: The stream it came from, for error messages.
            position: Its global position, for error messages.

        Raises:
            UnknownEventType: If the type name is not registered.
            UpcastError: If the stored version is newer than the class, or a step is missing or
                fails.
            SerializationError: If the data is not valid JSON or does not fit the class.
        """
        event_class = self.class_of(type_name, stream_id=stream_id, position=position)
        current = event_class.__event_version__
        try:
            if schema_version == current:
                validator = event_class.__pydantic_validator__
                if isinstance(data, dict):
                    return validator.validate_python(data)  # type: ignore[no-any-return]
                return validator.validate_json(data)  # type: ignore[no-any-return]
            payload = self._upcast(
                type_name, schema_version, current, data, stream_id=stream_id, position=position
            )
            return event_class.model_validate(payload)
        except ValidationError as error:
            raise SerializationError(
                f"stored {type_name!r} (schema version {schema_version}) does not fit "
                f"{event_class.__qualname__} at stream {stream_id!r}, position {position}: {error}"
            ) from error

    def _upcast(
        self,
        type_name: str,
        stored: int,
        current: int,
        data: bytes | str | dict[str, Any],
        *,
        stream_id: str | None,
        position: int | None,
    ) -> dict[str, Any]:
        def fail(reason: str) -> UpcastError:
            return UpcastError(
                type_name, stored, current, reason, stream_id=stream_id, position=position
            )

        if stored > current:
            raise fail("it was written by a newer version of the code")
        try:
            payload = dict(data) if isinstance(data, dict) else json.loads(data)
        except ValueError as error:
            raise fail(f"the stored data is not valid JSON ({error})") from error
        if not isinstance(payload, dict):
            raise fail("the stored data is not a JSON object")
        for version in range(stored, current):
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise fail(f"no upcaster registered from version {version} to {version + 1}")
            try:
                payload = step(payload)
            except Exception as error:
                raise fail(f"the upcaster from version {version} raised {error!r}") from error
            if not isinstance(payload, dict):
                raise fail(f"the upcaster from version {version} did not return a dict")
        return payload
