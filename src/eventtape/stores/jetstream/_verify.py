"""Reading a JetStream store's links raw, for :func:`eventtape.verify` (the store and the CLI)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..._core.chain import ChainReport, StoredLink, unreadable
from ..._core.errors import SerializationError, StreamNotFound
from ..._core.stream_ids import category_of, validate_stream_id
from ._codec import decode_envelope, position_of
from ._config import JetStreamConfig
from ._direct import DirectGet

__all__ = ["chain_links", "removed_messages"]


async def chain_links(
    direct: DirectGet, config: JetStreamConfig, stream_id: str | None
) -> AsyncIterator[StoredLink | ChainReport]:
    """Every stored event of ``stream_id`` (or of the whole store), raw, in sequence order; a
    message that is not a readable append is an ``unreadable`` report of the stream its
    subject names.

    Raises:
        StreamNotFound: If ``stream_id`` has no message.
    """
    prefix = config.subject_prefix + "."
    if stream_id is None:
        subject_filter = config.filter_subject()
    else:
        validate_stream_id(stream_id)
        subject_filter = config.subject(category_of(stream_id), stream_id)
    found = False
    async for message in direct.batch(1, subject_filter, batch=config.read_batch):
        found = True
        # Where a stream's appends live: `<prefix>.<category>.<stream id>`. The store's
        # filter takes any depth, so a message elsewhere that names a stream (`<prefix>.x.
        # order-1`, a forged or replayed one) is reported under its own subject: it is not in
        # that stream's history (its reads never see it), and must not break its report.
        rest = message.subject[len(prefix) :]
        try:
            envelope = decode_envelope(message, prefix)
            if rest != f"{category_of(envelope.stream_id)}.{envelope.stream_id}":
                raise SerializationError(
                    f"message at subject {message.subject!r} claims stream"
                    f" {envelope.stream_id!r}, whose subject it is not"
                )
            links = envelope.links()
        except SerializationError as error:
            named = rest.rpartition(".")[2]
            if rest != f"{category_of(named)}.{named}":
                named = message.subject  # dotted: never a stream id
            yield unreadable(named, 0, position_of(message.sequence, 0), str(error))
            continue
        for link in links:
            yield link
    if stream_id is not None and not found:
        raise StreamNotFound(stream_id)


async def removed_messages(direct: DirectGet) -> tuple[tuple[int, int], ...]:
    """Ranges of message sequences gone from the stream: deleted (the store never deletes;
    ``deny_delete`` is on by default) or purged from its start."""
    state = (await direct.stream_info(deleted_details=True)).get("state", {})
    first = int(state.get("first_seq", 0) or 0)
    removed: list[tuple[int, int]] = []
    if first > 1:
        removed.append((1, first - 1))
    # An empty stream reports sequence 0 as deleted (nats-server 2.x): there is no such
    # message, and an untouched empty store must not verify as tampered.
    deleted = (int(item) for item in state.get("deleted") or ())
    for sequence in sorted(sequence for sequence in deleted if sequence >= 1):
        if removed and removed[-1][1] == sequence - 1:
            removed[-1] = (removed[-1][0], sequence)
        else:
            removed.append((sequence, sequence))
    return tuple(removed)
