"""One handler table for aggregates, projections and sagas: mark, collect, look up.

``@applies``, ``@handles`` and ``@reacts_to`` all mark methods with the event classes they
handle; a class collects its table once, in ``__init_subclass__``, with one rule everywhere:

- a subclass's handler for a type replaces its base's (that is how behaviour is specialised);
- two handlers for one type *in the same class* are a mistake, refused when the class is made
  (before, projections and sagas silently kept the last one);
- an event with no handler of its own uses the handler of its nearest base class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .events import Event

__all__ = ["collect_handlers", "handler_for", "mark_handler"]

F = TypeVar("F", bound=Callable[..., Any])


def mark_handler(decorator: str, attr: str, event_types: tuple[Any, ...]) -> Callable[[F], F]:
    """Return a decorator that marks a method as handling ``event_types`` (checked here)."""
    if not event_types:
        raise TypeError(f"@{decorator} needs at least one event class")
    for event_type in event_types:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"@{decorator} takes Event subclasses, not {event_type!r}")

    def mark(method: F) -> F:
        setattr(method, attr, event_types)
        return method

    return mark


def collect_handlers(cls: type, attr: str, decorator: str) -> dict[type[Event], Any]:
    """Collect ``cls``'s handler table from its MRO, the most derived class winning.

    Raises:
        TypeError: If one class marks two methods for the same event type.
    """
    handlers: dict[type[Event], Any] = {}
    for klass in reversed(cls.__mro__):
        own: dict[type[Event], str] = {}
        for name, member in vars(klass).items():
            for event_type in getattr(member, attr, ()):
                if event_type in own:
                    raise TypeError(
                        f"{klass.__qualname__} has two @{decorator} handlers for "
                        f"{event_type.__qualname__}: {own[event_type]} and {name}"
                    )
                own[event_type] = name
                handlers[event_type] = member
    return handlers


def handler_for(handlers: dict[type[Event], Any], event_type: type[Event]) -> Any | None:
    """Return the handler of ``event_type`` or of its nearest base class, or ``None``."""
    for klass in event_type.__mro__:
        handler = handlers.get(klass)
        if handler is not None:
            return handler
    return None
