"""Who and why for a whole scope of work ("everything in this request acts as user:789").

The scope lives in a :mod:`contextvars` variable, so it follows asyncio tasks: a task started
inside a scope keeps it, and concurrent requests never see each other's actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from .events import EMPTY_METADATA, Metadata

__all__ = ["current_metadata", "metadata_scope"]

_current: ContextVar[Metadata] = ContextVar("eventtape_metadata", default=EMPTY_METADATA)


def current_metadata() -> Metadata:
    """Return the metadata of the innermost :func:`metadata_scope` (empty outside any scope)."""
    return _current.get()


@contextlib.contextmanager
def metadata_scope(
    *,
    actor: str | None = None,
    causation_id: str | None = None,
    correlation_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[Metadata]:
    """Set who and why for everything saved through a :class:`eventtape.Repository` in this scope.

    Scopes nest: an inner scope overrides the fields it sets and keeps the others; headers are
    merged. Arguments given to ``Repository.save`` override the scope in turn.

    Example:
        ```python
        with metadata_scope(actor="user:789", correlation_id=request_id):
            order = Order.place("12345", user_id="789", items=items)
            await orders.save(order)
        ```

    Yields:
        The metadata now in force.
    """
    metadata = _current.get().merged(
        Metadata(
            actor=actor,
            causation_id=causation_id,
            correlation_id=correlation_id,
            # Not a mapping: handed on as it is, for Metadata to refuse clearly.
            headers=dict(headers) if isinstance(headers, Mapping) else headers or {},
        )
    )
    token = _current.set(metadata)
    try:
        yield metadata
    finally:
        _current.reset(token)
