"""The eventtape command line against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from eventtape import (
    ProjectionRunner,
    RecordedEvent,
    Repository,
    Saga,
    SagaContext,
    SagaOptions,
    SagaRunner,
    metadata_scope,
    reacts_to,
)
from eventtape.cli import main
from eventtape.sinks.sqlite import SqliteSink
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, Order, OrderPlaced, item
from tests.projections import OrderSummary

PROJECTIONS = [OrderSummary()]


class Flaky(Saga):
    """Fails on the order with id "bad", every time: it gets parked."""

    name = "flaky"
    categories = ("order",)

    @reacts_to(OrderPlaced)
    async def explode(self, record: RecordedEvent[OrderPlaced], ctx: SagaContext) -> None:
        if record.event.order_id == "bad":
            raise ConnectionError("payment service unreachable")


class Store:
    """A fresh JetStream stream with order 12345's story in it."""

    def __init__(self, url: str) -> None:
        name = f"C{uuid4().hex[:10]}"
        self.url = url
        self.config = JetStreamConfig(stream=name, subject_prefix=f"cli.{name}")
        self.args = ["--url", url, "--stream", name, "--subject-prefix", self.config.subject_prefix]

    async def connect(self) -> JetStreamEventStore:
        return await JetStreamEventStore.connect(self.url, REGISTRY, config=self.config)


async def tell_the_story(store: JetStreamEventStore) -> None:
    orders = Repository(store, Order)
    with metadata_scope(actor="user:789"):
        await orders.save(Order.place("12345", "789", [item(price="7.50", quantity=2)]))
    with metadata_scope(actor="admin:support-001"):
        order = await orders.load("12345")
        order.cancel("duplicate order")
        await orders.save(order)
    await orders.save(Order.place("777", "42", [item()]))


@pytest.fixture
def story(nats_url: str) -> Store:
    made = Store(nats_url)

    async def setup() -> None:
        store = await made.connect()
        await tell_the_story(store)
        await store.aclose()

    asyncio.run(setup())
    return made


def test_history_answers_who_cancelled(story: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*story.args, "history", "order-12345"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["version", "time", "type", "actor", "data"]
    assert [line.split("\t")[2:4] for line in lines[1:]] == [
        ["OrderPlaced", "user:789"],
        ["OrderCancelled", "admin:support-001"],
    ]
    assert "reason=duplicate order" in lines[2]


def test_history_json_and_state_at_a_version(
    story: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*story.args, "--json", "history", "order-12345"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["type"], e["actor"]) for e in entries] == [
        (1, "OrderPlaced", "user:789"),
        (2, "OrderCancelled", "admin:support-001"),
    ]
    assert entries[1]["correlation_id"]
    code = main(
        [
            *story.args,
            "--json",
            "history",
            "order-12345",
            "--at-version",
            "1",
            "--aggregate",
            "tests.domain:Order",
            "--registry",
            "tests.domain:REGISTRY",
        ]
    )
    assert code == 0
    state = json.loads(capsys.readouterr().out)
    assert state["version"] == 1
    assert state["state"]["status"] == "placed"
    assert Decimal(state["state"]["items"][0]["price"]) == Decimal("7.50")


def test_history_errors_have_exit_codes(story: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*story.args, "history", "order-nope"]) == 3
    assert "order-nope" in capsys.readouterr().err
    assert main([*story.args, "history", "order.1"]) == 2
    assert "invalid stream id" in capsys.readouterr().err
    assert main([*story.args, "history", "order-12345", "--at-version", "1"]) == 2
    assert "--aggregate" in capsys.readouterr().err
    assert main(["--url", "nats://127.0.0.1:1", "history", "order-1"]) == 4
    assert "cannot connect" in capsys.readouterr().err
    assert main(["--url", story.url, "--stream", "NOPE", "info"]) == 3
    assert "NOPE" in capsys.readouterr().err
    assert main([*story.args, "--creds", "/nonexistent.creds", "info"]) == 4
    assert "cannot connect" in capsys.readouterr().err


def test_tail_from_a_position_and_by_category(
    story: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*story.args, "--json", "tail", "--from-position", "1", "--limit", "3"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["stream_id"], e["type"]) for e in events] == [
        ("order-12345", "OrderPlaced"),
        ("order-12345", "OrderCancelled"),
        ("order-777", "OrderPlaced"),
    ]
    assert (
        main([*story.args, "tail", "--category", "order", "--from-position", "1", "--limit", "1"])
        == 0
    )
    assert "OrderPlaced  by user:789" in capsys.readouterr().out


def test_tail_follows_live_appends(story: Store, capsys: pytest.CaptureFixture[str]) -> None:
    async def append_soon() -> None:
        store = await story.connect()
        await asyncio.sleep(0.5)
        await Repository(store, Order).save(Order.place("live", "u", [item()]))
        await store.aclose()

    import threading

    thread = threading.Thread(target=lambda: asyncio.run(append_soon()))
    thread.start()
    assert main([*story.args, "--json", "tail", "--limit", "1"]) == 0
    thread.join()
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert event["stream_id"] == "order-live"


def test_streams_and_info(story: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*story.args, "--json", "streams", "--category", "order"]) == 0
    streams = json.loads(capsys.readouterr().out)
    assert {(s["stream"], s["version"]) for s in streams} == {("order-12345", 2), ("order-777", 1)}
    assert main([*story.args, "--json", "info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["replicas"] == 1
    assert info["streams"] == 2
    assert "sync_interval" in info["durability"]


def test_projections_status_and_rebuild(
    story: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "read.db"

    async def project() -> None:
        store = await story.connect()
        async with ProjectionRunner(store, SqliteSink(db), [OrderSummary()]) as runner:
            await runner.wait_until(await store.head_position())
        await store.aclose()

    asyncio.run(project())
    assert main([*story.args, "--json", "projections", "status", "--sink", str(db)]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["projection"] == "order_summary"
    assert status["checkpoint"] == status["head"]
    assert status["lag events"] == 0
    code = main(
        [
            *story.args,
            "projections",
            "rebuild",
            "order_summary",
            "--sink",
            str(db),
            "--projections",
            "tests.test_cli:PROJECTIONS",
            "--registry",
            "tests.domain:REGISTRY",
            "--blue-green",
        ]
    )
    assert code == 0
    assert "rebuilt order_summary" in capsys.readouterr().out
    assert main([*story.args, "projections", "status", "--sink", str(tmp_path / "x.db")]) == 3


def test_sagas_list_and_parked(
    story: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sagas.db"

    async def run_saga() -> None:
        store = await story.connect()
        options = SagaOptions(max_attempts=1)
        async with SagaRunner(store, SqliteSink(db), [Flaky()], options=options) as runner:
            await Repository(store, Order).save(Order.place("bad", "u", [item()]))
            await runner.wait_until(await store.head_position())
        await store.aclose()

    asyncio.run(run_saga())
    assert main([*story.args, "--json", "sagas", "list", "--sink", str(db)]) == 0
    (saga,) = json.loads(capsys.readouterr().out)
    assert saga["saga"] == "flaky"
    assert saga["done"] == saga["head"]
    assert main([*story.args, "--json", "sagas", "list", "--sink", str(db), "--parked"]) == 0
    (parked,) = json.loads(capsys.readouterr().out)
    assert parked["stream"] == "order-bad"
    assert "payment service unreachable" in parked["why"]
