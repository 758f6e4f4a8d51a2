"""Tamper evidence against hostile or careless users: forged messages of every odd shape, racing
writers, retries, a re-created stream, odd event fields, odd command-line arguments.

A forged message must be reported for its own stream only (never crash ``verify``, never make
another stream's report wrong); racing and retried appends must keep the chain whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from eventtape import (
    DuplicateEventId,
    Event,
    EventRegistry,
    EventtapeError,
    HashChain,
    InMemoryEventStore,
    Metadata,
    NewEvent,
    StoreUnavailable,
    Verification,
    verify,
)
from eventtape._core.chain import UNKEYED, ChainReport, StoredLink, verify_links
from eventtape.cli import main
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, OrderCancelled

KEY = b"h" * 32


def _only(verification: Verification, stream_id: str) -> ChainReport:
    (report,) = [r for r in verification.streams if r.stream_id == stream_id]
    return report


@contextlib.asynccontextmanager
async def _jetstream(
    url: str, *, chain: HashChain | None = UNKEYED, name: str | None = None
) -> AsyncIterator[JetStreamEventStore]:
    name = name or f"H{uuid4().hex[:12]}"
    config = JetStreamConfig(
        stream=name, subject_prefix=f"h.{name}", deny_delete=False, deny_purge=False
    )
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config, chain=chain)
    try:
        yield store
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def _raw(url: str) -> AsyncIterator[nats.aio.client.Client]:
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


async def _last_body(store: JetStreamEventStore, stream_id: str) -> dict[str, Any]:
    js = store.nc.jetstream()
    message = await js.get_last_msg(
        store.config.stream, store.config.subject(stream_id.partition("-")[0], stream_id)
    )
    body: dict[str, Any] = json.loads(message.data)
    return body


# -- forged messages of every shape ----------------------------------------------------------


def _forge(kind: str, body: dict[str, Any]) -> bytes:
    """A forged version 2 of ``order-2`` (``body`` is its genuine version 1)."""
    event = dict(body["events"][0], id=str(uuid4()))
    forged: Any = dict(body, version=2, events=[event])
    match kind.split(":", 1):
        case ["link", value]:
            event["link"] = json.loads(value)
        case ["version", value]:
            forged["version"] = json.loads(value)
        case ["events", value]:
            forged["events"] = json.loads(value)
        case ["headers", value]:
            forged["headers"] = json.loads(value)
        case ["meta", value]:
            forged["actor"] = json.loads(value)
        case ["schema", value]:
            event["schema"] = json.loads(value)
        case ["type", value]:
            event["type"] = json.loads(value)
        case ["id", value]:
            event["id"] = json.loads(value)
        case ["no-data"]:
            del event["data"]
        case ["other-stream"]:
            forged["stream"] = "order-1"
        case ["not-an-object"]:
            forged = [forged]
        case ["huge"]:
            event["data"] = {"reason": "x" * 900_000}
        case ["bad-utf8"]:
            return b'{"stream": "order-2", "version": 2, "events": [{"\xff\xfe": 1}]}'
        case _:
            raise AssertionError(kind)
    return json.dumps(forged).encode()


FORGERIES = [
    "link:5",
    'link:"zz"',
    'link:"' + "\\u00e9" * 64 + '"',  # non-ASCII: hmac.compare_digest refuses such strings
    'link:"' + "AB" * 32 + '"',
    'version:"2"',
    "version:-5",
    "version:18446744073709551617",
    "version:true",
    "events:[]",
    "events:[1]",
    'headers:["a"]',
    'headers:"a"',
    'headers:{"a": 1}',
    'headers:{"a": null}',
    "meta:5",
    'meta:["admin"]',
    "schema:-1",
    "schema:4294967296",
    "schema:1.5",
    'schema:"1"',
    "schema:true",
    "type:5",
    "type:null",
    "id:5",
    'id:"not-a-uuid"',
    "id:null",
    "no-data",
    "other-stream",
    "not-an-object",
    "huge",
    "bad-utf8",
]


@pytest.mark.parametrize("kind", FORGERIES)
async def test_a_forged_message_breaks_its_own_stream_only(nats_url: str, kind: str) -> None:
    """Whatever its shape, a forged append is a broken link of its stream: no crash, no
    false "ok" (a schema ``1.5``, ``"1"`` or ``true`` is not the ``1`` that was linked), and
    the other streams verify as before."""
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await store.append("order-1", [OrderCancelled(reason="a")])
        await store.append("order-2", [OrderCancelled(reason="b")], metadata=Metadata(actor="u"))
        genuine = await _last_body(store, "order-2")
        js = nc.jetstream()
        subject = store.config.subject("order", "order-2")
        if kind.startswith("schema"):
            # In place of the genuine event, a copy differing only in the schema's JSON type:
            # only strict parsing tells it from the event that was linked.
            info = await js.stream_info(store.config.stream)
            await js.delete_msg(store.config.stream, info.state.last_seq)
            forged = json.loads(_forge(kind, genuine))
            forged["version"], forged["events"][0]["id"] = 1, genuine["events"][0]["id"]
            await js.publish(subject, json.dumps(forged).encode())
        else:
            await js.publish(subject, _forge(kind, genuine))
        await store.append("order-1", [OrderCancelled(reason="c")], expected_version=1)
        result = await verify(store)
        assert _only(result, "order-1").ok
        assert _only(result, "order-1").head_version == 2
        broken = _only(result, "order-2").broken
        assert broken is not None, kind
        if kind.startswith("schema"):
            assert broken.kind == "unreadable"
        assert not result.ok
        single = await verify(store, "order-2")
        assert _only(single, "order-2").broken is not None


@pytest.mark.parametrize(
    "kind", ['link:"' + "\\u00e9" * 64 + '"', 'headers:{"a": 1}', "schema:-1", "id:5", "meta:5"]
)
async def test_the_verify_command_reports_a_forged_message_without_a_traceback(
    nats_url: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await store.append("order-2", [OrderCancelled(reason="b")])
        forged = _forge(kind, await _last_body(store, "order-2"))
        await nc.jetstream().publish(store.config.subject("order", "order-2"), forged)
        args = _cli(store, nats_url)
        for command in (["verify", "--all"], ["--json", "verify", "order-2"]):
            assert await asyncio.to_thread(main, [*args, *command]) == 1
            captured = capsys.readouterr()
            assert "Traceback" not in captured.err
        json.loads(captured.out)


async def test_an_append_after_a_forged_tail_fails_clearly_or_works(nats_url: str) -> None:
    """The store reads the tail's link to chain from it: a corrupt one is our error."""
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await store.append("order-2", [OrderCancelled(reason="b")])
        genuine = await _last_body(store, "order-2")
        subject = store.config.subject("order", "order-2")
        js = nc.jetstream()
        for kind in FORGERIES:
            async with _jetstream(nats_url, name=store.config.stream) as fresh:
                await js.publish(subject, _forge(kind, genuine))
                with contextlib.suppress(EventtapeError):  # ours, or it works
                    await fresh.append("order-2", [OrderCancelled(reason="after")])
        # A forged Eventtape-Last-Version header is our error too, not a ValueError.
        await js.publish(
            subject, _forge("link:5", genuine), headers={"Eventtape-Last-Version": "x"}
        )
        async with _jetstream(nats_url, name=store.config.stream) as fresh:
            with contextlib.suppress(EventtapeError):
                await fresh.append("order-2", [OrderCancelled(reason="after")])
        # A tail whose link is not hex text cannot be chained from: our error, nothing stored.
        for link in ('"zz"', "5"):
            await js.publish(subject, _forge(f"link:{link}", genuine))
            async with _jetstream(nats_url, name=store.config.stream) as fresh:
                before = (await js.stream_info(store.config.stream)).state.last_seq
                with pytest.raises(EventtapeError, match="corrupt link"):
                    await fresh.append("order-2", [OrderCancelled(reason="after")])
                assert (await js.stream_info(store.config.stream)).state.last_seq == before


