"""The contract every :class:`eventtape.privacy.KeyStore` must keep, as a pytest test class."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest

from .._core.errors import InvalidArgument, SubjectForgotten
from .._core.privacy import KeyStore

__all__ = ["KeyStoreContract"]

ODD_SUBJECTS = [
    "customer:789",
    "customer.789",
    "customer_789",
    "customer:*",
    "customer:>",
    "o'brien\"; DROP TABLE keys; --",
    "Zoë:łódź:東京:🙂",
    "x" * 256,
]


def _subject(name: str) -> str:
    """A subject no other test uses, so stores may share one server or table."""
    return f"{name}#{uuid4().hex[:8]}"[-256:]


class KeyStoreContract:
    """Subclass this and implement :meth:`make_key_store` to check a key store.

    Each test runs in a fresh event loop against a key store from :meth:`make_key_store`;
    subjects are unique per test, so the stores may share one server or table.

    Example:
        ```python
        class TestMyKeyStore(KeyStoreContract):
            @contextlib.asynccontextmanager
            async def make_key_store(self):
                store = MyKeyStore(url=...)
                await store.start()
                yield store
                await store.aclose()
        ```
    """

    def make_key_store(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Return an async context manager yielding a ready key store."""
        raise NotImplementedError("implement make_key_store() in your KeyStoreContract subclass")

    def run(self, scenario: Callable[[KeyStore], Awaitable[None]]) -> None:
        """Run ``scenario`` against a key store from :meth:`make_key_store`."""

        async def main() -> None:
            async with self.make_key_store() as keys:
                await asyncio.wait_for(scenario(keys), 30)

        asyncio.run(main())

    def test_a_key_is_made_once_and_kept(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            subject = _subject("customer:1")
            assert await keys.existing_key(subject) is None
            key = await keys.key_for(subject)
            assert isinstance(key, bytes)
            assert len(key) == 32
            assert await keys.key_for(subject) == key
            assert await keys.existing_key(subject) == key

        self.run(scenario)

    def test_subjects_have_their_own_keys(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            tag = uuid4().hex[:8]
            subjects = [f"{tag}{odd}"[:256] for odd in ODD_SUBJECTS]
            made = [await keys.key_for(subject) for subject in subjects]
            assert len(set(made)) == len(subjects)
            assert [await keys.existing_key(s) for s in subjects] == made

        self.run(scenario)

    def test_forget_destroys_the_key_for_good(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            subject, other = _subject("customer:2"), _subject("customer:3")
            await keys.key_for(subject)
            kept = await keys.key_for(other)
            await keys.forget(subject)
            assert await keys.existing_key(subject) is None
            with pytest.raises(SubjectForgotten):
                await keys.key_for(subject)
            await keys.forget(subject)  # idempotent
            assert await keys.existing_key(subject) is None
            assert await keys.existing_key(other) == kept

        self.run(scenario)

    def test_a_subject_forgotten_before_it_had_a_key_gets_none(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            subject = _subject("customer:4")
            await keys.forget(subject)
            with pytest.raises(SubjectForgotten):
                await keys.key_for(subject)
            assert await keys.existing_key(subject) is None

        self.run(scenario)

    def test_concurrent_makers_get_one_key(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            subject = _subject("customer:5")
            made = await asyncio.gather(*(keys.key_for(subject) for _ in range(20)))
            assert len(set(made)) == 1
            assert await keys.existing_key(subject) == made[0]

        self.run(scenario)

    def test_unusable_subjects_are_invalid_arguments(self) -> None:
        async def scenario(keys: KeyStore) -> None:
            for bad in ["", "x" * 257, "customer:\n1", None, 789, b"customer:1"]:
                for call in (keys.key_for, keys.existing_key, keys.forget):
                    with pytest.raises(InvalidArgument):
                        await call(bad)  # type: ignore[arg-type]

        self.run(scenario)
