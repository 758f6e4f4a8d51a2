"""Events and helpers the contract suite uses: its own types, so it runs against any store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol
from uuid import uuid4

from .._core.events import Event, RecordedEvent
from .._core.registry import EventRegistry
from .._core.store import EventStore

__all__ = [
    "ContractNoteAdded",
    "ContractUnregistered",
    "ContractValueSet",
    "StoreFactory",
    "contract_registry",
    "run_with_store",
    "unique_category",
]


class ContractValueSet(Event):
    """A contract-suite event carrying a number."""

    __event_type__ = "eventtape.contract.ValueSet"

    value: int


class ContractNoteAdded(Event):
    """A contract-suite event carrying text (unicode and JSON-special characters included)."""

    __event_type__ = "eventtape.contract.NoteAdded"

    text: str


class ContractUnregistered(Event):
    """An event class the contract registry deliberately does not know."""

    __event_type__ = "eventtape.contract.Unregistered"


def contract_registry() -> EventRegistry:
    """Return a registry with the contract suite's event types."""
    return EventRegistry([ContractValueSet, ContractNoteAdded])


class StoreFactory(Protocol):
    """Makes a fresh store using the given registry, as an async context manager."""

    def __call__(
        self, registry: EventRegistry
    ) -> contextlib.AbstractAsyncContextManager[EventStore]:
        """Return a context manager that opens the store and closes it on exit."""
        ...


def unique_category() -> str:
    """Return a category no other test uses, so tests can share one store."""
    return f"c{uuid4().hex[:12]}"


def run_with_store(
    factory: StoreFactory,
    scenario: Callable[[EventStore], Awaitable[None]],
    *,
    timeout: float = 30.0,
) -> None:
    """Run an async scenario against a fresh store in a new event loop, with a time limit."""

    async def main() -> None:
        async with factory(contract_registry()) as store:
            await asyncio.wait_for(scenario(store), timeout)

    asyncio.run(main())


async def collect(iterator: AsyncIterator[RecordedEvent[Event]]) -> list[RecordedEvent[Event]]:
    """Return everything an async iterator yields."""
    return [record async for record in iterator]