# -- the command line ---------------------------------------------------------------------


def _cli(store: JetStreamEventStore, url: str) -> list[str]:
    return [
        "--url",
        url,
        "--stream",
        store.config.stream,
        "--subject-prefix",
        store.config.subject_prefix,
    ]


async def test_the_verify_command_with_hostile_arguments(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await store.append("order-1", [OrderCancelled(reason="a")])
        args = _cli(store, nats_url)
        for key_file in (str(tmp_path), "/dev/zero", str(empty)):
            code = await asyncio.to_thread(main, [*args, "verify", "--all", "--key-file", key_file])
            assert code == 2, key_file
        for stream_id in ("order-\x1b[2J", "", "-", "order-1 order-2", "x" * 10_000, "é-ü"):
            code = await asyncio.to_thread(main, [*args, "verify", "--", stream_id])
            assert code in (2, 3), stream_id
        assert "Traceback" not in capsys.readouterr().err
        # A forged message on a subject naming a stream with a terminal escape in it.
        evil = "order-\x1b]0;pwned\x07"
        await nc.jetstream().publish(
            f"{store.config.subject_prefix}.order.{evil}",
            json.dumps({"stream": evil, "version": 1, "events": [{"id": "\x1b[31m"}]}).encode(),
        )
        assert await asyncio.to_thread(main, [*args, "verify", "--all"]) == 1
        printed = capsys.readouterr()
        assert "\x1b" not in printed.out
        assert "\x07" not in printed.out
        assert "Traceback" not in printed.err
        assert await asyncio.to_thread(main, [*args, "--json", "verify", "--all"]) == 1
        found = json.loads(capsys.readouterr().out)
        assert {s["stream_id"] for s in found["streams"]} == {"order-1", evil}


# -- stale caches, races, retries ------------------------------------------------------------


async def test_an_append_after_the_stream_was_re_created_elsewhere_keeps_the_chain(
    nats_url: str,
) -> None:
    """A store caches the tail's link; another process deletes and re-creates the JetStream
    stream and writes the same stream id up to the same version: the cached link is stale."""
    async with _jetstream(nats_url) as first:
        name = first.config.stream
        await first.append("order-1", [OrderCancelled(reason="a")])
        await first.append("order-1", [OrderCancelled(reason="b")])
        await first.nc.jetstream().delete_stream(name)
        async with _jetstream(nats_url, name=name) as second:
            await second.append("other-1", [OrderCancelled(reason="shift the sequences")])
            await second.append("order-1", [OrderCancelled(reason="x")])
            await second.append("order-1", [OrderCancelled(reason="y")])
            # Same version (2) as `first` cached, at another sequence.
            await first.append("order-1", [OrderCancelled(reason="c")])
            result = await verify(second)
            assert result.ok, result
            assert _only(result, "order-1").head_version == 3


@pytest.mark.parametrize("key", [None, KEY], ids=["unkeyed", "keyed"])
async def test_racing_writers_with_any_keep_the_chain(nats_url: str, key: bytes | None) -> None:
    """Two stores (two connections) append to the same streams with ANY, and DCB appends
    race them: whoever wins each round, every link chains from the event really before it."""
    chain = HashChain(key)
    async with (
        _jetstream(nats_url, chain=chain) as first,
        _jetstream(nats_url, chain=chain, name=first.config.stream) as second,
    ):

        async def writer(store: JetStreamEventStore, tag: str) -> None:
            for round_ in range(25):
                for stream_id in ("order-1", "order-2"):
                    await store.append(
                        stream_id,
                        [OrderCancelled(reason=f"{tag}{round_}")] * (1 + round_ % 3),
                        metadata=Metadata(actor=f"user:{tag}"),
                    )
                if round_ % 5 == 0:
                    await store.dcb_append([OrderCancelled(reason=f"dcb {tag}{round_}")])

        await asyncio.gather(writer(first, "a"), writer(second, "b"), writer(first, "c"))
        result = await verify(second)
        assert result.ok, [r for r in result.streams if not r.ok]
        for stream_id in ("order-1", "order-2"):
            # Per writer 25 rounds of 1, 2, 3 events: 9 + 16 + 24.
            assert _only(result, stream_id).head_version == 3 * 49


_ROOT = str(Path(__file__).resolve().parent.parent)
_WRITER = """
import asyncio, sys
from eventtape import HashChain
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, OrderCancelled

async def run(url, name):
    config = JetStreamConfig(stream=name, subject_prefix=f"h.{name}", deny_delete=False,
                             deny_purge=False)
    store = await JetStreamEventStore.connect(url, REGISTRY, config=config,
                                              chain=HashChain(b"h" * 32))
    for round_ in range(40):
        await store.append("order-1", [OrderCancelled(reason=f"p{round_}")] * (1 + round_ % 2))
        if round_ % 8 == 0:
            await store.dcb_append([OrderCancelled(reason="dcb")])
    await store.aclose()

asyncio.run(run(sys.argv[1], sys.argv[2]))
"""


async def test_racing_processes_keep_a_keyed_chain(nats_url: str) -> None:
    """Two other processes and this one append to one stream with ANY at once."""
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store:
        await store.append("order-1", [OrderCancelled(reason="start")])
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WRITER, nats_url, store.config.stream, cwd=_ROOT
            )
            for _ in range(2)
        ]
        for round_ in range(40):
            await store.append("order-1", [OrderCancelled(reason=f"t{round_}")])
        assert [await process.wait() for process in processes] == [0, 0]
        result = await verify(store)
        assert result.ok, [r for r in result.streams if not r.ok]
        # 1 + 40 here, and 20 * 1 + 20 * 2 in each other process.
        assert _only(result, "order-1").head_version == 1 + 40 + 2 * 60


