"""Snapshots of aggregates with personal data: sealed, unreadable once a subject is forgotten."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import uuid4

import pytest

from eventtape import (
    Aggregate,
    EventRegistry,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidArgument,
    Repository,
    applies,
)
from eventtape import Event as BaseEvent
from eventtape.privacy import (
    FORGOTTEN,
    InMemoryKeyStore,
    Personal,
    PrivateEventStore,
    PrivateSnapshotStore,
)


class MemberJoined(BaseEvent):
    __data_subject__ = "customer:{customer_id}"

    customer_id: str
    name: Annotated[str, Personal]
    email: Annotated[str, Personal]
    tier: str


class PointsEarned(BaseEvent):
    points: int


REGISTRY = EventRegistry([MemberJoined, PointsEarned])
SECRETS = (b"Alice Liddell", b"alice@example.org", b"Bob Builder")


class Club(Aggregate):
    """A club: members' names (personal) and points (not)."""

    members: dict[str, str]
    tiers: dict[str, str]
    points: int

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.members, self.tiers, self.points = {}, {}, 0

    def join(self, customer_id: str, name: str, email: str, tier: str) -> None:
        self.record(MemberJoined(customer_id=customer_id, name=name, email=email, tier=tier))

    def earn(self, points: int) -> None:
        self.record(PointsEarned(points=points))

    @applies(MemberJoined)
    def _joined(self, event: MemberJoined) -> None:
        self.members[event.customer_id] = f"{event.name} <{event.email}>"
        self.tiers[event.customer_id] = event.tier

    @applies(PointsEarned)
    def _earned(self, event: PointsEarned) -> None:
        self.points += event.points


class Backend:
    """A place for events and snapshots, and a way to read a stored snapshot's raw bytes."""

    def __init__(self, events: Any, snapshots: Any, raw: Any) -> None:
        self.events, self.snapshots, self.raw = events, snapshots, raw


