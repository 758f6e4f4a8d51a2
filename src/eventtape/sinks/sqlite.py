"""The SQLite read-model sink (standard library ``sqlite3``, no extra dependency).

SQLite calls are short and local, so they run on the event loop's thread; one asyncio lock
serialises the sink's transactions (SQLite allows one writer at a time anyway). The database
runs in WAL mode, so readers never wait for the projection's writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from .._core.wire import CHECKPOINTS_TABLE, OWNER_TOKEN_COLUMN
from ._sql import SqlSink, owner_token_column, schema

__all__ = ["SqliteSink", "SqliteTransaction"]

_SCHEMA = schema(position_type="INTEGER", timestamp_type="TEXT")


class SqliteTransaction:
    """An open SQLite transaction, handed to projection handlers. Placeholders are ``?``."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying ``sqlite3`` connection, inside the transaction."""
        return self._connection

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement."""
        self._connection.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row of arguments."""
        self._connection.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Run a query and return every row."""
        return self._connection.execute(sql, args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        """Run a query and return its first row, or ``None``."""
        row: sqlite3.Row | None = self._connection.execute(sql, args).fetchone()
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query and return the first column of its first row, or ``None``."""
        row = self._connection.execute(sql, args).fetchone()
        return None if row is None else row[0]

    async def drop_tables(self, tables: Sequence[str]) -> None:
        """Drop tables if they exist."""
        for table in tables:
            self._connection.execute(f'DROP TABLE IF EXISTS "{table}"')


def _add_owner_token(connection: sqlite3.Connection) -> None:
    """Give a checkpoint table made before fencing its token column (idempotent, and safe when
    several processes start at once: the check and the change run in one write transaction)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({CHECKPOINTS_TABLE})")}
        if OWNER_TOKEN_COLUMN not in columns:
            connection.execute(
                f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN {owner_token_column('INTEGER')}"
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SqliteSink(SqlSink):
    """Read models and checkpoints in one SQLite database file.

    Args:
        path: The database file (``":memory:"`` for a throwaway one).
        synchronous: SQLite's ``synchronous`` setting. ``"NORMAL"`` (the default, with WAL)
            survives any crash of your process; ``"FULL"`` also survives a power loss, at the
            cost of an fsync per transaction.
    """

    def __init__(
        self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL", "OFF"] = "NORMAL"
    ) -> None:
        self._path = str(path)
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    async def start(self) -> None:
        """Open the database (WAL mode) and create eventtape's tables."""
        if self._connection is not None:
            return
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute("PRAGMA busy_timeout=10000")
        for statement in _SCHEMA:
            connection.execute(statement)
        _add_owner_token(connection)
        self._connection = connection

    async def aclose(self) -> None:
        """Close the database."""
        if self._connection is not None:
            async with self._lock:
                self._connection.close()
                self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("start() the SqliteSink first")
        return self._connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """A write transaction (``BEGIN IMMEDIATE``), committed at the end of the block."""
        async with self._lock:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTransaction(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Run a read-only query outside any projection transaction (for your queries)."""
        return self._open().execute(sql, args).fetchall()

    def _p(self, n: int) -> str:
        return "?"

    def _timestamp(self, when: datetime) -> Any:
        return when.isoformat()
