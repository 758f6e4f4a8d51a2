"""Tamper evidence: every way of changing a stored history is reported, an untouched one is not.

The JetStream cases tamper for real, with a raw nats client beside the store: delete a message,
publish a forged one, republish one with altered data or actor, purge. The in-memory cases
alter the stored records.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtape import (
    ChainReport,
    HashChain,
    InMemoryEventStore,
    InvalidArgument,
    Metadata,
    NewEvent,
    StreamNotFound,
    Verification,
    verify,
)
from eventtape._core.chain import UNKEYED, StoredLink, verify_links
from eventtape.cli import main
from eventtape.stores.jetstream import JetStreamConfig, JetStreamEventStore
from tests.domain import REGISTRY, ItemAdded, LineItem, OrderCancelled, OrderPaid

KEY = b"k" * 32
META = Metadata(actor="user:1", correlation_id="c-1", headers={"b": "2", "a": "1"})


async def _fill(store: InMemoryEventStore | JetStreamEventStore) -> None:
    """Three streams, single- and multi-event appends, metadata and headers."""
    await store.append("order-1", [OrderPaid(amount=Decimal("1.50"))], metadata=META)
    await store.append(
        "order-1",
        [
            ItemAdded(item=LineItem(sku="s", quantity=2, price=Decimal("3"))),
            OrderCancelled(reason="é"),
        ],
        expected_version=1,
    )
    await store.append("order-2", [OrderCancelled(reason="x")], metadata=Metadata(actor="a"))
    await store.append("order-1", [OrderCancelled(reason="again")], expected_version=3)
    await store.dcb_append([OrderCancelled(reason="dcb")])


def _only(verification: Verification, stream_id: str) -> ChainReport:
    (report,) = [r for r in verification.streams if r.stream_id == stream_id]
    return report


# -- in memory ---------------------------------------------------------------------------


async def test_an_untouched_memory_store_verifies_clean() -> None:
    store = InMemoryEventStore(REGISTRY)
    await _fill(store)
    result = await verify(store)
    assert result.ok
    assert result.events == 6
    report = _only(result, "order-1")
    assert (report.events, report.head_version, report.unchained_up_to) == (4, 4, 0)
    assert report.head_link is not None
    assert len(report.head_link) == 64
    assert (await verify(store, "order-2")).ok


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r._replace(event=OrderCancelled(reason="forged")),
        lambda r: r._replace(actor="admin:evil"),
        lambda r: r._replace(correlation_id="c-2"),
        lambda r: r._replace(headers={"a": "1", "b": "3"}),
        lambda r: r._replace(event_id=uuid4()),
        lambda r: r._replace(event_type="OrderPaid"),
    ],
    ids=["data", "actor", "correlation", "headers", "event-id", "type"],
)
async def test_an_altered_memory_record_is_the_first_broken_link(change: object) -> None:
    store = InMemoryEventStore(REGISTRY)
    await _fill(store)
    records = store._streams["order-1"]
    records[2] = change(records[2])  # type: ignore[operator]
    report = _only(await verify(store, "order-1"), "order-1")
    assert report.broken is not None
    assert (report.broken.kind, report.broken.version) == ("altered", 3)
    assert _only(await verify(store), "order-2").ok  # the others are untouched


async def test_removed_reordered_and_inserted_memory_records_are_reported() -> None:
    store = InMemoryEventStore(REGISTRY)
    await _fill(store)
    records = store._streams["order-1"]
    original = list(records)

    del records[1]
    broken = _only(await verify(store), "order-1").broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("gap", 2)

    records[:] = [original[0], original[2], original[1], original[3]]
    broken = _only(await verify(store), "order-1").broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("gap", 2)

    records[:] = [*original[:2], original[1]._replace(event_id=uuid4()), *original[2:]]
    broken = _only(await verify(store), "order-1").broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("out-of-order", 2)


async def test_an_unkeyed_chain_can_be_recomputed_by_a_writer_a_keyed_one_cannot() -> None:
    """The threat model: without a key, whoever rewrites the log can rewrite the links."""
    for key, detected in ((None, False), (KEY, True)):
        store = InMemoryEventStore(REGISTRY, chain=HashChain(key))
        await store.append("order-1", [OrderCancelled(reason="a"), OrderCancelled(reason="b")])
        records = store._streams["order-1"]
        records[0] = records[0]._replace(event=OrderCancelled(reason="forged"))
        # The forger recomputes every link with what they have: no key.
        forger = InMemoryEventStore(REGISTRY)
        for record in records:
            await forger.append(
                "order-1",
                [NewEvent(record.event, record.event_id)],
                metadata=Metadata(actor=record.actor),
            )
        store._links["order-1"] = forger._links["order-1"]
        assert (await verify(store)).ok is not detected


async def test_a_keyed_chain_fails_with_another_key_or_none() -> None:
    store = InMemoryEventStore(REGISTRY, chain=HashChain(KEY))
    await _fill(store)
    assert (await verify(store)).ok
    for wrong in (HashChain(), HashChain(b"x" * 32)):
        report = _only(await verify(store, chain=wrong), "order-1")
        assert report.broken is not None
        assert (report.broken.kind, report.broken.version) == ("altered", 1)


async def test_a_store_without_the_chain_verifies_as_unchained() -> None:
    store = InMemoryEventStore(REGISTRY, chain=None)
    await _fill(store)
    report = _only(await verify(store), "order-1")
    assert report.ok
    assert report.unchained_up_to == 4
    assert report.head_link is None
    # Where every stream should carry links, an unlinked one is a break.
    strict = await verify(store, require_chain=True)
    assert not strict.ok
    broken = _only(strict, "order-1").broken
    assert broken is not None
    assert (broken.kind, broken.version) == ("unlinked", 1)
    chained = InMemoryEventStore(REGISTRY)
    await _fill(chained)
    assert (await verify(chained, require_chain=True)).ok


async def test_bad_arguments_are_our_errors() -> None:
    store = InMemoryEventStore(REGISTRY)
    with pytest.raises(InvalidArgument):
        HashChain(b"short")
    with pytest.raises(InvalidArgument):
        HashChain("a string key of enough length")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        InMemoryEventStore(REGISTRY, chain="sha256")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await verify(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await verify(store, chain=KEY)  # type: ignore[arg-type]
    with pytest.raises(StreamNotFound):
        await verify(store, "order-none")
    assert "kkkk" not in repr(HashChain(KEY))


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    first=st.tuples(
        _TEXT, _TEXT | st.none(), st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=3)
    ),
    second=st.tuples(
        _TEXT, _TEXT | st.none(), st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=3)
    ),
)
def test_different_metadata_never_share_an_encoding(
    first: tuple[str, str | None, dict[str, str]], second: tuple[str, str | None, dict[str, str]]
) -> None:
    """Moving text between fields (or headers) always changes the hashed message."""
    if first == second:
        return
    a = HashChain.append_part("s-1", first[0], first[1], None, first[2])
    b = HashChain.append_part("s-1", second[0], second[1], None, second[2])
    assert a != b


async def test_verify_links_takes_plain_iterables() -> None:
    chain = HashChain()
    shared = chain.append_part("s-1", None, None, None, {})
    event_id = uuid4()
    link = chain.link(None, 1, event_id, "T", 1, shared, b"{}")
    item = StoredLink("s-1", 1, 1, event_id, "T", 1, None, None, None, {}, b"{}", link.hex())
    (report,) = await verify_links([item], chain)
    assert report.ok
    assert report.head_link == link.hex()


# -- on JetStream, tampered with by a raw client -----------------------------------------


@contextlib.asynccontextmanager
async def _jetstream(
    url: str, *, chain: HashChain | None = UNKEYED, name: str | None = None
) -> AsyncIterator[JetStreamEventStore]:
    name = name or f"C{uuid4().hex[:12]}"
    config = JetStreamConfig(
        stream=name, subject_prefix=f"c.{name}", deny_delete=False, deny_purge=False
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


async def _messages(store: JetStreamEventStore, stream_id: str) -> list[tuple[int, dict]]:  # type: ignore[type-arg]
    """(sequence, body) of each stored message of a stream, read raw."""
    js = store.nc.jetstream()
    subject = store.config.subject(stream_id.partition("-")[0], stream_id)
    found = []
    info = await js.stream_info(store.config.stream)
    for sequence in range(1, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            message = await js.get_msg(store.config.stream, sequence)
            if message.subject == subject:
                found.append((sequence, json.loads(message.data)))
    return found


async def test_an_untouched_jetstream_store_verifies_clean(nats_url: str) -> None:
    async with _jetstream(nats_url) as store:
        await _fill(store)
        result = await verify(store)
        assert result.ok, result
        assert result.events == 6
        assert result.removed_messages == ()
        assert _only(result, "order-1").head_version == 4
        assert (await verify(store, "order-2")).ok


async def test_a_deleted_message_is_a_gap_and_a_removed_message(nats_url: str) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        (_, _), (second, _), _ = await _messages(store, "order-1")
        await nc.jetstream().delete_msg(store.config.stream, second)
        result = await verify(store)
        broken = _only(result, "order-1").broken
        assert broken is not None
        assert (broken.kind, broken.version) == ("gap", 2)
        assert result.removed_messages == ((second, second),)
        assert not result.ok


async def test_a_deleted_last_message_shows_as_removed(nats_url: str) -> None:
    """Truncation leaves every remaining link intact: the store's own gaps tell."""
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        *_, (last, _) = await _messages(store, "order-1")
        await nc.jetstream().delete_msg(store.config.stream, last)
        result = await verify(store)
        assert _only(result, "order-1").ok  # the chain alone cannot see it...
        assert (last, last) in result.removed_messages  # ...the store's gaps do
        assert not result.ok


