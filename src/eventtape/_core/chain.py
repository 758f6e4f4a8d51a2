"""Tamper evidence: every recorded event carries a hash chained to the previous event of its stream.

The link of an event is ``H(message)``, where ``H`` is SHA-256, or HMAC-SHA256 under a key the
application supplies (then whoever can write to the server but lacks the key cannot forge a
chain), and ``message`` is the canonical encoding, version 1 (``eventtape-chain/1``)::

    b"eventtape-chain/1\\n"
    previous link               1 byte length (0 or 32), then the 32 raw bytes of the link of
                                the stream's previous event; none for the first chained event
    version                     8 bytes, big-endian unsigned
    event id                    the UUID's 16 bytes
    field(type name)            UTF-8, as stored
    schema version              4 bytes, big-endian unsigned
    metadata                    UTF-8 text: stream id, actor, causation id and correlation
                                id each as ``<length>:<value>`` (length in code points) or
                                ``~`` for none; then ``<header count>:`` and each header as
                                ``<length>:<name><length>:<value>``, sorted by name
    field(data)                 the event's data as compact JSON (below)

``field(b)`` is ``len(b)`` as 4 big-endian bytes, then ``b``. The data's JSON is the compact
form pydantic writes (no whitespace, object keys in stored order, non-ASCII as UTF-8, numbers
in their shortest round-trip form): a verifier re-encodes the stored value that way. The server's
timestamp is not covered (the server assigns it after the link is computed); the stream's
position in the whole store is not covered either (positions are the server's).

Links are stored hex-encoded beside each event. A store written before the chain existed
verifies as "unchained up to version N": the first chained event after such events links to
nothing. See the tamper-evidence guide for the threat model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Final, Literal
from uuid import UUID

from .errors import InvalidArgument

__all__ = [
    "CHAIN_FORMAT",
    "UNKEYED",
    "ChainBreak",
    "ChainReport",
    "ChainSource",
    "HashChain",
    "StoredLink",
    "Verification",
    "unreadable",
    "verify",
    "verify_links",
]

CHAIN_FORMAT: Final = "eventtape-chain/1"
"""The canonical encoding's name and version; part of every hashed message."""

_MAGIC: Final = CHAIN_FORMAT.encode() + b"\n"
MIN_KEY_BYTES: Final = 16
_BLOCK: Final = 64  # SHA-256's block size, for HMAC
_sha256 = hashlib.sha256


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


