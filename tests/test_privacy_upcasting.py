"""Upcasters over events with personal fields, before and after the subject is forgotten."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import uuid4

import pytest

from eventtape import Event, EventRegistry
from eventtape.privacy import FORGOTTEN, InMemoryKeyStore, Personal, PrivateEventStore


class SignedUpV1(Event):
    __event_type__ = "test.CustomerSignedUp"
    __data_subject__ = "customer:{customer_id}"

    customer_id: str
    full_name: Annotated[str, Personal]
    plan: str


class SignedUp(Event):
    """Version 2: ``full_name`` renamed ``name``; ``plan`` became ``tier``; ``country`` added."""

    __event_type__ = "test.CustomerSignedUp"
    __event_version__ = 2
    __data_subject__ = "customer:{customer_id}"

    customer_id: str
    name: Annotated[str, Personal]
    tier: str
    country: str


def _new_registry() -> EventRegistry:
    registry = EventRegistry([SignedUp])

    @registry.upcaster("test.CustomerSignedUp", from_version=1)
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        # The personal value is ciphertext here: an upcaster may move it, never compute from it.
        data["name"] = data.pop("full_name")
        data["tier"] = data.pop("plan").upper()
        data["country"] = "unknown"
        return data

    return registry


async def test_an_upcast_personal_field_decrypts_and_is_masked_after_forget(
    nats_url: str,
) -> None:
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    name = f"U{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"pu.{name}", storage="memory")
    keys = InMemoryKeyStore()
    old = await JetStreamEventStore.connect(nats_url, EventRegistry([SignedUpV1]), config=config)
    new = await JetStreamEventStore.connect(nats_url, _new_registry(), config=config)
    try:
        writer = PrivateEventStore(old, keys, key_cache_seconds=0)
        for cid, full_name in [("1", "Alice Liddell"), ("2", "Bob Builder")]:
            event = SignedUpV1(customer_id=cid, full_name=full_name, plan="gold")
            await writer.append(f"customer-{cid}", [event])

        reader = PrivateEventStore(new, keys, key_cache_seconds=0)
        alice, bob = [r.event async for r in reader.read_all()]
        assert alice == SignedUp(
            customer_id="1", name="Alice Liddell", tier="GOLD", country="unknown"
        )

        await reader.forget("customer:1")
        alice, bob = [r.event async for r in reader.read_all()]
        assert alice == SignedUp(customer_id="1", name=FORGOTTEN, tier="GOLD", country="unknown")
        assert bob.name == "Bob Builder"
        # Projections and aggregates read the same through subscriptions.
        async with reader.subscribe() as subscription:
            first = await anext(subscription)
        assert (first.event.name, first.event.tier) == (FORGOTTEN, "GOLD")  # type: ignore[attr-defined]
    finally:
        await new.nc.jetstream().delete_stream(name)
        await new.aclose()
        await old.aclose()


async def test_an_upcaster_computing_from_a_personal_value_is_caught(nats_url: str) -> None:
    """An upcaster that rewrites ciphertext gets an error, never a wrong plaintext."""
    from eventtape import SerializationError
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore

    registry = EventRegistry([SignedUp])

    @registry.upcaster("test.CustomerSignedUp", from_version=1)
    def trim(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["name"] = data.pop("full_name")[:-3]  # a bad idea: it cuts the ciphertext
        data["tier"] = data.pop("plan")
        return {**data, "country": "?"}

    name = f"U{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"pu.{name}", storage="memory")
    keys = InMemoryKeyStore()
    old = await JetStreamEventStore.connect(nats_url, EventRegistry([SignedUpV1]), config=config)
    new = await JetStreamEventStore.connect(nats_url, registry, config=config)
    try:
        await PrivateEventStore(old, keys).append(
            "customer-1", [SignedUpV1(customer_id="1", full_name="Alice", plan="gold")]
        )
        with pytest.raises(SerializationError, match="customer:1"):
            [r async for r in PrivateEventStore(new, keys).read_stream("customer-1")]
    finally:
        await new.nc.jetstream().delete_stream(name)
        await new.aclose()
        await old.aclose()