@pytest.mark.parametrize("field", ["data", "actor", "headers", "type"])
async def test_a_republished_altered_message_is_reported(nats_url: str, field: str) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        *_, (last, body) = await _messages(store, "order-1")
        if field == "data":
            body["events"][0]["data"]["reason"] = "forged"
        elif field == "actor":
            body["actor"] = "admin:evil"
        elif field == "headers":
            body["headers"] = {"a": "1"}
        else:
            body["events"][0]["type"] = "OrderPaid"
        js = nc.jetstream()
        await js.delete_msg(store.config.stream, last)
        subject = store.config.subject("order", "order-1")
        await js.publish(subject, json.dumps(body).encode(), stream=store.config.stream)
        result = await verify(store, "order-1")
        broken = _only(result, "order-1").broken
        assert broken is not None
        assert (broken.kind, broken.version) == ("altered", 4)


async def test_a_forged_message_is_reported(nats_url: str) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        *_, (_, body) = await _messages(store, "order-2")
        forged = dict(body, version=2)
        forged["events"] = [dict(body["events"][0], id=str(uuid4()))]
        subject = store.config.subject("order", "order-2")
        await nc.jetstream().publish(subject, json.dumps(forged).encode())
        broken = _only(await verify(store, "order-2"), "order-2").broken
        assert broken is not None
        assert (broken.kind, broken.version) == ("altered", 2)
        # An old message published again (a replay) is out of order.
        await nc.jetstream().publish(subject, json.dumps(body).encode())
        async with _jetstream(nats_url, name=store.config.stream) as second:
            broken = _only(await verify(second, "order-2"), "order-2").broken
        assert broken is not None
        assert broken.kind == "altered"


