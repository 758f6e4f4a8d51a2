"""Crypto-shredding: personal fields encrypted per data subject, forgotten by destroying a key."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any
from uuid import uuid4

import pytest

from eventtape import (
    Aggregate,
    EventRegistrationError,
    EventRegistry,
    InMemoryEventStore,
    NewEvent,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    SerializationError,
    SubjectForgotten,
    applies,
    handles,
)
from eventtape import Event as BaseEvent
from eventtape._core.privacy import personal_fields
from eventtape.privacy import FORGOTTEN, InMemoryKeyStore, Personal, PrivateEventStore
from eventtape.sinks.sqlite import SqliteSink


class CustomerRegistered(BaseEvent):
    __data_subject__ = "customer:{customer_id}"

    customer_id: str
    name: Annotated[str, Personal]
    email: Annotated[str, Personal]
    address: Annotated[str | None, Personal] = None
    tier: str = "basic"


class OrderShipped(BaseEvent):
    __data_subject__ = "customer:{customer_id}"

    customer_id: str
    address: Annotated[str, Personal]
    parcels: int


REGISTRY = EventRegistry([CustomerRegistered, OrderShipped])


class Customer(Aggregate):
    name: str
    tier: str
    shipped: int

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.name, self.tier, self.shipped = "", "", 0

    @applies(CustomerRegistered)
    def _registered(self, event: CustomerRegistered) -> None:
        self.name, self.tier = event.name, event.tier

    @applies(OrderShipped)
    def _shipped(self, event: OrderShipped) -> None:
        self.shipped += event.parcels


def _alice(customer_id: str = "789") -> CustomerRegistered:
    return CustomerRegistered(
        customer_id=customer_id,
        name="Alice Liddell",
        email="alice@example.org",
        address="1 Rabbit Hole",
        tier="gold",
    )


@pytest.fixture
def inner() -> InMemoryEventStore:
    return InMemoryEventStore(REGISTRY)


@pytest.fixture
def store(inner: InMemoryEventStore) -> PrivateEventStore:
    return PrivateEventStore(inner, InMemoryKeyStore(), key_cache_seconds=0)


async def test_personal_fields_are_stored_encrypted_and_read_back_in_clear(
    store: PrivateEventStore, inner: InMemoryEventStore
) -> None:
    await store.append("customer-789", [_alice()])
    [record] = [r async for r in store.read_stream("customer-789")]
    assert record.event == _alice()
    [stored] = [r async for r in inner.read_stream("customer-789")]
    text = stored.event.model_dump_json()
    for secret in ("Alice", "alice@example.org", "Rabbit"):
        assert secret not in text
    assert stored.event.tier == "gold"  # only personal fields are touched
    assert stored.event.customer_id == "789"


async def test_forget_masks_every_read_and_changes_nothing_else(
    store: PrivateEventStore, inner: InMemoryEventStore
) -> None:
    await store.append("customer-789", [_alice("789")])
    await store.append("customer-790", [_alice("790")])
    await store.append("customer-789", [OrderShipped(customer_id="789", address="x", parcels=2)])
    before = [r async for r in inner.read_all()]

    await store.forget("customer:789")
    await store.forget("customer:789")  # idempotent

    after = [r async for r in inner.read_all()]
    assert after == before  # the log itself is untouched
    records = [r async for r in store.read_all()]
    forgotten, other, shipped = records
    assert (forgotten.event.name, forgotten.event.email) == (FORGOTTEN, FORGOTTEN)
    assert forgotten.event.address == FORGOTTEN
    assert (forgotten.event.customer_id, forgotten.event.tier) == ("789", "gold")
    assert (forgotten.version, forgotten.event_id) == (before[0].version, before[0].event_id)
    assert other.event == _alice("790")
    assert (shipped.event.address, shipped.event.parcels) == (FORGOTTEN, 2)
    # Subscriptions and aggregates see the same.
    async with store.subscribe() as subscription:
        first = await anext(subscription)
    assert first.event.name == FORGOTTEN
    customer = await Repository(store, Customer).load("789")
    assert (customer.name, customer.tier, customer.shipped) == (FORGOTTEN, "gold", 2)


async def test_no_new_personal_data_for_a_forgotten_subject(store: PrivateEventStore) -> None:
    await store.forget("customer:789")
    with pytest.raises(SubjectForgotten) as caught:
        await store.append("customer-789", [_alice()])
    assert caught.value.subject == "customer:789"
    assert await store.head_position() == 0


async def test_a_retried_append_is_recognised_as_the_same(store: PrivateEventStore) -> None:
    event = NewEvent(_alice(), uuid4())
    first = await store.append("customer-789", [event], expected_version=0)
    again = await store.append("customer-789", [event], expected_version=0)
    assert again == first
    assert await store.head_position() == 1


async def test_altered_ciphertext_is_an_error_not_garbage(inner: InMemoryEventStore) -> None:
    keys = InMemoryKeyStore()
    store = PrivateEventStore(inner, keys, key_cache_seconds=0)
    await store.append("customer-789", [_alice()])
    [stored] = [r async for r in inner.read_stream("customer-789")]
    # Someone moves Alice's sealed name to another customer's event.
    moved = _alice("790").model_copy(update={"name": stored.event.name})
    await inner.append("customer-790", [moved])
    await keys.key_for("customer:790")
    with pytest.raises(SerializationError, match="customer:790"):
        [r async for r in store.read_stream("customer-790")]


async def test_a_rebuilt_read_model_holds_no_personal_data_of_the_forgotten(
    store: PrivateEventStore, tmp_path: Any
) -> None:
    class Customers(Projection[Any]):
        name = "customers"
        tables = ("customers",)

        async def create(self, tx: Any) -> None:
            await tx.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table('customers')} (id TEXT, name TEXT)"
            )

        @handles(CustomerRegistered)
        async def _registered(self, record: RecordedEvent[CustomerRegistered], tx: Any) -> None:
            event = record.event
            await tx.execute(
                f"INSERT INTO {self.table('customers')} VALUES (?, ?)",
                event.customer_id,
                event.name,
            )

    await store.append("customer-789", [_alice("789")])
    await store.append("customer-790", [_alice("790").model_copy(update={"name": "Bob"})])
    path = str(tmp_path / "read.db")
    sink = SqliteSink(path)
    async with ProjectionRunner(store, sink, [Customers()]) as runner:
        await runner.wait_until(await store.head_position(), timeout=10)
        await store.forget("customer:789")
        await runner.rebuild("customers")
        await runner.wait_until(await store.head_position(), timeout=10)
    await sink.aclose()
    with sqlite3.connect(path) as db:
        rows = sorted(db.execute("SELECT id, name FROM customers").fetchall())
    assert rows == [("789", FORGOTTEN), ("790", "Bob")]
    assert b"Alice" not in (tmp_path / "read.db").read_bytes()


def test_declaring_personal_data_wrongly_is_refused() -> None:
    class NotText(BaseEvent):
        __data_subject__ = "customer:{customer_id}"
        customer_id: str
        age: Annotated[int, Personal]

    class NoSubject(BaseEvent):
        name: Annotated[str, Personal]

    class SubjectFromSecret(BaseEvent):
        __data_subject__ = "customer:{email}"
        email: Annotated[str, Personal]

    class SubjectFromNothing(BaseEvent):
        __data_subject__ = "customer:{customer_id}"
        name: Annotated[str, Personal]

    for event_type, message in [
        (NotText, "is not a str"),
        (NoSubject, "no __data_subject__"),
        (SubjectFromSecret, "a personal field"),
        (SubjectFromNothing, "names no field 'customer_id'"),
    ]:
        with pytest.raises(EventRegistrationError, match=message):
            personal_fields(event_type)


async def test_jetstream_keys_are_purged_and_the_log_holds_no_plaintext(nats_url: str) -> None:
    from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore, JetStreamKeyStore

    name = f"P{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"p.{name}", storage="memory")
    inner = await JetStreamEventStore.connect(nats_url, REGISTRY, config=config)
    keys = JetStreamKeyStore(inner.nc, bucket=f"K{name}", storage="memory")
    await keys.start()
    store = PrivateEventStore(inner, keys, key_cache_seconds=0)
    js = inner.nc.jetstream()
    try:
        await store.append("customer-789", [_alice()])
        raw = await js.get_last_msg(name, f"p.{name}.customer.customer-789")
        assert b"Alice" not in raw.data
        assert b"gold" in raw.data
        assert (await anext(store.read_stream("customer-789"))).event == _alice()

        await store.forget("customer:789")
        assert (await anext(store.read_stream("customer-789"))).event.name == FORGOTTEN
        # A new process with a new key store sees the same: the key is gone from the bucket.
        fresh = JetStreamKeyStore(inner.nc, bucket=f"K{name}", storage="memory")
        await fresh.start()
        assert await fresh.existing_key("customer:789") is None
        with pytest.raises(SubjectForgotten):
            await fresh.key_for("customer:789")
        kv = await js.key_value(f"K{name}")
        history = await kv.history("s." + "Y3VzdG9tZXI6Nzg5")
        assert all(not entry.value for entry in history)  # no key bytes left anywhere
    finally:
        await js.delete_stream(name)
        await js.delete_key_value(f"K{name}")
        await inner.aclose()


def test_personal_inside_an_optional_is_personal_and_constraints_are_refused() -> None:
    from pydantic import Field

    class Optional(BaseEvent):
        __data_subject__ = "c:{cid}"
        cid: str
        name: Annotated[str, Personal] | None = None

    assert personal_fields(Optional) is not None
    assert personal_fields(Optional).fields == ("name",)  # type: ignore[union-attr]

    class Constrained(BaseEvent):
        __data_subject__ = "c:{cid}"
        cid: str
        email: Annotated[str, Personal, Field(max_length=40)]

    with pytest.raises(EventRegistrationError, match="constrained"):
        personal_fields(Constrained)


async def test_personal_data_inside_an_optional_is_encrypted(inner: InMemoryEventStore) -> None:
    class Noted(BaseEvent):
        __data_subject__ = "customer:{cid}"
        cid: str
        note: Annotated[str, Personal] | None = None

    inner.registry.register(Noted)
    store = PrivateEventStore(inner, InMemoryKeyStore(), key_cache_seconds=0)
    await store.append("customer-1", [Noted(cid="1", note="Alice"), Noted(cid="1")])
    stored = [r.event.note async for r in inner.read_stream("customer-1")]
    assert stored[0] is not None
    assert "Alice" not in stored[0]
    assert stored[1] is None
    await store.forget("customer:1")
    assert [r.event.note async for r in store.read_stream("customer-1")] == [FORGOTTEN, None]


@pytest.mark.parametrize("subject", ["", "x" * 257, "customer:\n1"])
async def test_unusable_subjects_are_refused_before_anything_is_stored(
    store: PrivateEventStore, subject: str
) -> None:
    from eventtape import InvalidArgument

    if subject:  # the template "customer:{customer_id}" never yields an empty subject
        event = _alice().model_copy(update={"customer_id": subject.removeprefix("customer:")})
        with pytest.raises(InvalidArgument):
            await store.append("customer-x", [event])
    with pytest.raises(InvalidArgument):
        await store.forget(subject)
    assert await store.head_position() == 0


async def test_a_forget_racing_a_key_creation_stays_in_force(nats_url: str) -> None:
    import nats

    from eventtape.stores.jetstream import JetStreamKeyStore

    nc = await nats.connect(nats_url)
    bucket = f"R{uuid4().hex[:8]}"
    try:
        maker, forgetter = (JetStreamKeyStore(nc, bucket=bucket, storage="memory") for _ in "ab")
        await maker.start()
        await forgetter.start()
        looked_up = maker._get

        async def stale_lookup(*args: Any) -> bytes | None:
            maker._get = looked_up  # type: ignore[method-assign]
            await forgetter.forget("customer:race")  # lands between lookup and create
            return None

        maker._get = stale_lookup  # type: ignore[method-assign]
        with pytest.raises(SubjectForgotten):
            await maker.key_for("customer:race")
        assert await maker.existing_key("customer:race") is None
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


async def test_dcb_appends_and_reads_go_through_the_private_store(
    store: PrivateEventStore, inner: InMemoryEventStore
) -> None:
    from eventtape import Query, tagged

    await store.dcb_append([tagged(_alice(), "customer:789")])
    [stored] = [r async for r in inner.read_all()]
    assert "Alice" not in stored.event.model_dump_json()
    read = await store.dcb_read(Query.of([CustomerRegistered], ["customer:789"]))
    assert read.events[0].record.event == _alice()
    assert "customer:789" in read.events[0].tags
    await store.forget("customer:789")
    read = await store.dcb_read(Query.of([CustomerRegistered], ["customer:789"]))
    assert read.events[0].record.event.name == FORGOTTEN  # type: ignore[attr-defined]
    with pytest.raises(SubjectForgotten):
        await store.dcb_append([tagged(_alice(), "customer:789")])
