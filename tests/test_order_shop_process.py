"""The order shop as an operator runs it: real processes, a locked data directory, a
nats-server that dies with its parent, a stale one found and stopped, and the one CLI command
from the docs that answers "who cancelled order X"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from examples.order_shop.runtime import EmbeddedNats, _is_nats_server_on

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN, ALICE = "demo-admin", "demo-customer-789"
# Exactly as docs/order-shop.md prints it (the test reads it from there).
DOCS = (ROOT / "docs" / "order-shop.md").read_text()

pytestmark = pytest.mark.slow


def _documented_command(name: str = "who-cancelled") -> str:
    start = DOCS.index(f"<!-- test: {name}")
    block = DOCS[start:].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert "\n" not in block.strip()
    return block.strip()


class ServeProcess:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.log = cwd / f"serve-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ORDER_SHOP_PAYMENT_TIMEOUT": "900"}
        env.pop("ORDER_SHOP_DATA", None)  # the default, .order_shop/ in the working directory
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.order_shop", "serve", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        for _ in range(300):
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve never became ready: {self.log.read_text()}")

    def call(self, method: str, path: str, token: str, body: object = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{self.url}{path}", json=body, headers=headers, timeout=10)


def _gone(pid: int, store_dir: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _is_nats_server_on(pid, store_dir):
            return True
        time.sleep(0.05)
    return False


def test_one_shop_per_data_dir_no_orphan_server_and_the_cli_answers(tmp_path: Path) -> None:
    data = tmp_path / ".order_shop"
    store_dir = data / "nats" / "js"
    first = ServeProcess(tmp_path)
    try:
        first.wait_ready()
        # A second shop on the same data directory refuses, clearly, and starts nothing.
        second = subprocess.run(
            [sys.executable, "-m", "examples.order_shop", "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another order shop" in second.stderr
        assert str(first.process.pid) in second.stderr

        # The story, over HTTP.
        assert first.call(
            "POST", "/products", ADMIN, {"sku": "mug", "name": "Mug", "price": "7.50"}
        ).is_success
        assert first.call("POST", "/products/mug/restock", ADMIN, {"quantity": 10}).is_success
        assert first.call("POST", "/wallets/789/deposit", ALICE, {"amount": "50.00"}).is_success
        placed = first.call("POST", "/orders", ALICE, {"items": [{"sku": "mug", "quantity": 2}]})
        order_id = placed.json()["order_id"]
        cancel = {"reason": "customer called: duplicate order"}
        assert first.call("POST", f"/orders/{order_id}/cancel", ADMIN, cancel).is_success

        # The shop said where its events are, and the documented command finds them.
        assert (
            "Who did what to an order: eventtape --url nats://127.0.0.1:" in first.log.read_text()
        )
        command = _documented_command().replace("<order id>", order_id)
        bin_dir = str(Path(sys.executable).parent)
        cli = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        cancelled = [line for line in cli.stdout.splitlines() if "OrderCancelled" in line]
        assert cancelled
        assert "admin:support-001" in cancelled[0]

        # The documented check that the history is the one written: every stream intact.
        verified = subprocess.run(
            ["bash", "-c", _documented_command("verify")],
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip().splitlines()[-1].startswith("OK: ")

        # kill -9 the shop: its nats-server goes with it.
        child = int((data / "nats" / "nats.pid").read_text())
        assert _is_nats_server_on(child, store_dir)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert _gone(child, store_dir, 10), "the nats-server outlived the shop"
    finally:
        if first.process.poll() is None:
            first.process.kill()

    # A nats-server left on the store directory (started here, outside any shop) is found and
    # stopped before a new one starts: never two servers on one store.
    stray = EmbeddedNats(data / "nats")
    stray.start()
    assert stray.process is not None
    stray_pid = stray.process.pid
    third = ServeProcess(tmp_path)
    try:
        third.wait_ready()
        assert _gone(stray_pid, store_dir, 10)
        assert f"Stopped a nats-server (pid {stray_pid})" in third.log.read_text()
        # Nothing acknowledged was lost across the kill and the restarts.
        order = third.call("GET", f"/orders/{order_id}", ALICE)
        assert order.status_code == 200
        assert order.json()["status"] == "cancelled"
    finally:
        third.process.terminate()
        third.process.wait(30)
        stray.process.wait(10)
    assert not (data / "nats" / "nats.pid").exists()