async def test_a_foreign_message_on_a_stream_subject_is_unreadable(nats_url: str) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        await nc.jetstream().publish(store.config.subject("order", "order-2"), b"\xff not json")
        result = await verify(store)
        broken = _only(result, "order-2").broken
        assert broken is not None
        assert broken.kind == "unreadable"
        assert _only(result, "order-1").ok


async def test_a_purged_store_shows_what_was_removed(nats_url: str) -> None:
    async with _jetstream(nats_url) as store, _raw(nats_url) as nc:
        await _fill(store)
        first_three = 3
        await nc.jetstream().purge_stream(store.config.stream, keep=2)
        result = await verify(store)
        assert result.removed_messages == ((1, first_three),)
        assert not result.ok


async def test_a_store_written_before_the_chain_verifies_as_unchained_up_to(
    nats_url: str,
) -> None:
    async with _jetstream(nats_url, chain=None) as old:
        await old.append("order-1", [OrderCancelled(reason="a"), OrderCancelled(reason="b")])
        await old.append("order-1", [OrderCancelled(reason="c")])
        async with _jetstream(nats_url, name=old.config.stream) as new:
            await new.append("order-1", [OrderCancelled(reason="d")], expected_version=3)
            await new.append("order-1", [OrderCancelled(reason="e")], expected_version=4)
            report = _only(await verify(new), "order-1")
            assert report.ok
            assert report.unchained_up_to == 3
            assert report.head_version == 5
            # Turning the chain off again breaks it: the next event carries no link.
            await old.append("order-1", [OrderCancelled(reason="f")])
            broken = _only(await verify(new), "order-1").broken
            assert broken is not None
            assert (broken.kind, broken.version) == ("unlinked", 6)


