"""Per-subject keys of personal data in a SQL table: SQLite (standard library) or PostgreSQL.

One row per data subject: ``(subject, key, created_at, forgotten_at)``. ``forget`` overwrites
the key with ``NULL`` and stamps ``forgotten_at``: the row stays as the mark that the subject
was forgotten, so a later ``key_for`` refuses instead of making a fresh key, and a ``forget``
racing a ``key_for`` cannot be undone by it (both write the one row, the primary key orders
them). What a destroyed key leaves behind on disk (WAL, dead tuples, backups) is in the
privacy guide.

Both stores serialise competing writers through the primary key, so two processes making the
key of one subject at once end with one key, which both are given.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._core.errors import InvalidArgument, StoreUnavailable, SubjectForgotten
from .._core.privacy import check_subject
from .._core.wire import SUBJECT_KEYS_TABLE

__all__ = ["PostgresKeyStore", "SqliteKeyStore"]

_KEY_BYTES = 32
_DDL_LOCK = 0x6576_6B65_7973  # "evkeys": key-table DDL takes turns across processes
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _table(name: object) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidArgument(f"a key table is a plain SQL identifier, not {name!r}")
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteKeyStore:
    """A :class:`eventtape.privacy.KeyStore` in a SQLite file.

    Each call opens a short connection on a worker thread (SQLite blocks while another
    process writes), with ``secure_delete`` on, so a forgotten key's bytes are overwritten with
    zeros in the database file rather than left in a free page.

    Args:
        path: The database file (created if missing). Protect it like the keys it holds.
        table: The table's name.
        busy_timeout: Seconds to wait for another writer before ``StoreUnavailable``.
    """

    def __init__(
        self, path: str | Path, *, table: str = SUBJECT_KEYS_TABLE, busy_timeout: float = 5.0
    ) -> None:
        if str(path) == ":memory:":
            raise InvalidArgument("keys in ':memory:' vanish per connection: use a file")
        self._path = str(path)
        self._table = _table(table)
        self._timeout = busy_timeout
        self._started = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
        connection.execute("PRAGMA secure_delete = ON")
        return connection

    async def _run(self, what: str, work: Any, *args: Any) -> Any:
        def call() -> Any:
            connection = self._connect()
            try:
                return work(connection, *args)
            finally:
                connection.close()

        try:
            return await asyncio.to_thread(call)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"key store {self._path!r}: cannot {what}: {error}") from error

    async def start(self) -> None:
        """Create the table if missing."""

        def create(connection: sqlite3.Connection) -> None:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (subject TEXT PRIMARY KEY,"
                " key BLOB, created_at TEXT NOT NULL, forgotten_at TEXT)"
            )

        await self._run("create its table", create)
        self._started = True

    def _check(self, subject: object) -> str:
        if not self._started:
            raise RuntimeError("start() the SQLite key store first")
        return check_subject(subject)

    async def key_for(self, subject: str) -> bytes:
        """Return the subject's key, creating it if there is none yet.

        Raises:
            SubjectForgotten: If the subject was forgotten.
        """
        subject = self._check(subject)

        def make(connection: sqlite3.Connection) -> bytes | None:
            found = self._select(connection, subject)
            if found is not None:
                return found[0]
            # IMMEDIATE takes the write lock now: another process making the same key waits,
            # then finds it.
            connection.execute("BEGIN IMMEDIATE")
            try:
                found = self._select(connection, subject)
                if found is None:
                    found = (os.urandom(_KEY_BYTES),)
                    connection.execute(
                        f"INSERT INTO {self._table} (subject, key, created_at) VALUES (?, ?, ?)",
                        (subject, found[0], _now()),
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return found[0]

        key = await self._run(f"make the key of {subject!r}", make)
        if key is None:
            raise SubjectForgotten(subject)
        return bytes(key)

    def _select(self, connection: sqlite3.Connection, subject: str) -> tuple[bytes | None] | None:
        """``None``: no row; ``(None,)``: forgotten; ``(key,)``: the key."""
        row: tuple[bytes | None] | None = connection.execute(
            f"SELECT key FROM {self._table} WHERE subject = ?", (subject,)
        ).fetchone()
        return row

    async def existing_key(self, subject: str) -> bytes | None:
        """Return the subject's key, or ``None`` if it was forgotten or never made."""
        subject = self._check(subject)
        found = await self._run(f"read the key of {subject!r}", self._select, subject)
        return None if found is None or found[0] is None else bytes(found[0])

    async def forget(self, subject: str) -> None:
        """Overwrite the subject's key with ``NULL`` (idempotent; the row remembers the forget)."""
        subject = self._check(subject)

        def forget(connection: sqlite3.Connection) -> None:
            now = _now()
            connection.execute(
                f"INSERT INTO {self._table} (subject, key, created_at, forgotten_at)"
                " VALUES (?, NULL, ?, ?) ON CONFLICT (subject) DO UPDATE SET key = NULL,"
                f" forgotten_at = COALESCE({self._table}.forgotten_at, excluded.forgotten_at)",
                (subject, now, now),
            )

        await self._run(f"forget {subject!r}", forget)

    async def aclose(self) -> None:
        """Nothing stays open between calls; kept for symmetry with the other key stores."""
        self._started = False