class HashChain:
    """How a store computes (and a verifier checks) the links of its events.

    Args:
        key: HMAC key (at least 16 bytes). Without one, links are plain SHA-256: they show
            accidental and naive edits, but whoever can write to the server can recompute
            them. With one, forging a link needs the key; keep it out of the store's reach.
    """

    __slots__ = ("_key", "_pads")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None:
            if not isinstance(key, bytes | bytearray):
                raise InvalidArgument(f"a chain key is bytes, not {type(key).__name__}")
            if len(key) < MIN_KEY_BYTES:
                raise InvalidArgument(
                    f"a chain key needs at least {MIN_KEY_BYTES} bytes, not {len(key)}"
                )
            key = bytes(key)
        self._key = key
        self._pads: tuple[hashlib._Hash, hashlib._Hash] | None = None
        if key is not None:
            block = (_sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
            self._pads = (
                _sha256(bytes(byte ^ 0x36 for byte in block)),
                _sha256(bytes(byte ^ 0x5C for byte in block)),
            )

    @property
    def keyed(self) -> bool:
        """Whether links are HMACs under a key (else plain SHA-256)."""
        return self._key is not None

    def __repr__(self) -> str:  # never show the key
        return f"HashChain(keyed={self.keyed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashChain) and other._key == self._key

    def __hash__(self) -> int:
        return hash((HashChain, self._key))

    @staticmethod
    def append_part(
        stream_id: str,
        actor: str | None,
        causation_id: str | None,
        correlation_id: str | None,
        headers: Mapping[str, str],
    ) -> bytes:
        """The part of the message every event of one append shares (computed once)."""
        text = (
            f"{len(stream_id)}:{stream_id}"
            f"{'~' if actor is None else f'{len(actor)}:{actor}'}"
            f"{'~' if causation_id is None else f'{len(causation_id)}:{causation_id}'}"
            f"{'~' if correlation_id is None else f'{len(correlation_id)}:{correlation_id}'}"
            f"{len(headers)}:"
        )
        if headers:
            text += "".join(
                f"{len(name)}:{name}{len(value)}:{value}" for name, value in sorted(headers.items())
            )
        return text.encode()

    def link(
        self,
        previous: bytes | None,
        version: int,
        event_id: UUID,
        type_name: str,
        schema: int,
        shared: bytes,
        data: bytes,
    ) -> bytes:
        """The 32-byte link of one event (``shared`` from :meth:`append_part`)."""
        message = b"".join(
            (
                _MAGIC_LINKED if previous else _MAGIC_FIRST,
                previous or b"",
                version.to_bytes(8, "big"),
                event_id.bytes,
                _type_and_schema(type_name, schema),
                shared,
                len(data).to_bytes(4, "big"),
                data,
            )
        )
        pads = self._pads
        if pads is None:
            return _sha256(message).digest()
        # HMAC-SHA256 (RFC 2104) from the key's two padded states, hashed once when the chain
        # was made: the same result as hmac.digest, at half its cost per event.
        inner = pads[0].copy()
        inner.update(message)
        outer = pads[1].copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest


_MAGIC_FIRST: Final = _MAGIC + b"\x00"
_MAGIC_LINKED: Final = _MAGIC + b"\x20"


@functools.lru_cache(maxsize=4096)
def _type_and_schema(type_name: str, schema: int) -> bytes:
    return _field(type_name.encode()) + schema.to_bytes(4, "big")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredLink:
    """One stored event as a verifier sees it: its fields exactly as stored, and its link.

    ``data`` is the event's data as compact JSON (see the module docs); ``link`` the stored
    link, hex-encoded, or ``None`` for an event stored without one.
    """

    stream_id: str
    version: int
    position: int
    event_id: UUID
    type_name: str
    schema: int
    actor: str | None
    causation_id: str | None
    correlation_id: str | None
    headers: Mapping[str, str]
    data: bytes
    link: str | None


BreakKind = Literal["altered", "gap", "out-of-order", "unlinked", "unreadable"]


@dataclasses.dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of a stream.

    Attributes:
        version: The version where the chain breaks: the event's own, or for ``gap`` the one
            expected there.
        position: The position of the event found there.
        kind: ``altered`` (its content or its predecessor's differs from what was linked, or
            the key is wrong), ``gap`` (the version expected next is not there: removed, or
            moved later), ``out-of-order`` (a version stored again or after a later one:
            inserted, or moved earlier), ``unlinked`` (no link after linked events),
            ``unreadable`` (a stored message that cannot be parsed).
        detail: One line for a human.
    """

    version: int
    position: int
    kind: BreakKind
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    """What verifying one stream found.

    Attributes:
        stream_id: The stream.
        events: Events read.
        unchained_up_to: The last version stored before the chain existed (0: none).
        head_version: The last version read.
        head_link: The last link (hex), to keep elsewhere as an anchor against truncation.
        broken: The first broken link, or ``None``.
    """

    stream_id: str
    events: int
    unchained_up_to: int
    head_version: int
    head_link: str | None
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """No broken link (events from before the chain may remain: see ``unchained_up_to``)."""
        return self.broken is None


class _Walk:
    """The state of one stream's verification, fed one link at a time."""

    __slots__ = (
        "_headers",
        "_meta",
        "_shared",
        "broken",
        "events",
        "head_link",
        "previous",
        "stream_id",
        "unchained",
        "version",
    )

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.events = 0
        self.version = 0
        self.previous: bytes | None = None  # None: no linked event yet
        self.head_link: str | None = None
        self.unchained = 0
        self.broken: ChainBreak | None = None
        # The shared part of the last link, reused while the metadata stays the same (it does
        # across the events of one append).
        self._meta: tuple[str | None, str | None, str | None] | None = None
        self._headers: Mapping[str, str] | None = None
        self._shared = b""

    def feed(self, chain: HashChain, item: StoredLink) -> None:
        if self.broken is not None:
            return
        self.events += 1
        expected = self.version + 1
        if item.version != expected:
            if item.version > expected:
                self.broken = ChainBreak(
                    expected,
                    item.position,
                    "gap",
                    f"version {expected} is not where it belongs: version {item.version} comes"
                    f" next, at position {item.position} (removed, or moved)",
                )
            else:
                self.broken = ChainBreak(
                    item.version,
                    item.position,
                    "out-of-order",
                    f"version {item.version} stored again at position {item.position}, after"
                    f" version {self.version} (inserted or reordered)",
                )
            return
        self.version = item.version
        if item.link is None:
            if self.previous is not None:
                self.broken = ChainBreak(
                    item.version,
                    item.position,
                    "unlinked",
                    f"version {item.version} carries no link, but earlier versions do",
                )
            else:
                self.unchained = item.version
            return
        meta = (item.actor, item.causation_id, item.correlation_id)
        if meta != self._meta or item.headers != self._headers:
            self._shared = chain.append_part(item.stream_id, *meta, item.headers)
            self._meta, self._headers = meta, item.headers
        try:
            computed = chain.link(
                self.previous,
                item.version,
                item.event_id,
                item.type_name,
                item.schema,
                self._shared,
                item.data,
            )
            matches = hmac.compare_digest(computed.hex(), item.link)
        except (TypeError, ValueError, OverflowError) as error:
            # A source handing over what no store writes (a schema beyond 32 bits, a non-ASCII
            # link): a break of this stream, not a crash of the whole verification.
            self.broken = ChainBreak(
                item.version,
                item.position,
                "unreadable",
                f"version {item.version} (position {item.position}) cannot be checked: {error}",
            )
            return
        if not matches:
            self.broken = ChainBreak(
                item.version,
                item.position,
                "altered",
                f"version {item.version} (position {item.position}) does not match its link:"
                " it, or the event before it, was changed"
                + (", or the key is not the one it was written with" if chain.keyed else ""),
            )
            return
        self.previous = computed
        self.head_link = item.link

    def report(self) -> ChainReport:
        return ChainReport(
            self.stream_id,
            self.events,
            self.unchained,
            self.version,
            self.head_link,
            self.broken,
        )


def unreadable(stream_id: str, version: int, position: int, detail: str) -> ChainReport:
    """The report of a stream whose stored message cannot be parsed."""
    return ChainReport(
        stream_id, 0, 0, 0, None, ChainBreak(version, position, "unreadable", detail)
    )


async def verify_links(
    links: AsyncIterable[StoredLink | ChainReport] | Iterable[StoredLink | ChainReport],
    chain: HashChain,
) -> list[ChainReport]:
    """Verify links in store order (any mix of streams); one report per stream, in first-seen order.

    A :class:`ChainReport` among the links (a source's way to say "this one is unreadable")
    is taken as that stream's report.
    """
    walks: dict[str, _Walk] = {}

    def take(item: StoredLink | ChainReport) -> None:
        walk = walks.get(item.stream_id)
        if walk is None:
            walk = walks[item.stream_id] = _Walk(item.stream_id)
        if isinstance(item, StoredLink):
            walk.feed(chain, item)
        elif walk.broken is None:
            walk.broken = item.broken

    if isinstance(links, AsyncIterable):
        async for item in links:
            take(item)
    else:
        for item in links:
            take(item)
    reports = [walk.report() for walk in walks.values()]
    return reports


UNKEYED: Final = HashChain()
"""The default chain: plain SHA-256 links."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    """What :func:`verify` found.

    Attributes:
        streams: One report per stream verified, in store order.
        removed_messages: Ranges (inclusive) of the store's message sequences that are gone
            although the store never removes any (JetStream: deleted or purged messages);
            a removed append at the end of a stream leaves no broken link, but shows here.
    """

    streams: tuple[ChainReport, ...]
    removed_messages: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        """Every stream verified without a broken link, and nothing was removed."""
        return not self.removed_messages and all(report.ok for report in self.streams)

    @property
    def events(self) -> int:
        """Events read, over all streams."""
        return sum(report.events for report in self.streams)


@typing.runtime_checkable
class ChainSource(typing.Protocol):
    """A store whose events can be verified (both of ours are)."""

    @property
    def chain(self) -> HashChain | None:
        """How this store links the events it appends (``None``: it does not)."""
        ...

    def chain_links(self, stream_id: str | None = None) -> AsyncIterator[StoredLink | ChainReport]:
        """Every stored event of ``stream_id`` (or of the whole store), in store order, raw;
        a :class:`ChainReport` stands for a stored message that cannot be read."""
        ...

    async def removed_messages(self) -> tuple[tuple[int, int], ...]:
        """Ranges of stored messages that are gone (see :class:`Verification`)."""
        ...


async def verify(
    store: ChainSource,
    stream_id: str | None = None,
    *,
    chain: HashChain | None = None,
    require_chain: bool = False,
) -> Verification:
    """Check that a stream's history (or the whole store's) is the history that was written.

    Args:
        store: The event store (a :class:`eventtape.privacy.PrivateEventStore` verifies the
            store it wraps: links cover the ciphertext, so a forgotten subject still verifies).
        stream_id: The stream to verify; ``None`` for every stream.
        chain: The chain (key) to check with; by default the store's own.
        require_chain: Count events stored without links as a break (``unlinked`` at version
            1) instead of "unchained up to version N". Turn it on once every stream was
            written with the chain: whoever can write to the server could otherwise add a
            whole stream of unlinked events, even under a keyed chain, and it would pass.

    Returns:
        A :class:`Verification`: one :class:`ChainReport` per stream, with the first broken
        link of each, and the store's removed messages when verifying the whole store.

    Raises:
        InvalidArgument: If ``store`` cannot be verified, or ``chain`` is not a HashChain.
        StreamNotFound: If ``stream_id`` names no stream.
    """
    # A wrapper (such as PrivateEventStore) is verified through the store it wraps.
    while not isinstance(store, ChainSource) and isinstance(
        getattr(store, "inner", None), ChainSource
    ):
        store = store.inner
    if not isinstance(store, ChainSource):
        raise InvalidArgument(f"{type(store).__name__} is not a store that can be verified")
    if chain is None:
        chain = store.chain or UNKEYED
    elif not isinstance(chain, HashChain):
        raise InvalidArgument(f"chain takes a HashChain, not {type(chain).__name__}")
    reports = await verify_links(store.chain_links(stream_id), chain)
    if require_chain:
        reports = [
            dataclasses.replace(
                report,
                broken=ChainBreak(
                    1,
                    0,
                    "unlinked",
                    f"versions 1 to {report.unchained_up_to} carry no link, and links are required",
                ),
            )
            if report.broken is None and report.unchained_up_to
            else report
            for report in reports
        ]
    removed = await store.removed_messages() if stream_id is None else ()
    return Verification(tuple(reports), removed)
