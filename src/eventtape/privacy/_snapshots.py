"""Snapshots that hold no readable personal data: sealed with the keys of every subject in them.

An aggregate's snapshot is its state, and its state may hold personal fields copied from its
events (a customer's name). Stored as it is, that copy would outlive ``forget``. So a
snapshot of a stream whose events carry personal data of subjects S1..Sn is sealed: its state
is encrypted (AES-256-GCM) with a fresh data key, and the data key is split into n XOR shares,
each encrypted with one subject's key. Destroying *any* of those keys makes the whole snapshot
unreadable; the repository then replays the stream, where the forgotten fields read as
:data:`eventtape.privacy.FORGOTTEN` and everything else is rebuilt as before.

Which subjects a stream holds is found from the stored events (ciphertext, never decrypted),
incrementally: a sealed snapshot names its subjects, so the next one reads only the events
after it.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Final

from .._core.errors import InvalidArgument, SerializationError, StreamNotFound
from .._core.privacy import personal_fields
from .._core.snapshots import Snapshot, SnapshotStore
from ._cipher import is_ciphertext
from ._store import PrivateEventStore

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        'personal-data encryption needs cryptography: pip install "eventtape[crypto]"'
    ) from error

__all__ = ["SEALED", "PrivateSnapshotStore"]

SEALED: Final = "eventtape:sealed:v1"
"""The one key of a sealed snapshot's stored state."""

_KEY_BYTES: Final = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.urlsafe_b64decode(text.encode())


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _envelope(state: dict[str, Any]) -> dict[str, Any] | None:
    if len(state) == 1 and isinstance(sealed := state.get(SEALED), dict):
        return sealed
    return None


class PrivateSnapshotStore:
    """Wraps a :class:`eventtape.SnapshotStore` so snapshots never hold readable personal data.

    Use it with a :class:`PrivateEventStore`; :class:`eventtape.Repository` refuses a plain
    snapshot store next to a private event store. Snapshots of streams without personal data
    are stored as they are; others are sealed with every one of their subjects' keys (see the
    module docstring). After ``forget``, a sealed snapshot loads as ``None`` (the repository
    replays the events, masked), and a new snapshot of a stream that holds a forgotten subject
    is not taken (its state might have been loaded before the ``forget``): the old one is
    deleted instead, and loads of that stream replay it.

    Args:
        inner: Where the (sealed) snapshots are kept: memory, JetStream, ...
        store: The private event store whose keys seal them.
    """

    seals_personal_data: Final = True
    """Marks a snapshot store that is safe next to a private event store."""

    def __init__(self, inner: SnapshotStore, store: PrivateEventStore) -> None:
        if not isinstance(store, PrivateEventStore):
            raise InvalidArgument(f"store must be a PrivateEventStore, not {store!r}")
        for method in ("save", "load", "delete"):
            if not callable(getattr(inner, method, None)):
                raise InvalidArgument(f"inner must be a SnapshotStore, not {inner!r}")
        self._inner = inner
        self._store = store

    @property
    def inner(self) -> SnapshotStore:
        """The wrapped snapshot store (it holds sealed state)."""
        return self._inner

    async def _subjects(self, snapshot: Snapshot) -> set[str]:
        """The subjects whose personal data the stream holds up to the snapshot's version."""
        subjects: set[str] = set()
        from_version, hint = 1, None
        previous = await self._inner.load(snapshot.stream_id)
        if previous is not None and previous.version <= snapshot.version:
            envelope = _envelope(previous.state)
            named = envelope.get("subjects") if envelope is not None else []
            if isinstance(named, list) and all(isinstance(s, str) for s in named):
                subjects.update(named)
                from_version, hint = previous.version + 1, previous.position
        if from_version > snapshot.version:
            return subjects
        try:
            async for record in self._store.inner.read_stream(
                snapshot.stream_id,
                from_version=from_version,
                to_version=snapshot.version,
                position_hint=hint,
            ):
                found = personal_fields(type(record.event))
                if found is not None and any(
                    is_ciphertext(getattr(record.event, field)) for field in found.fields
                ):
                    subjects.add(found.subject_of(record.event))
        except StreamNotFound:
            pass
        return subjects

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, sealed if its stream holds personal data.

        Raises:
            SerializationError: If the state is not JSON-compatible.
        """
        subjects = sorted(await self._subjects(snapshot))
        if not subjects:
            await self._inner.save(snapshot)
            return
        keys = [await self._store._key(subject) for subject in subjects]
        if any(key is None for key in keys):
            # A subject is forgotten: this state may still hold what was read before. Keep no
            # snapshot of the stream at all (loads replay it, masked).
            await self._inner.delete(snapshot.stream_id)
            return
        try:
            plain = json.dumps(snapshot.state, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise SerializationError(
                f"snapshot of {snapshot.stream_id!r} is not JSON-compatible: {error}"
            ) from error
        data_key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        shares = [os.urandom(_KEY_BYTES) for _ in subjects[1:]]
        last = data_key
        for share in shares:
            last = _xor(last, share)
        shares.insert(0, last)  # XOR of all shares is the data key: every subject key needed
        sealed_shares = []
        for subject, key, share in zip(subjects, keys, shares, strict=True):
            assert key is not None
            nonce = os.urandom(12)
            sealed = AESGCM(key).encrypt(nonce, share, self._share_ad(snapshot, subject))
            sealed_shares.append(_b64(nonce + sealed))
        nonce = os.urandom(12)
        body = AESGCM(data_key).encrypt(nonce, plain, self._state_ad(snapshot))
        envelope = {"subjects": subjects, "shares": sealed_shares, "state": _b64(nonce + body)}
        await self._inner.save(snapshot.replace(state={SEALED: envelope}))

    @staticmethod
    def _share_ad(snapshot: Snapshot, subject: str) -> bytes:
        return f"snapshot-share\n{snapshot.stream_id}\n{snapshot.version}\n{subject}".encode()

    @staticmethod
    def _state_ad(snapshot: Snapshot) -> bytes:
        where = f"{snapshot.stream_id}\n{snapshot.version}\n{snapshot.aggregate_type}"
        return f"snapshot\n{where}".encode()

    async def load(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot, unsealed; ``None`` if a subject in it was forgotten."""
        snapshot = await self._inner.load(stream_id)
        if snapshot is None:
            return None
        envelope = _envelope(snapshot.state)
        if envelope is None:
            return snapshot
        try:
            subjects, shares = envelope["subjects"], envelope["shares"]
            if not isinstance(subjects, list) or not isinstance(shares, list):
                return None
            data_key = bytes(_KEY_BYTES)
            for subject, sealed_share in zip(subjects, shares, strict=True):
                key = await self._store._key(str(subject))
                if key is None:
                    return None  # forgotten: replay the events instead
                raw = _unb64(sealed_share)
                share = AESGCM(key).decrypt(raw[:12], raw[12:], self._share_ad(snapshot, subject))
                data_key = _xor(data_key, share)
            raw = _unb64(envelope["state"])
            state = json.loads(
                AESGCM(data_key).decrypt(raw[:12], raw[12:], self._state_ad(snapshot))
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None  # altered or unreadable: a snapshot is only an optimisation
        if not isinstance(state, dict):
            return None
        return snapshot.replace(state=state)

    async def delete(self, stream_id: str) -> None:
        """Delete the stream's snapshot."""
        await self._inner.delete(stream_id)