@pytest.fixture(params=["memory", "jetstream"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        snapshots = InMemorySnapshotStore()

        async def raw_memory(stream_id: str) -> bytes:
            found = snapshots._snapshots.get(stream_id)
            return b"" if found is None else found[1].encode()

        yield Backend(InMemoryEventStore(REGISTRY), snapshots, raw_memory)
        return
    from eventtape.stores.jetstream import (
        JetStreamConfig,
        JetStreamEventStore,
        JetStreamSnapshotStore,
    )

    nats_url = request.getfixturevalue("nats_url")
    name = f"S{uuid4().hex[:10]}"
    config = JetStreamConfig(stream=name, subject_prefix=f"ps.{name}", storage="memory")
    events = await JetStreamEventStore.connect(nats_url, REGISTRY, config=config)
    js_snapshots = await JetStreamSnapshotStore.open(
        events.nc, stream=f"{name}_SNAP", subject_prefix=f"pss.{name}", storage="memory"
    )
    js = events.nc.jetstream()

    async def raw_jetstream(stream_id: str) -> bytes:
        try:
            message = await js.get_last_msg(f"{name}_SNAP", f"pss.{name}.club.{stream_id}")
        except Exception:
            return b""
        return bytes(message.data)

    try:
        yield Backend(events, js_snapshots, raw_jetstream)
    finally:
        await js_snapshots.aclose()
        await js.delete_stream(f"{name}_SNAP")
        await js.delete_stream(name)
        await events.aclose()


async def _club(backend: Backend) -> tuple[PrivateEventStore, Repository[Club]]:
    store = PrivateEventStore(backend.events, InMemoryKeyStore(), key_cache_seconds=0)
    snapshots = PrivateSnapshotStore(backend.snapshots, store)
    repository = Repository(store, Club, snapshots=snapshots, snapshot_policy=EveryNEvents(3))
    club = Club("chess")
    club.join("789", "Alice Liddell", "alice@example.org", "gold")
    club.join("790", "Bob Builder", "bob@example.org", "silver")
    club.earn(10)
    await repository.save(club)  # version 3: a snapshot is taken
    return store, repository


async def test_a_snapshot_holds_no_plaintext_and_forget_masks_the_load(backend: Backend) -> None:
    store, repository = await _club(backend)
    raw = await backend.raw("club-chess")
    assert raw, "a snapshot was taken"
    for secret in SECRETS:
        assert secret not in raw
    loaded = await repository.load("chess")
    assert loaded.members["789"] == "Alice Liddell <alice@example.org>"
    assert loaded.points == 10

    await store.forget("customer:789")

    raw_after = await backend.raw("club-chess")
    for secret in SECRETS:
        assert secret not in raw_after
    loaded = await repository.load("chess")
    assert loaded.members["789"] == f"{FORGOTTEN} <{FORGOTTEN}>"
    assert loaded.tiers == {"789": "gold", "790": "silver"}  # non-personal state intact
    assert loaded.points == 10
    assert loaded.version == 3
    # The other member, in the same (now unreadable) snapshot, is rebuilt from events.
    assert loaded.members["790"] == "Bob Builder <bob@example.org>"


async def test_the_snapshot_is_used_while_nobody_is_forgotten(backend: Backend) -> None:
    store, repository = await _club(backend)
    # Alter the log's copy behind the snapshot's back: a load from the snapshot does not see it.
    loaded = await repository.load("chess")
    assert loaded.version == 3
    snapshots = PrivateSnapshotStore(backend.snapshots, store)
    snapshot = await snapshots.load("club-chess")
    assert snapshot is not None
    assert snapshot.state["members"]["789"] == "Alice Liddell <alice@example.org>"
    await store.forget("customer:790")
    assert await snapshots.load("club-chess") is None  # any subject forgotten: unreadable


async def test_no_new_snapshot_of_a_stream_holding_a_forgotten_subject(backend: Backend) -> None:
    store, repository = await _club(backend)
    stale = await repository.load("chess")  # loaded before the forget: holds plaintext
    await store.forget("customer:789")
    stale.earn(1)
    stale.earn(1)
    stale.earn(1)
    await repository.save(stale)  # version 6: the policy asks for a snapshot
    raw = await backend.raw("club-chess")
    for secret in SECRETS:
        assert secret not in raw
    loaded = await repository.load("chess")
    assert (loaded.version, loaded.points) == (6, 13)
    assert loaded.members["789"] == f"{FORGOTTEN} <{FORGOTTEN}>"


async def test_snapshots_of_streams_without_personal_data_stay_plain() -> None:
    events = InMemoryEventStore(REGISTRY)
    store = PrivateEventStore(events, InMemoryKeyStore())
    plain = InMemorySnapshotStore()
    repository = Repository(
        store, Club, snapshots=PrivateSnapshotStore(plain, store), snapshot_policy=EveryNEvents(2)
    )
    club = Club("go")
    club.earn(1)
    club.earn(2)
    await repository.save(club)
    snapshot = await plain.load("club-go")
    assert snapshot is not None
    assert snapshot.state["points"] == 3


async def test_a_private_store_refuses_a_plain_snapshot_store() -> None:
    store = PrivateEventStore(InMemoryEventStore(REGISTRY), InMemoryKeyStore())
    with pytest.raises(InvalidArgument, match="PrivateSnapshotStore"):
        Repository(store, Club, snapshots=InMemorySnapshotStore())
    with pytest.raises(InvalidArgument):
        PrivateSnapshotStore(InMemorySnapshotStore(), InMemoryEventStore(REGISTRY))  # type: ignore[arg-type]


async def test_an_altered_sealed_snapshot_is_ignored_not_trusted() -> None:
    events = InMemoryEventStore(REGISTRY)
    store = PrivateEventStore(events, InMemoryKeyStore())
    plain = InMemorySnapshotStore()
    snapshots = PrivateSnapshotStore(plain, store)
    repository = Repository(store, Club, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
    club = Club("x")
    club.join("1", "Alice Liddell", "alice@example.org", "gold")
    await repository.save(club)
    stored = await plain.load("club-x")
    assert stored is not None
    envelope = stored.state["eventtape:sealed:v1"]
    envelope["state"] = envelope["state"][:-4] + "AAAA"
    await plain.save(stored.replace(version=stored.version))
    assert await snapshots.load("club-x") is None
    assert (await repository.load("x")).members["1"] == "Alice Liddell <alice@example.org>"
