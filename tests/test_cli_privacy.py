"""The CLI on a store with personal fields: "[encrypted]", never ciphertext, never plaintext."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import pytest

from eventtape.cli import main
from eventtape.privacy import InMemoryKeyStore, PrivateEventStore
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.test_privacy import REGISTRY, OrderShipped, _alice

AGGREGATE = [
    "--aggregate",
    "tests.test_privacy:Customer",
    "--registry",
    "tests.test_privacy:REGISTRY",
]


@pytest.fixture
def stored(nats_url: str) -> list[str]:
    name = f"CP{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"clip.{name}")

    async def setup() -> None:
        inner = await JetStreamEventStore.connect(nats_url, REGISTRY, config=config)
        store = PrivateEventStore(inner, InMemoryKeyStore())
        await store.append("customer-789", [_alice()])
        await store.append(
            "customer-789", [OrderShipped(customer_id="789", address="1 Rabbit Hole", parcels=2)]
        )
        await store.aclose()

    asyncio.run(setup())
    return ["--url", nats_url, "--stream", name, "--subject-prefix", config.subject_prefix]


def _clean(text: str) -> None:
    for secret in ("Alice", "alice@example.org", "Rabbit", "eventtape:aesgcm"):
        assert secret not in text


def test_history_and_tail_show_personal_fields_as_encrypted(
    stored: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*stored, "history", "customer-789"]) == 0
    text = capsys.readouterr().out
    _clean(text)
    assert "name=[encrypted]" in text
    assert "address=[encrypted], parcels=2" in text

    assert main([*stored, "--json", "history", "customer-789"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["data"]["name"] == "[encrypted]"
    assert entries[0]["data"]["tier"] == "gold"
    assert entries[1]["data"] == {"customer_id": "789", "address": "[encrypted]", "parcels": 2}

    assert main([*stored, "--json", "tail", "--from-position", "1", "--limit", "2"]) == 0
    text = capsys.readouterr().out
    _clean(text)
    assert [json.loads(line)["data"].get("name") for line in text.splitlines()] == [
        "[encrypted]",
        None,
    ]
    assert main([*stored, "tail", "--from-position", "1", "--limit", "1"]) == 0
    _clean(capsys.readouterr().out)


def test_state_at_a_version_shows_encrypted_fields(
    stored: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*stored, "--json", "history", "customer-789", "--at-version", "2", *AGGREGATE])
    assert code == 0
    text = capsys.readouterr().out
    _clean(text)
    state = json.loads(text)["state"]
    assert state == {"name": "[encrypted]", "tier": "gold", "shipped": 2}
