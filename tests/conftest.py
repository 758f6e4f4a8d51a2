"""Shared fixtures: a small order domain used across the core tests."""

from __future__ import annotations

import pytest

from evsrc import EventRegistry, InMemoryEventStore
from tests.domain import REGISTRY


@pytest.fixture
def registry() -> EventRegistry:
    return REGISTRY


@pytest.fixture
async def store(registry: EventRegistry) -> InMemoryEventStore:
    return InMemoryEventStore(registry)
