"""The PostgreSQL read-model sink (``pip install "eventtape[postgres]"``, asyncpg).

Handlers' writes are queued and sent when the transaction needs them (before a query, and at
commit), runs of the same statement as one pipelined ``executemany``: a batch of hundreds of
events costs a few round trips, not hundreds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

try:
    import asyncpg
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'the PostgreSQL sink needs asyncpg: pip install "eventtape[postgres]"'
    ) from error

from .._core.wire import CHECKPOINTS_TABLE, OWNER_TOKEN_COLUMN
from ._sql import SqlSink, checked_identifier, owner_token_column, schema

__all__ = ["PostgresSink", "PostgresTransaction"]

_SCHEMA = (
    *schema(position_type="BIGINT", timestamp_type="TIMESTAMPTZ"),
    # Checkpoint tables made before fencing get its token column; checked first, so a start
    # does not take the table's exclusive lock when there is nothing to change.
    f"""DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
        AND table_name = '{CHECKPOINTS_TABLE}' AND column_name = '{OWNER_TOKEN_COLUMN}') THEN
      ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS {owner_token_column("BIGINT")};
    END IF; END $$""",
)


_SCHEMA_LOCK = 0x6576_7461_7065  # an advisory lock id ("evtape"): eventtape's own DDL takes turns


class PostgresTransaction:
    """An open PostgreSQL transaction, handed to projection handlers. Placeholders are ``$n``.

    ``execute`` queues a write; queued writes are sent, in order, before any query of the
    transaction and at commit. An error in a queued write therefore surfaces there, and rolls
    the whole batch back (the runner then finds the failing event one at a time).
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    @property
    def connection(self) -> Any:
        """The underlying asyncpg connection, inside the transaction (flush() before using it)."""
        return self._connection

    async def execute(self, sql: str, *args: Any) -> None:
        """Queue a write."""
        self._queued.append((sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Queue a write once per row of arguments."""
        self._queued.extend((sql, tuple(row)) for row in rows)

    async def flush(self) -> None:
        """Send the queued writes: each run of one statement as a pipelined executemany."""
        queued, self._queued = self._queued, []
        start = 0
        while start < len(queued):
            sql = queued[start][0]
            end = start + 1
            while end < len(queued) and queued[end][0] == sql:
                end += 1
            if end - start == 1:
                await self._connection.execute(sql, *queued[start][1])
            else:
                await self._connection.executemany(sql, [args for _, args in queued[start:end]])
            start = end

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Send queued writes, then run a query and return every row."""
        await self.flush()
        return list(await self._connection.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        """Send queued writes, then return the query's first row, or ``None``."""
        await self.flush()
        return await self._connection.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Send queued writes, then return the first column of the first row, or ``None``."""
        await self.flush()
        return await self._connection.fetchval(sql, *args)

    async def drop_tables(self, tables: Sequence[str]) -> None:
        """Queue dropping tables if they exist."""
        for table in tables:
            await self.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')


class PostgresSink(SqlSink):
    """Read models and checkpoints in one PostgreSQL schema.

    Args:
        dsn: A libpq connection string or URL.
        schema: The schema holding the read models and eventtape's tables (created if missing).
        min_size: Fewest pooled connections.
        max_size: Most pooled connections (one per concurrent batch, plus your queries).
    """

    def __init__(
        self, dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
    ) -> None:
        self._dsn = dsn
        self._schema = checked_identifier(schema)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None

    @property
    def schema(self) -> str:
        """The schema holding the read models."""
        return self._schema

    async def start(self) -> None:
        """Connect, create the schema and eventtape's tables."""
        if self._pool is not None:
            return
        # Several copies of a service start at once: concurrent CREATE ... IF NOT EXISTS of the
        # same name can still fail on PostgreSQL's catalog, so creations take turns.
        connection = await asyncpg.connect(self._dsn)
        try:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
        finally:
            await connection.close()
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            server_settings={"search_path": self._schema},
        )
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            for statement in _SCHEMA:
                await connection.execute(statement)

    async def aclose(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _open(self) -> Any:
        if self._pool is None:
            raise RuntimeError("start() the PostgresSink first")
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A transaction, committed (queued writes first) at the end of the block."""
        async with self._open().acquire() as connection, connection.transaction():
            tx = PostgresTransaction(connection)
            yield tx
            await tx.flush()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run a query outside any projection transaction (for your queries)."""
        async with self._open().acquire() as connection:
            return list(await connection.fetch(sql, *args))

    def _p(self, n: int) -> str:
        return f"${n}"

    def _timestamp(self, when: datetime) -> Any:
        return when
