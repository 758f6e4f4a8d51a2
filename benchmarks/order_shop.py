"""Order shop suite: the running app over real HTTP, side by side with a plain CRUD version.

The shop runs on its embedded default (a nats-server it starts, a SQLite read model) under
uvicorn in its own process; the CRUD baseline is the "traditional" design: the same endpoints
over one SQLite table updated in place (an order is written as paid at once: no stock, no
payment, no history), also under uvicorn. One client process measures both, one after the other.

Figures: ``post_orders_p50/p99`` and ``get_order_p50/p99`` (ms, one client at a time),
``orders_per_s`` (32 concurrent clients), ``saga_completion_p50/p99`` (ms from ``OrderCreated``
to ``OrderPaid``, their recorded times, for orders placed one at a time at 50/s; no CRUD
equivalent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from ._harness import emit

SUITE = "order_shop"
ADMIN, CUSTOMER = "demo-admin", "demo-customer-789"


class CrudOrderIn(BaseModel):
    items: list[dict[str, Any]]


def crud_app(path: str) -> Any:
    """The baseline: one table, updated in place."""
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, user_id TEXT,"
        " items TEXT, status TEXT, updated_at TEXT)"
    )
    app = FastAPI()

    @app.post("/orders", status_code=202)
    def place(body: CrudOrderIn) -> dict[str, str]:
        order_id = uuid.uuid4().hex[:12]
        connection.execute(
            "INSERT INTO orders VALUES (?, '789', ?, 'paid', datetime('now'))",
            (order_id, str(body.items)),
        )
        return {"order_id": order_id}

    @app.get("/orders/{order_id}")
    def get(order_id: str) -> dict[str, Any]:
        row = connection.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            raise HTTPException(404)
        return dict(zip(["order_id", "user_id", "items", "status", "updated_at"], row, strict=True))

    return app


def serve(kind: str, port: int, directory: str) -> None:
    """Run one of the two apps under uvicorn (the child process's job)."""
    import uvicorn

    if kind == "crud":
        app = crud_app(os.path.join(directory, "crud.db"))
    else:
        from pathlib import Path

        from examples.order_shop.app import create_app
        from examples.order_shop.runtime import Settings

        app = create_app(Settings(store="embedded", data_dir=Path(directory)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def server(kind: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.order_shop", "--serve", kind, str(port), directory]
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"{url}/openapi.json", timeout=0.5)
                    break
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(20)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(url: str, sequential: int, concurrent: int, shop: bool) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {CUSTOMER}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"items": [{"sku": "mug", "quantity": 1}]}
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=64)) as client:
        if shop:
            await client.post(
                "/products", json={"sku": "mug", "name": "Mug", "price": "1.00"}, headers=admin
            )
            await client.post("/products/mug/restock", json={"quantity": 1_000_000}, headers=admin)
            await client.post(
                "/wallets/789/deposit", json={"amount": "1000000.00"}, headers=headers
            )
        posts, gets, ids = [], [], []
        for _ in range(sequential):
            start = time.perf_counter()
            response = await client.post("/orders", json=body, headers=headers)
            posts.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 202, response.text
            ids.append(response.json()["order_id"])
            await asyncio.sleep(0.02)  # 50 orders/s: the saga's latency, not a queue's
        await asyncio.sleep(1.0 if shop else 0)  # let the read model catch up before reading
        for order_id in ids:
            start = time.perf_counter()
            response = await client.get(f"/orders/{order_id}", headers=headers)
            gets.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text

        async def worker(count: int) -> None:
            for _ in range(count):
                response = await client.post("/orders", json=body, headers=headers)
                assert response.status_code == 202

        start = time.perf_counter()
        await asyncio.gather(*(worker(concurrent // 32) for _ in range(32)))
        rate = (concurrent // 32 * 32) / (time.perf_counter() - start)

        completions: list[float] = []
        if shop:
            for order_id in ids:
                for _ in range(200):
                    events = (
                        await client.get(f"/orders/{order_id}/history", headers=headers)
                    ).json()["events"]
                    times = {e["type"]: datetime.fromisoformat(e["recorded_at"]) for e in events}
                    if "OrderPaid" in times:
                        completions.append(
                            (times["OrderPaid"] - times["OrderCreated"]).total_seconds() * 1000
                        )
                        break
                    await asyncio.sleep(0.05)
        return {"posts": posts, "gets": gets, "rate": rate, "completions": completions}


def run(*, quick: bool) -> None:
    """Print every figure of the order shop suite."""
    sequential, concurrent = (100, 320) if quick else (500, 3200)
    with server("shop") as url:
        ours = asyncio.run(measure(url, sequential, concurrent, shop=True))
    with server("crud") as url:
        crud = asyncio.run(measure(url, sequential, concurrent, shop=False))
    baseline = "CRUD: one SQLite table"
    for q in (50, 99):
        emit(
            SUITE,
            f"post_orders_p{q}",
            "ms",
            "lower",
            percentile(ours["posts"], q),
            (baseline, percentile(crud["posts"], q)),
        )
    for q in (50, 99):
        emit(
            SUITE,
            f"get_order_p{q}",
            "ms",
            "lower",
            percentile(ours["gets"], q),
            (baseline, percentile(crud["gets"], q)),
        )
    emit(SUITE, "orders_per_s", "orders/s", "higher", ours["rate"], (baseline, crud["rate"]))
    for q in (50, 99):
        emit(SUITE, f"saga_completion_p{q}", "ms", "lower", percentile(ours["completions"], q))


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
