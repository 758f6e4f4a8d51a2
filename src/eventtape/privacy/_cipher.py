"""AES-256-GCM for personal fields, with a synthetic nonce so a retried append is identical.

A field's ciphertext is ``eventtape:aesgcm:v1:<urlsafe base64 of nonce + ciphertext + tag>``.
The nonce is the first 12 bytes of HMAC-SHA256(key, event id, field, plaintext): the same event
sent twice (a retry) encrypts to the same bytes, so the store still recognises the retry, and a
nonce is never reused for two different plaintexts. The associated data binds each ciphertext
to its event type (as stored) and subject, so it cannot be moved to another person; it leaves
the field name out so that an upcaster may rename a personal field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Final

from .._core.errors import SerializationError
from .._core.privacy import CIPHERTEXT_PREFIX

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        'personal-data encryption needs cryptography: pip install "eventtape[crypto]"'
    ) from error

__all__ = ["PREFIX", "decrypt", "encrypt", "is_ciphertext", "new_key"]

PREFIX: Final = CIPHERTEXT_PREFIX
KEY_BYTES: Final = 32


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _associated(event_type: str, subject: str) -> bytes:
    return f"{event_type}\n{subject}".encode()


def encrypt(
    key: bytes, event_id: uuid.UUID, event_type: str, field: str, subject: str, plaintext: str
) -> str:
    """Encrypt one field's text."""
    data = plaintext.encode()
    nonce = hmac.new(
        key, b"nonce\0" + event_id.bytes + field.encode() + b"\0" + data, hashlib.sha256
    ).digest()[:12]
    sealed = AESGCM(key).encrypt(nonce, data, _associated(event_type, subject))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def is_ciphertext(value: object) -> bool:
    """Whether a stored field value is one of our ciphertexts."""
    return isinstance(value, str) and value.startswith(PREFIX)


def decrypt(key: bytes, event_type: str, field: str, subject: str, value: str) -> str:
    """Decrypt one field's text.

    Raises:
        SerializationError: If it was altered, or sealed for another field, subject or key.
    """
    try:
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :].encode())
        opened = AESGCM(key).decrypt(raw[:12], raw[12:], _associated(event_type, subject))
        return opened.decode()
    except (InvalidTag, ValueError) as error:
        raise SerializationError(
            f"cannot decrypt {event_type}.{field} of {subject!r}: altered, or sealed with"
            " another key or for another subject"
        ) from error
