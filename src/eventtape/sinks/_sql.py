"""What the SQL sinks share: checkpoints, generations and parked events, in portable SQL.

A concrete sink says how it connects (``transaction``, ``fetch``), how it writes a placeholder
(``?`` or ``$n``) and a timestamp; everything else is here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .._core.errors import Fenced
from .._core.events import Event, RecordedEvent
from .._core.sinks import ParkedEvent
from .._core.wire import CHECKPOINTS_TABLE, GENERATIONS_TABLE, OWNER_TOKEN_COLUMN, PARKED_TABLE

__all__ = ["SqlSink", "checked_identifier", "owner_token_column", "schema", "view_sql"]


def schema(*, position_type: str, timestamp_type: str) -> tuple[str, ...]:
    """The statements creating eventtape's own tables, in a database's column types."""
    return (
        f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (
        projection TEXT NOT NULL, partition TEXT NOT NULL, generation INTEGER NOT NULL,
        position {position_type} NOT NULL, updated_at {timestamp_type} NOT NULL,
        {owner_token_column(position_type)},
        PRIMARY KEY (projection, partition, generation))""",
        f"""CREATE TABLE IF NOT EXISTS {GENERATIONS_TABLE} (
        projection TEXT PRIMARY KEY, generation INTEGER NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {PARKED_TABLE} (
        projection TEXT NOT NULL, partition TEXT NOT NULL, position {position_type} NOT NULL,
        stream_id TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
        error TEXT NOT NULL, parked_at {timestamp_type} NOT NULL,
        PRIMARY KEY (projection, partition, position))""",
    )


def owner_token_column(integer_type: str) -> str:
    """The checkpoint column holding the fencing token (added to older tables on start)."""
    return f"{OWNER_TOKEN_COLUMN} {integer_type} NOT NULL DEFAULT 0"