@pytest.mark.parametrize("expected", ["any", "exact"])
async def test_a_retry_after_a_lost_ack_is_stored_once_and_chained(
    nats_url: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store:
        await store.append("order-1", [OrderCancelled(reason="a")])
        appender = store._appender
        real = appender._publish

        async def lose_the_ack(*args: Any, **kwargs: Any) -> dict[str, Any]:
            await real(*args, **kwargs)  # stored...
            raise StoreUnavailable("no acknowledgement (injected)")  # ...but never told

        monkeypatch.setattr(appender, "_publish", lose_the_ack)
        events = [NewEvent(OrderCancelled(reason=f"r{n}"), uuid4()) for n in range(3)]
        condition: Any = {"expected_version": 1} if expected == "exact" else {}
        with pytest.raises(StoreUnavailable):
            await store.append("order-1", events, **condition)
        monkeypatch.undo()
        async with _jetstream(nats_url, chain=HashChain(KEY), name=store.config.stream) as other:
            await other.append("order-1", [OrderCancelled(reason="between")])
        for retrier in (store, store):  # twice: a retry of a retry is the same
            result = await retrier.append("order-1", events, **condition)
            assert (result.first_version, result.version) == (2, 4)
        await store.append("order-1", [OrderCancelled(reason="after")])
        report = _only(await verify(store), "order-1")
        assert report.ok, report
        assert report.head_version == 6


# -- odd event fields in memory ---------------------------------------------------------------


class _Point(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: float
    labels: frozenset[str]


class _Odd(Event):
    tags: frozenset[int]
    names: set[str]
    point: _Point | None
    when: datetime
    amount: Decimal
    ratio: float
    nested: dict[str, tuple[int, ...]]


_ODD = EventRegistry()
_ODD.register(_Odd)


def _odd(seed: int) -> _Odd:
    """Sets whose iteration order a JSON round trip does not keep: built in a large table,
    then shrunk, so colliding members sit in another order than a fresh set would hold."""
    tags = set(range(256))
    tags.intersection_update({1, 8, 9, 16, 17, 24, seed % 200 + 30})
    names = {f"n{i}" for i in range(128)}
    names.intersection_update({f"n{(seed * 7 + i) % 128}" for i in range(6)})
    return _Odd(
        tags=frozenset(tags) if seed % 2 else tags,  # type: ignore[arg-type]
        names=names,
        point=_Point(x=seed / 3, labels=frozenset(names)) if seed % 3 else None,
        when=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        amount=Decimal("1.10E+3"),
        ratio=0.1 + 0.2,
        nested={"b": (1, 2), "a": ()},
    )


@pytest.mark.parametrize("round_trip", [True, False])
@pytest.mark.parametrize("key", [None, KEY], ids=["unkeyed", "keyed"])
async def test_an_untouched_memory_store_with_sets_and_odd_values_verifies_clean(
    round_trip: bool, key: bytes | None
) -> None:
    store = InMemoryEventStore(_ODD, round_trip=round_trip, chain=HashChain(key))
    for seed in range(60):
        await store.append(f"odd-{seed % 7}", [_odd(seed), _odd(seed + 100)])
    result = await verify(store)
    assert result.ok, [r for r in result.streams if not r.ok]
    assert result.events == 120
    # ...and a changed set is still seen.
    records = store._streams["odd-3"]
    records[1] = records[1]._replace(event=_odd(999))
    broken = _only(await verify(store), "odd-3").broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("altered", 2)


# -- upcasters and erasure -------------------------------------------------------------------


class _PriceV1(Event):
    __event_type__ = "PriceSet"
    price: int


class _PriceV2(Event):
    __event_type__ = "PriceSet"
    __event_version__ = 2
    amount: str


async def test_links_cover_stored_data_not_upcast_data(nats_url: str) -> None:
    """Old-schema events written raw, read through an upcaster: the chain is what was stored."""
    old, new = EventRegistry([_PriceV1]), EventRegistry([_PriceV2])

    @new.upcaster("PriceSet", from_version=1)
    def cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": f"{data['price'] / 100:.2f}"}

    async with _jetstream(nats_url, chain=HashChain(KEY)) as first:
        config = first.config
        writer = await JetStreamEventStore.open(first.nc, old, config=config, chain=HashChain(KEY))
        await writer.append("price-1", [_PriceV1(price=1205), _PriceV1(price=99)])
        reader = await JetStreamEventStore.open(first.nc, new, config=config, chain=HashChain(KEY))
        read = [record.event async for record in reader.read_stream("price-1")]
        assert read == [_PriceV2(amount="12.05"), _PriceV2(amount="0.99")]
        await reader.append("price-1", [_PriceV2(amount="1.00")], expected_version=2)
        for store in (reader, writer):
            report = _only(await verify(store), "price-1")
            assert report.ok, report
            assert report.head_version == 3


async def test_a_private_store_over_jetstream_verifies_before_and_after_forget(
    nats_url: str,
) -> None:
    from eventtape.privacy import InMemoryKeyStore, PrivateEventStore
    from tests.test_privacy import REGISTRY as PRIVATE
    from tests.test_privacy import _alice

    async with _jetstream(nats_url, chain=HashChain(KEY)) as plain:
        inner = await JetStreamEventStore.open(
            plain.nc, PRIVATE, config=plain.config, chain=HashChain(KEY)
        )
        store = PrivateEventStore(inner, InMemoryKeyStore(), key_cache_seconds=0)
        await store.append("customer-789", [_alice()])
        await store.append("customer-1", [_alice("1")])
        await store.append("customer-789", [_alice()], expected_version=1)
        before = await verify(store)
        await store.forget("customer:789")
        await store.append("customer-1", [_alice("1")], expected_version=1)
        after = await verify(store)
        assert before.ok, before
        assert after.ok, after
        assert _only(after, "customer-789") == _only(before, "customer-789")
        assert _only(after, "customer-1").head_version == 2


# -- the canonical encoding has one reading ---------------------------------------------------

# Text rich in what could confuse a length-prefixed encoding: the separator, the "none" mark,
# digits (a value may begin with what looks like a length), multi-byte and astral characters.
_TRICKY = st.text(
    st.sampled_from(["~", ":", "0", "1", "9", "a", "é", "€", "😀", "\u0301", " "])
    | st.characters(blacklist_categories=("Cs",)),  # a lone surrogate is no metadata
    max_size=8,
)


def _parse_append_part(encoded: bytes) -> tuple[object, ...]:
    """The inverse of :meth:`HashChain.append_part`: its output has exactly one reading."""
    text, at = encoded.decode(), 0

    def item(none_allowed: bool) -> str | None:
        nonlocal at
        if none_allowed and text[at] == "~":
            at += 1
            return None
        colon = text.index(":", at)
        length = int(text[at:colon])
        assert text[at:colon] == str(length)  # canonical digits, no sign, no padding
        at = colon + 1 + length
        return text[colon + 1 : at]

    stream_id, actor, causation, correlation = (
        item(False),
        item(True),
        item(True),
        item(True),
    )
    colon = text.index(":", at)
    count, at = int(text[at:colon]), colon + 1
    headers = {}
    for _ in range(count):
        name = item(False)
        headers[name] = item(False)
    assert at == len(text)
    return stream_id, actor, causation, correlation, headers


@settings(max_examples=300, deadline=None)
@given(
    stream_id=_TRICKY,
    actor=_TRICKY | st.none(),
    causation=_TRICKY | st.none(),
    correlation=_TRICKY | st.none(),
    headers=st.dictionaries(_TRICKY, _TRICKY, max_size=4),
)
def test_the_shared_part_of_a_link_has_exactly_one_reading(
    stream_id: str,
    actor: str | None,
    causation: str | None,
    correlation: str | None,
    headers: dict[str, str],
) -> None:
    """No two (stream, actor, causation, correlation, headers) share an encoding: every
    encoding decodes back to the one tuple that made it."""
    encoded = HashChain.append_part(stream_id, actor, causation, correlation, headers)
    assert _parse_append_part(encoded) == (stream_id, actor, causation, correlation, headers)


async def test_a_retried_append_of_events_with_sets_is_the_original_not_a_duplicate() -> None:
    """The memory store compared a retry's JSON with its stored copy's: sets broke it."""
    store = InMemoryEventStore(_ODD)
    for seed in range(40):
        events = [NewEvent(_odd(seed), uuid4())]
        first = await store.append(f"odd-{seed}", events)
        assert await store.append(f"odd-{seed}", events) == first
        with pytest.raises(DuplicateEventId):
            await store.append(f"odd-{seed}", [NewEvent(_odd(seed + 1), events[0].event_id)])
    assert (await verify(store)).ok


async def test_an_empty_store_verifies_clean(
    nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """nats-server reports sequence 0 as deleted in an empty stream: it is not a removal."""
    async with _jetstream(nats_url) as store:
        result = await verify(store)
        assert (result.ok, result.streams, result.removed_messages) == (True, (), ())
        args = _cli(store, nats_url)
        assert await asyncio.to_thread(main, [*args, "verify", "--all"]) == 0
        assert "REMOVED" not in capsys.readouterr().out
    empty = InMemoryEventStore(REGISTRY)
    assert (await verify(empty)).ok


@pytest.mark.parametrize("where", ["zzz.order-1", "order.x.order-1", "order-1"])
async def test_a_message_beside_a_streams_subject_is_reported_under_its_own(
    nats_url: str, where: str
) -> None:
    """The store's subjects take any depth: a genuine append replayed (or garbage published)
    on another subject ending in a stream's id is not that stream's history."""
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store, _raw(nats_url) as nc:
        await store.append("order-1", [OrderCancelled(reason="a")])
        genuine = json.dumps(await _last_body(store, "order-1")).encode()
        for body in (genuine, b"garbage"):
            await nc.jetstream().publish(f"{store.config.subject_prefix}.{where}", body)
        result = await verify(store)
        assert _only(result, "order-1").ok
        assert _only(result, "order-1") == _only(await verify(store, "order-1"), "order-1")
        broken = _only(result, f"{store.config.subject_prefix}.{where}").broken
        assert broken is not None
        assert broken.kind == "unreadable"
        assert not result.ok


@pytest.mark.parametrize(
    "odd", [{"link": "é" * 64}, {"schema": -1}, {"schema": 2**32}, {"type_name": "\ud800"}]
)
async def test_verify_links_from_any_source_reports_what_it_cannot_check(
    odd: dict[str, Any],
) -> None:
    """A third-party ChainSource may hand over anything: a break, never a crash."""
    chain = HashChain()
    shared = chain.append_part("s-1", None, None, None, {})
    event_id = uuid4()
    link = chain.link(None, 1, event_id, "T", 1, shared, b"{}").hex()
    good = StoredLink("s-1", 1, 1, event_id, "T", 1, None, None, None, {}, b"{}", link)
    bad = dataclasses.replace(good, version=2, position=2, **odd)
    other = dataclasses.replace(good, stream_id="s-2")
    reports = await verify_links([good, bad, other], chain)
    assert [report.stream_id for report in reports] == ["s-1", "s-2"]
    broken = reports[0].broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("unreadable", 2)


class _Numbers(Event):
    x: float
    amount: Decimal
    when: datetime
    text: str
    by_name: dict[str, float]


_NUMBERS = EventRegistry([_Numbers])


@settings(max_examples=150, deadline=None)
@given(
    x=st.floats(),
    amount=st.decimals(allow_nan=False, allow_infinity=False),
    when=st.datetimes(timezones=st.none() | st.timezones()),
    text=st.text(),
    by_name=st.dictionaries(st.text(max_size=3), st.floats(), max_size=3),
    round_trip=st.booleans(),
)
def test_odd_numbers_times_and_text_verify_clean_in_memory(
    x: float,
    amount: Decimal,
    when: datetime,
    text: str,
    by_name: dict[str, float],
    round_trip: bool,
) -> None:
    """NaN, infinities, -0.0, subnormals, huge Decimals, time zones, any text: a store that
    accepted the event verifies clean (the link covers what the verifier re-encodes)."""

    async def check() -> None:
        store = InMemoryEventStore(_NUMBERS, round_trip=round_trip)
        event = _Numbers(x=x, amount=amount, when=when, text=text, by_name=by_name)
        try:
            await store.append("n-1", [event, event])
        except EventtapeError:
            return  # refused (e.g. NaN does not survive the round trip): nothing to verify
        assert (await verify(store)).ok

    asyncio.run(check())


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=300), data=st.binary(max_size=200))
def test_a_keyed_link_is_the_standard_hmac_for_any_key_length(key: bytes, data: bytes) -> None:
    """Keys longer than SHA-256's block (64 bytes) are hashed first, as RFC 2104 says."""
    raw = bytearray(key)
    chain = HashChain(raw)
    raw[:] = b"x" * 16  # the chain copied the key: changing the caller's buffer changes nothing
    event_id = uuid4()
    shared = chain.append_part("s-1", None, None, None, {})
    previous = bytes(32)
    message = b"".join(
        (
            b"eventtape-chain/1\n\x20",
            previous,
            (7).to_bytes(8, "big"),
            event_id.bytes,
            (1).to_bytes(4, "big"),
            b"T",
            (3).to_bytes(4, "big"),
            shared,
            len(data).to_bytes(4, "big"),
            data,
        )
    )
    assert chain.link(previous, 7, event_id, "T", 3, shared, data) == hmac.digest(
        key, message, "sha256"
    )


async def test_a_forged_stream_without_links_shows_as_unchained_even_when_keyed(
    nats_url: str,
) -> None:
    """Not a broken link (old stores look the same), but never hidden: the guide says so."""
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store, _raw(nats_url) as nc:
        await store.append("order-1", [OrderCancelled(reason="a")])
        forged = await _last_body(store, "order-1")
        forged["stream"] = "order-666"
        del forged["events"][0]["link"]
        await nc.jetstream().publish(
            store.config.subject("order", "order-666"), json.dumps(forged).encode()
        )
        report = _only(await verify(store), "order-666")
        assert (report.ok, report.unchained_up_to, report.head_link) == (True, 1, None)
        assert _only(await verify(store), "order-1").unchained_up_to == 0


async def test_a_stream_re_created_to_the_same_sequence_and_version_keeps_the_chain(
    nats_url: str,
) -> None:
    """The worst case of a re-created stream: the same stream id at the very sequence and
    version this store remembers. The server's stream advisories make it forget its tails."""
    async with _jetstream(nats_url) as first:
        name = first.config.stream
        await first.append("order-1", [OrderCancelled(reason="a")])
        async with _raw(nats_url) as nc:
            await nc.jetstream().delete_stream(name)
        async with _jetstream(nats_url, name=name) as second:
            await second.append("order-1", [OrderCancelled(reason="x")])  # sequence 1 again
            for _ in range(200):  # the advisory comes asynchronously
                if not first._appender.links:
                    break
                await asyncio.sleep(0.01)
            await first.append("order-1", [OrderCancelled(reason="c")])
            result = await verify(second)
            assert result.ok, result
            assert _only(result, "order-1").head_version == 2