async def test_a_keyed_jetstream_chain_needs_the_key(nats_url: str) -> None:
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store:
        await _fill(store)
        assert (await verify(store)).ok
        broken = _only(await verify(store, chain=HashChain()), "order-1").broken
        assert broken is not None
        assert broken.kind == "altered"


async def test_appends_after_a_read_by_another_process_keep_the_chain(nats_url: str) -> None:
    """A second store learns the tail's link from its read (or a get), never starts over."""
    async with _jetstream(nats_url) as first:
        await _fill(first)
        async with _jetstream(nats_url, name=first.config.stream) as second:
            # Without reading first: the link comes from a direct get of the tail.
            await second.append("order-1", [OrderCancelled(reason="5")], expected_version=4)
            # After a read: from the read.
            _ = [r async for r in second.read_stream("order-2")]
            await second.append("order-2", [OrderCancelled(reason="2")], expected_version=1)
            # ANY, racing with the first store: whichever wins, the chain holds.
            await first.append("order-1", [OrderCancelled(reason="6")])
            await second.append("order-1", [OrderCancelled(reason="7")])
            result = await verify(second)
            assert result.ok, result
            assert _only(result, "order-1").head_version == 7


# -- the command line ----------------------------------------------------------------------


def _cli(store: JetStreamEventStore, url: str) -> list[str]:
    return [
        "--url",
        url,
        "--stream",
        store.config.stream,
        "--subject-prefix",
        store.config.subject_prefix,
    ]


