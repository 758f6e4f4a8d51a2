"""The one rule for stream ids, shared by every backend.

Stream ids become NATS subjects (``<prefix>.<category>.<id>``) and SQL keys, so anything a
subject parser could read as a separator (``.``) or a wildcard (``*``, ``>``), and anything a
person cannot see (whitespace, control characters), is refused with a reason. Ids are never
silently rewritten: two different ids must never land on one stream.

The *category* of a stream is the part of its id before the first ``-`` (``order-12345`` is in
category ``order``); an id without ``-`` is its own category.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from .errors import InvalidStreamId

__all__ = ["MAX_STREAM_ID_LENGTH", "category_of", "validate_stream_id"]

MAX_STREAM_ID_LENGTH = 200
"""Longest accepted stream id, in characters (leaves room for a subject prefix within limits)."""

# Ids made only of these characters need no closer look (the common case, checked in one call).
_PLAIN = re.compile(r"[A-Za-z0-9_:@=+,;~!#%&'()/\\[\]][A-Za-z0-9_:@=+,;~!#%&'()/\\[\]-]*")
_FORBIDDEN = {".": "a subject separator", "*": "a subject wildcard", ">": "a subject wildcard"}


def validate_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` unchanged if it is a valid stream id, else raise.

    Args:
        stream_id: The candidate id.

    Returns:
        The same string.

    Raises:
        InvalidStreamId: With the reason: not a string, empty, too long, whitespace, ``.``,
            ``*``, ``>``, or a control or other invisible character.
    """
    if not isinstance(stream_id, str):
        raise InvalidStreamId(stream_id, f"must be a str, not {type(stream_id).__name__}")
    return _validate_str(stream_id)


# Validation runs on every append and read, and the same streams come back again and again;
# a bounded memo keeps it off the hot path. lru_cache never caches a raised error.
@functools.lru_cache(maxsize=65_536)
def _validate_str(stream_id: str) -> str:
    if len(stream_id) <= MAX_STREAM_ID_LENGTH and _PLAIN.fullmatch(stream_id):
        return stream_id
    if not stream_id:
        raise InvalidStreamId(stream_id, "must not be empty")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidStreamId(
            stream_id, f"is {len(stream_id)} characters long; the limit is {MAX_STREAM_ID_LENGTH}"
        )
    for index, char in enumerate(stream_id):
        if char in _FORBIDDEN:
            raise InvalidStreamId(
                stream_id, f"contains {char!r} ({_FORBIDDEN[char]}) at index {index}"
            )
        if char.isspace():
            raise InvalidStreamId(stream_id, f"contains whitespace {char!r} at index {index}")
        if not char.isprintable() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise InvalidStreamId(
                stream_id, f"contains a control or invisible character {char!r} at index {index}"
            )
    if stream_id.startswith("-"):
        raise InvalidStreamId(stream_id, "must not start with '-' (its category would be empty)")
    return stream_id


def category_of(stream_id: str) -> str:
    """Return the category of a stream id: the part before the first ``-``.

    >>> category_of("order-12345")
    'order'
    >>> category_of("inventory")
    'inventory'
    """
    category, _, _ = stream_id.partition("-")
    return category
