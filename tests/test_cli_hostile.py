"""The command line against hostile data and unreachable servers: text stays text."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eventtape import ProjectionRunner, Repository, metadata_scope
from eventtape.cli import main
from eventtape.cli._main import Output, safe
from eventtape.sinks.sqlite import SqliteSink
from tests.domain import Order, OrderPlaced, item
from tests.projections import OrderSummary
from tests.servers import free_port
from tests.test_cli import Store

HOSTILE = "\u001b[2J\u001b]0;pwned\u0007 \u202eevil\u202c [red]markup[/red] \u0085\r\nnext"
RAW_CONTROLS = ("\x1b", "\x07", "\u202e", "\u202c", "\x85", "\r")


@pytest.fixture
def hostile(nats_url: str) -> Store:
    made = Store(nats_url)

    async def setup() -> None:
        store = await made.connect()
        orders = Repository(store, Order)
        with metadata_scope(actor="admin:support-001"):
            await orders.save(Order.place("666", "789", [item()]))
            order = await orders.load("666")
            order.cancel(HOSTILE)
            await orders.save(order)
        await store.aclose()

    asyncio.run(setup())
    return made


def test_safe_escapes_what_could_drive_a_terminal() -> None:
    assert safe("plain, ünïcode, 漢字, emoji 🎉") == "plain, ünïcode, 漢字, emoji 🎉"
    escaped = safe(HOSTILE)
    assert not any(control in escaped for control in RAW_CONTROLS)
    assert "\\x1b[2J" in escaped
    assert "\\u202eevil" in escaped
    assert "\\r\\nnext" in escaped


@pytest.mark.parametrize(
    "command", [["history", "order-666"], ["tail", "--from-position", "1", "--limit", "2"]]
)
def test_hostile_event_data_is_printed_escaped(
    hostile: Store, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main([*hostile.args, *command]) == 0
    out = capsys.readouterr().out
    assert not any(control in out for control in RAW_CONTROLS), repr(out)
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in out


def test_json_output_keeps_the_data_exactly(
    hostile: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*hostile.args, "--json", "history", "order-666"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # JSON escapes control characters itself
    entries = json.loads(out)
    assert entries[1]["data"]["reason"] == HOSTILE


def test_rich_tables_show_markup_and_controls_as_text() -> None:
    buffer = io.StringIO()
    out = Output(as_json=False)
    from rich.console import Console

    out.console = Console(file=buffer, color_system=None, width=300)
    out.table("t\x1b", ["reason"], [[HOSTILE]])
    out.record({}, HOSTILE)
    printed = buffer.getvalue()
    assert not any(control in printed for control in RAW_CONTROLS), repr(printed)
    assert "[red]markup[/red]" in printed


def test_an_unreachable_server_prints_one_clean_line() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "eventtape.cli", "--url", f"nats://127.0.0.1:{port}", "info"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 4
    assert result.stderr.splitlines() == [
        f"eventtape: cannot connect to NATS at nats://127.0.0.1:{port}:"
        " nats: no servers available for connection"
    ]
    assert result.stdout == ""


def test_a_caught_up_projection_has_no_lag_from_other_categories(
    hostile: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "read.db"

    async def project_then_append_elsewhere() -> None:
        store = await hostile.connect()
        async with ProjectionRunner(store, SqliteSink(db), [OrderSummary()]) as runner:
            await runner.wait_until(await store.head_position())
        # Events the projection never reads (category "audit"): not lag.
        for n in range(3):
            await store.append(f"audit-{n}", [OrderPlaced(order_id="x", user_id="u", items=())])
        await store.aclose()

    asyncio.run(project_then_append_elsewhere())
    status_args = [*hostile.args, "--json", "projections", "status", "--sink", str(db)]
    assert main([*status_args, "--projections", "tests.test_cli:PROJECTIONS"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["lag events"], status["lag exact"]) == (0, True)
    assert status["owner token"] == "-"  # one runner, not sharing: no lease token
    assert status["checkpoint"] < status["head"]
    # Without the projections the categories are unknown: an upper bound, said as such.
    assert main(status_args) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["lag events"], status["lag exact"]) == (3, False)


def test_reading_commands_never_write_to_a_foreign_database(
    story_free_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    other = tmp_path / "someone-elses.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    before = other.read_bytes()
    for command in (["projections", "status"], ["sagas", "list"]):
        assert main(["--url", story_free_url, *command, "--sink", str(other)]) == 5
        assert "holds no eventtape checkpoints" in capsys.readouterr().err
    assert other.read_bytes() == before
    assert not (tmp_path / "someone-elses.db-wal").exists()
    assert main(["--url", story_free_url, "projections", "status", "--sink", str(tmp_path)]) == 3


@pytest.fixture
def story_free_url(nats_url: str) -> str:
    return nats_url