class SqlSink:
    """Base of :class:`SqliteSink` and :class:`PostgresSink`.

    See :class:`eventtape.ReadModelSink`.
    """

    def _p(self, n: int) -> str:
        """The n-th (1-based) placeholder."""
        raise NotImplementedError

    def _timestamp(self, when: datetime) -> Any:
        """A timestamp as the database takes it."""
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run a read-only query (for your queries, and the runner's reads)."""
        raise NotImplementedError

    def _marks(self, count: int) -> str:
        return ", ".join(self._p(n) for n in range(1, count + 1))

    async def active_generation(self, projection: str) -> int | None:
        """See :meth:`eventtape.ReadModelSink.active_generation`."""
        rows = await self.fetch(
            f"SELECT generation FROM {GENERATIONS_TABLE} WHERE projection = {self._p(1)}",
            projection,
        )
        return int(rows[0][0]) if rows else None

    async def load_position(self, projection: str, partition: str, generation: int) -> int:
        """See :meth:`eventtape.ReadModelSink.load_position`."""
        p = self._p
        rows = await self.fetch(
            f"SELECT position FROM {CHECKPOINTS_TABLE}"
            f" WHERE projection = {p(1)} AND partition = {p(2)} AND generation = {p(3)}",
            projection,
            partition,
            generation,
        )
        return int(rows[0][0]) if rows else 0

    async def save_position(
        self,
        tx: Any,
        projection: str,
        partition: str,
        generation: int,
        position: int,
        *,
        token: int | None = None,
    ) -> None:
        """See :meth:`eventtape.ReadModelSink.save_position`."""
        if token is None:
            await tx.execute(
                f"INSERT INTO {CHECKPOINTS_TABLE}"
                " (projection, partition, generation, position, updated_at)"
                f" VALUES ({self._marks(5)})"
                " ON CONFLICT (projection, partition, generation)"
                " DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                projection,
                partition,
                generation,
                position,
                self._timestamp(datetime.now(UTC)),
            )
            return
        await self._fenced_upsert(
            tx, projection, partition, generation, token, position, "position = excluded.position,"
        )

    async def claim(
        self, tx: Any, projection: str, partition: str, generation: int, token: int
    ) -> int:
        """See :meth:`eventtape.ReadModelSink.claim`."""
        return await self._fenced_upsert(tx, projection, partition, generation, token, 0, "")

    async def _fenced_upsert(
        self,
        tx: Any,
        projection: str,
        partition: str,
        generation: int,
        token: int,
        position: int,
        set_position: str,
    ) -> int:
        # One statement, so the check and the write are one step under the row's lock: the
        # row is updated only if the stored token is not newer than ours.
        table, column = CHECKPOINTS_TABLE, OWNER_TOKEN_COLUMN
        row = await tx.fetchrow(
            f"INSERT INTO {table}"
            f" (projection, partition, generation, position, updated_at, {column})"
            f" VALUES ({self._marks(6)})"
            " ON CONFLICT (projection, partition, generation)"
            f" DO UPDATE SET {set_position} updated_at = excluded.updated_at,"
            f" {column} = excluded.{column}"
            f" WHERE {table}.{column} <= excluded.{column}"
            f" RETURNING position",
            projection,
            partition,
            generation,
            position,
            self._timestamp(datetime.now(UTC)),
            token,
        )
        if row is None:
            stored = await tx.fetchval(
                f"SELECT {column} FROM {table} WHERE projection = {self._p(1)}"
                f" AND partition = {self._p(2)} AND generation = {self._p(3)}",
                projection,
                partition,
                generation,
            )
            raise Fenced(projection, partition, token, int(stored))
        return int(row[0])

    async def owner_tokens(self, projection: str, generation: int) -> dict[str, int]:
        """Return the fencing token stored with each partition's checkpoint of a generation."""
        rows = await self.fetch(
            f"SELECT partition, {OWNER_TOKEN_COLUMN} FROM {CHECKPOINTS_TABLE}"
            f" WHERE projection = {self._p(1)} AND generation = {self._p(2)}",
            projection,
            generation,
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def activate(
        self, tx: Any, projection: str, tables: Sequence[str], generation: int
    ) -> None:
        """See :meth:`eventtape.ReadModelSink.activate`."""
        for table in tables:
            for statement in view_sql(table, generation):
                await tx.execute(statement)
        await tx.execute(
            f"INSERT INTO {GENERATIONS_TABLE} (projection, generation)"
            f" VALUES ({self._marks(2)})"
            " ON CONFLICT (projection) DO UPDATE SET generation = excluded.generation",
            projection,
            generation,
        )

    async def drop_generation(
        self, tx: Any, projection: str, tables: Sequence[str], generation: int
    ) -> None:
        """See :meth:`eventtape.ReadModelSink.drop_generation`."""
        await tx.drop_tables([f"{table}__g{generation}" for table in tables])
        await tx.execute(
            f"DELETE FROM {CHECKPOINTS_TABLE}"
            f" WHERE projection = {self._p(1)} AND generation = {self._p(2)}",
            projection,
            generation,
        )

    async def park(
        self, tx: Any, projection: str, partition: str, record: RecordedEvent[Event], error: str
    ) -> None:
        """See :meth:`eventtape.ReadModelSink.park`."""
        await tx.execute(
            f"INSERT INTO {PARKED_TABLE} VALUES ({self._marks(8)})"
            " ON CONFLICT (projection, partition, position) DO UPDATE SET error = excluded.error",
            projection,
            partition,
            record.position,
            record.stream_id,
            str(record.event_id),
            record.event_type,
            error,
            self._timestamp(datetime.now(UTC)),
        )

    async def parked(self, projection: str) -> list[ParkedEvent]:
        """See :meth:`eventtape.ReadModelSink.parked`."""
        rows = await self.fetch(
            "SELECT projection, partition, position, stream_id, event_id, event_type, error,"
            f" parked_at FROM {PARKED_TABLE} WHERE projection = {self._p(1)} ORDER BY position",
            projection,
        )
        return [
            ParkedEvent(
                projection=row[0],
                partition=row[1],
                position=row[2],
                stream_id=row[3],
                event_id=row[4],
                event_type=row[5],
                error=row[6],
                parked_at=(
                    datetime.fromisoformat(row[7]) if isinstance(row[7], str) else row[7]
                ).astimezone(UTC),
            )
            for row in rows
        ]


def view_sql(table: str, generation: int) -> tuple[str, str]:
    """Return the statements that re-point the view ``table`` to a generation's table."""
    return (
        f'DROP VIEW IF EXISTS "{table}"',
        f'CREATE VIEW "{table}" AS SELECT * FROM "{table}__g{generation}"',
    )


def checked_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name
