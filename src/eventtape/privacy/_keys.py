"""Keys in process memory, for tests and single-process tools."""

from __future__ import annotations

from .._core.errors import SubjectForgotten
from .._core.privacy import check_subject
from ._cipher import new_key

__all__ = ["InMemoryKeyStore"]


class InMemoryKeyStore:
    """A :class:`eventtape.privacy.KeyStore` in a dict: lost when the process ends."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._forgotten: set[str] = set()

    async def key_for(self, subject: str) -> bytes:
        """Return the subject's key, creating it if there is none yet."""
        check_subject(subject)
        if subject in self._forgotten:
            raise SubjectForgotten(subject)
        key = self._keys.get(subject)
        if key is None:
            key = self._keys[subject] = new_key()
        return key

    async def existing_key(self, subject: str) -> bytes | None:
        """Return the subject's key, or ``None`` if it was forgotten or never made."""
        check_subject(subject)
        return self._keys.get(subject)

    async def forget(self, subject: str) -> None:
        """Destroy the subject's key."""
        check_subject(subject)
        self._keys.pop(subject, None)
        self._forgotten.add(subject)
