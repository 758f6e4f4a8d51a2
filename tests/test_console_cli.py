"""`eventtape console` against a JetStream stream, with the audit projection."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import Store, tell_the_story


def test_eventtape_console_serves_a_stream_and_finds_by_actor(
    nats_url: str, tmp_path: Path
) -> None:
    story = Store(nats_url)

    async def setup() -> None:
        store = await story.connect()
        await tell_the_story(store)
        await store.aclose()

    asyncio.run(setup())
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"s3cret-admin": "admin:support-001"}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "eventtape.cli",
        *story.args,
        "console",
        "--registry",
        "tests.domain:REGISTRY",
        "--aggregate",
        "order=tests.domain:Order",
        "--tokens-file",
        str(tokens),
        "--audit-db",
        str(tmp_path / "audit.db"),
        "--port",
        str(port),
    ]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer s3cret-admin"}
    try:
        for _ in range(200):
            try:
                response = httpx.get(f"{base}/streams/order-12345", headers=headers)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.1)
        assert response.status_code == 200
        assert "OrderCancelled" in response.text
        assert "duplicate order" in response.text
        assert 'class="changed"' in response.text  # state before/after from --aggregate
        assert "s3cret-admin" not in response.text
        for _ in range(100):  # the audit projection catches up in the background
            found = httpx.get(
                f"{base}/search", params={"actor": "admin:support-001"}, headers=headers
            )
            if "OrderCancelled" in found.text:
                break
            time.sleep(0.1)
        assert "OrderCancelled" in found.text
        assert "OrderPlaced" not in found.text
        assert httpx.get(f"{base}/ops", headers=headers).status_code == 200
        assert httpx.get(f"{base}/ops").status_code == 303  # no token: to the login form
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