class PostgresKeyStore:
    """A :class:`eventtape.privacy.KeyStore` in a PostgreSQL table (``eventtape[postgres]``).

    Args:
        dsn: A ``postgresql://`` URL.
        table: The table's name (in the connection's ``search_path`` schema).
        max_connections: Size of the connection pool.
    """

    def __init__(
        self, dsn: str, *, table: str = SUBJECT_KEYS_TABLE, max_connections: int = 4
    ) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(("postgres://", "postgresql://")):
            raise InvalidArgument("a PostgreSQL key store needs a postgresql:// URL")
        self._dsn = dsn
        self._table = _table(table)
        self._max = max_connections
        self._pool: Any = None

    async def start(self) -> None:
        """Connect and create the table if missing."""
        try:
            import asyncpg
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                'the PostgreSQL key store needs asyncpg: pip install "eventtape[postgres]"'
            ) from error
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._max)
            # An advisory lock: two processes starting at once would race on CREATE TABLE.
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                await connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (subject TEXT PRIMARY KEY,"
                    " key BYTEA, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                    " forgotten_at TIMESTAMPTZ)"
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            await self.aclose()
            raise StoreUnavailable(f"cannot open the PostgreSQL key store: {error}") from error

    def _check(self, subject: object) -> str:
        if self._pool is None:
            raise RuntimeError("start() the PostgreSQL key store first")
        return check_subject(subject)

    async def _run(self, what: str, sql: str, *args: Any) -> Any:
        import asyncpg

        try:
            return await self._pool.fetchrow(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise StoreUnavailable(f"key store: cannot {what}: {error}") from error

    async def key_for(self, subject: str) -> bytes:
        """Return the subject's key, creating it if there is none yet.

        Raises:
            SubjectForgotten: If the subject was forgotten.
        """
        subject = self._check(subject)
        select = f"SELECT key FROM {self._table} WHERE subject = $1"
        row = await self._run(f"read the key of {subject!r}", select, subject)
        if row is None:
            # Two makers at once: the primary key makes the second wait for the first's commit
            # and then do nothing; both then read the one key.
            await self._run(
                f"make the key of {subject!r}",
                f"INSERT INTO {self._table} (subject, key) VALUES ($1, $2)"
                " ON CONFLICT (subject) DO NOTHING",
                subject,
                os.urandom(_KEY_BYTES),
            )
            row = await self._run(f"read the key of {subject!r}", select, subject)
        if row is None:
            raise StoreUnavailable(f"the key of {subject!r} vanished while it was being made")
        if row["key"] is None:
            raise SubjectForgotten(subject)
        return bytes(row["key"])

    async def existing_key(self, subject: str) -> bytes | None:
        """Return the subject's key, or ``None`` if it was forgotten or never made."""
        subject = self._check(subject)
        row = await self._run(
            f"read the key of {subject!r}",
            f"SELECT key FROM {self._table} WHERE subject = $1",
            subject,
        )
        return None if row is None or row["key"] is None else bytes(row["key"])

    async def forget(self, subject: str) -> None:
        """Overwrite the subject's key with ``NULL`` (idempotent; the row remembers the forget)."""
        subject = self._check(subject)
        await self._run(
            f"forget {subject!r}",
            f"INSERT INTO {self._table} AS k (subject, key, forgotten_at) VALUES ($1, NULL, now())"
            " ON CONFLICT (subject) DO UPDATE SET key = NULL,"
            " forgotten_at = COALESCE(k.forgotten_at, now())",
            subject,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