async def test_the_verify_command_reports_and_exits_by_outcome(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "chain.key"
    key_file.write_bytes(KEY)
    async with _jetstream(nats_url, chain=HashChain(KEY)) as store, _raw(nats_url) as nc:
        await _fill(store)
        args = _cli(store, nats_url)
        assert (
            await asyncio.to_thread(main, [*args, "verify", "--all", "--key-file", str(key_file)])
            == 0
        )
        assert "OK: 3 stream(s), 6 event(s)" in capsys.readouterr().out
        # Without the key (a plain SHA-256 check), every keyed link is wrong.
        assert await asyncio.to_thread(main, [*args, "verify", "order-1"]) == 1
        assert "BROKEN at version 1: altered" in capsys.readouterr().out

        *_, (last, body) = await _messages(store, "order-1")
        body["actor"] = "admin:\x1b[2Jevil"
        await nc.jetstream().delete_msg(store.config.stream, last)
        await nc.jetstream().publish(
            store.config.subject("order", "order-1"), json.dumps(body).encode()
        )
        code = await asyncio.to_thread(
            main, [*args, "--json", "verify", "--all", "--key-file", str(key_file)]
        )
        assert code == 1
        found = json.loads(capsys.readouterr().out)
        assert found["ok"] is False
        assert found["removed_messages"] == [[last, last]]
        (order_1,) = [s for s in found["streams"] if s["stream_id"] == "order-1"]
        assert order_1["broken"]["kind"] == "altered"
        assert order_1["broken"]["version"] == 4

        code = await asyncio.to_thread(
            main, [*args, "verify", "--all", "--key-file", str(key_file)]
        )
        printed = capsys.readouterr().out
        assert code == 1
        assert "TAMPERED" in printed
        assert f"REMOVED: message {last} " in printed
        assert "\x1b" not in printed


async def test_the_verify_command_refuses_bad_usage(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _jetstream(nats_url) as store:
        await _fill(store)
        args = _cli(store, nats_url)
        assert await asyncio.to_thread(main, [*args, "verify"]) == 2
        assert await asyncio.to_thread(main, [*args, "verify", "order-1", "--all"]) == 2
        short = tmp_path / "short.key"
        short.write_bytes(b"abc")
        assert (
            await asyncio.to_thread(main, [*args, "verify", "--all", "--key-file", str(short)]) == 2
        )
        missing = str(tmp_path / "missing.key")
        assert await asyncio.to_thread(main, [*args, "verify", "--all", "--key-file", missing]) == 2
        assert await asyncio.to_thread(main, [*args, "verify", "order-none"]) == 3
        assert await asyncio.to_thread(main, [*args, "verify", "--all", "--require-chain"]) == 0
        assert await asyncio.to_thread(main, [*args, "verify", "order.1"]) == 2
        errors = capsys.readouterr().err
        assert "Traceback" not in errors
        assert (
            await asyncio.to_thread(main, ["--url", "nats://127.0.0.1:1", "verify", "--all"]) == 4
        )


# -- the canonical encoding is pinned, and survives erasure -------------------------------


def test_the_canonical_encoding_v1_is_pinned() -> None:
    """Known answers: a change to the encoding must be a new version, not an edit."""
    event_id = UUID("12345678-1234-5678-1234-567812345678")
    for chain, first, second in (
        (
            HashChain(),
            "33d71e912aa2e7f65b8d5f14bdc1e0a725af362f38a13cec9e1a80e46419ab9a",
            "8182de75d71d0336a39d92b7b18aefb9e5089040f95043ef194a2b0c10437002",
        ),
        (
            HashChain(KEY),
            "6df4740c7415b6e8c9a96f76527fe463f83fa2f2f8a14ac4abe68e635e4c6d70",
            "12f29f6c1f18cbf7b545c6ddf72ee01e16729fb3f9043211fb433301f6b8b80d",
        ),
    ):
        shared = chain.append_part("order-1", "user:1", None, "c-1", {"b": "2", "a": "é"})
        assert shared == b"7:order-16:user:1~3:c-12:1:a1:\xc3\xa91:b1:2"
        one = chain.link(None, 1, event_id, "OrderPaid", 1, shared, b'{"amount":"1.50"}')
        two = chain.link(one, 2, event_id, "OrderPaid", 2, shared, b"{}")
        assert (one.hex(), two.hex()) == (first, second)
        # HMAC-SHA256 exactly as the standard library computes it.
        message = b"".join(
            (
                b"eventtape-chain/1\n\x20",
                one,
                (2).to_bytes(8, "big"),
                event_id.bytes,
                (9).to_bytes(4, "big"),
                b"OrderPaid",
                (2).to_bytes(4, "big"),
                shared,
                (2).to_bytes(4, "big"),
                b"{}",
            )
        )
        expected = (
            hmac.digest(KEY, message, "sha256") if chain.keyed else hashlib.sha256(message).digest()
        )
        assert two == expected


async def test_a_forgotten_subject_still_verifies() -> None:
    """Links cover the ciphertext: erasure destroys a key, not the chain."""
    from eventtape.privacy import InMemoryKeyStore, PrivateEventStore
    from tests.test_privacy import REGISTRY as PRIVATE
    from tests.test_privacy import _alice

    inner = InMemoryEventStore(PRIVATE)
    store = PrivateEventStore(inner, InMemoryKeyStore(), key_cache_seconds=0)
    await store.append("customer-789", [_alice()])
    await store.append("customer-789", [_alice()], expected_version=1)
    before = await verify(store)
    await store.forget("customer:789")
    after = await verify(store)
    assert before.ok
    assert after.ok
    assert _only(after, "customer-789").head_link == _only(before, "customer-789").head_link


async def test_the_verify_command_can_require_links(
    nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _jetstream(nats_url, chain=None) as store:
        await _fill(store)
        args = _cli(store, nats_url)
        assert await asyncio.to_thread(main, [*args, "verify", "--all"]) == 0
        assert await asyncio.to_thread(main, [*args, "verify", "--all", "--require-chain"]) == 1
        assert "BROKEN at version 1: unlinked" in capsys.readouterr().out
