"""The projection runner: catch up, follow live, apply in batches, exactly once, rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self

from .._core.errors import ProjectionFailed, describe
from .._core.events import Event, RecordedEvent
from .._core.sinks import ReadModelSink
from .._core.store import EventStore
from .._core.telemetry import run_handler
from .._runtime.feed import Feed
from .projection import Partition, Projection

__all__ = ["ProjectionRunner", "ProjectionStatus", "RunnerOptions"]

logger = logging.getLogger("eventtape.projections")
_LAG_COUNT_LIMIT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How a runner batches, retries and partitions.

    Attributes:
        batch_size: At most this many events per transaction. A batch is applied as soon as
            nothing more is waiting, so batching adds no latency when traffic is light.
        max_attempts: Tries for an event whose handler raises, with exponential backoff.
        backoff: Seconds before the second try; doubled each time, capped at ``max_backoff``.
        max_backoff: The longest wait between tries.
        park_failures: After the last try, park the event (keep it in the sink's parked table
            and go on) instead of stopping the projection.
        partition: The slice of streams this runner owns (see :class:`eventtape.Partition`).
    """

    batch_size: int = 500
    max_attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0
    park_failures: bool = False
    partition: Partition = dataclasses.field(default_factory=Partition)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must not be negative")


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands.

    Attributes:
        name: The projection's name.
        partition: Its partition key.
        generation: The generation being written (the active one, outside a blue/green rebuild).
        state: ``running``, ``stopped`` or ``failed``.
        checkpoint: The last position seen and committed (0: nothing yet).
        head: The store's last position.
        lag_events: Events in the projection's categories after the checkpoint (counted up to
            10,000; see ``lag_events_capped``).
        lag_events_capped: Whether the count stopped at 10,000.
        lag_seconds: How long ago the oldest event not yet applied was recorded (0 if none).
        error: Why the projection failed, if it did.
    """

    name: str
    partition: str
    generation: int
    state: Literal["running", "stopped", "failed"]
    checkpoint: int
    head: int
    lag_events: int
    lag_events_capped: bool
    lag_seconds: float
    error: str | None


class _Worker:
    """Runs one projection (one generation of it) on one partition."""

    def __init__(
        self,
        store: EventStore,
        sink: ReadModelSink[Any],
        projection: Projection[Any],
        options: RunnerOptions,
        checkpoint: int,
    ) -> None:
        self.store = store
        self.sink = sink
        self.projection = projection
        self.options = options
        self.feed = Feed(store, projection.categories, options.batch_size, checkpoint)
        self.failure: ProjectionFailed | None = None
        self._applier: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def running(self) -> bool:
        return self._applier is not None and not self._applier.done()

    @property
    def checkpoint(self) -> int:
        return self.feed.checkpoint

    def start(self) -> None:
        self.feed.start(self.name)
        self._applier = asyncio.create_task(
            self._apply_batches(), name=f"eventtape-apply-{self.name}"
        )

    async def stop(self) -> None:
        """Stop reading; the batch being applied finishes (or rolls back) first."""
        await self.feed.stop()
        if self._applier is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._applier
        self.feed.wake()

    async def _apply_batches(self) -> None:
        while (batch := await self.feed.next_batch()) is not None:
            try:
                await self._apply(batch)
            except ProjectionFailed as failure:
                self.failure = failure
                logger.error("%s", failure)
                self.feed.stop_reading()
                self.feed.wake()
                return

    async def _apply(self, batch: list[RecordedEvent[Event]]) -> None:
        try:
            async with self.sink.transaction() as tx:
                for record in batch:
                    await self._handle(record, tx)
                await self._save(tx, batch[-1].position)
        except Exception:
            if len(batch) == 1:
                await self._apply_with_retries(batch[0])
                return
            # Find the event at fault: apply the batch one event per transaction.
            for record in batch:
                await self._apply_with_retries(record)
            return
        self._advance(batch[-1].position)

    async def _apply_with_retries(self, record: RecordedEvent[Event]) -> None:
        options = self.options
        error: Exception | None = None
        for attempt in range(options.max_attempts):
            if attempt:
                await asyncio.sleep(min(options.backoff * 2 ** (attempt - 1), options.max_backoff))
            try:
                async with self.sink.transaction() as tx:
                    await self._handle(record, tx)
                    await self._save(tx, record.position)
            except Exception as caught:
                error = caught
                logger.warning(
                    "projection %s failed on %s at position %d (try %d of %d): %s",
                    self.name,
                    record.event_type,
                    record.position,
                    attempt + 1,
                    options.max_attempts,
                    describe(caught),
                )
                continue
            self._advance(record.position)
            return
        assert error is not None
        if options.park_failures:
            async with self.sink.transaction() as tx:
                await self.sink.park(tx, self.name, options.partition.key, record, describe(error))
                await self._save(tx, record.position)
            logger.error(
                "projection %s parked %s at position %d",
                self.name,
                record.event_type,
                record.position,
            )
            self._advance(record.position)
            return
        raise ProjectionFailed(self.name, record.event_type, record.position, error) from error

    async def _handle(self, record: RecordedEvent[Event], tx: Any) -> None:
        if not self.options.partition.owns(record.stream_id):
            return
        handler = self.projection.handler_for(type(record.event))
        if handler is not None:
            await run_handler("projection", self.name, handler, self.projection, record, tx)

    async def _save(self, tx: Any, position: int) -> None:
        await self.sink.save_position(
            tx, self.name, self.options.partition.key, self.projection.generation, position
        )

    def _advance(self, position: int) -> None:
        self.feed.advance(position)

    async def wait_until(self, position: int, deadline: float) -> None:
        def alive() -> bool:
            if self.failure is not None:
                raise self.failure
            return self.running

        await self.feed.wait_until(position, deadline, self.name, alive)

    async def status(self) -> ProjectionStatus:
        head = await self.store.head_position()
        pending = [
            record
            async for record in self.store.read_all(
                from_position=self.checkpoint + 1,
                categories=self.projection.categories,
                limit=_LAG_COUNT_LIMIT + 1,
            )
        ]
        lag_seconds = 0.0
        if pending:
            lag_seconds = max((datetime.now(UTC) - pending[0].recorded_at).total_seconds(), 0.0)
        state: Literal["running", "stopped", "failed"] = (
            "failed" if self.failure else "running" if self.running else "stopped"
        )
        return ProjectionStatus(
            name=self.name,
            partition=self.options.partition.key,
            generation=self.projection.generation,
            state=state,
            checkpoint=self.checkpoint,
            head=head,
            lag_events=min(len(pending), _LAG_COUNT_LIMIT),
            lag_events_capped=len(pending) > _LAG_COUNT_LIMIT,
            lag_seconds=lag_seconds,
            error=str(self.failure) if self.failure else None,
        )


class ProjectionRunner:
    """Runs projections against one store and one sink, each in its own task.

    Each projection starts from its stored checkpoint, catches up, then follows live appends.
    Events are applied in batches, each batch in one sink transaction together with the new
    checkpoint, so after a crash at any point no event is applied twice and none is skipped.
    A failing projection stops (or parks the event) without stopping the others.

    Example:
        ```python
        async with ProjectionRunner(store, SqliteSink("read.db"), [OrderSummary()]) as runner:
            result = await orders.save(order)
            await runner.wait_until(result.position)  # read your own write
        ```

    Args:
        store: Where events come from.
        sink: Where read models and checkpoints go.
        projections: The projections to run (distinct names).
        options: Batching, retries and partition.
    """

    def __init__(
        self,
        store: EventStore,
        sink: ReadModelSink[Any],
        projections: Sequence[Projection[Any]],
        options: RunnerOptions | None = None,
    ) -> None:
        names = [projection.name for projection in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be distinct: {names}")
        self._store = store
        self._sink = sink
        self._projections = {projection.name: projection for projection in projections}
        self._options = options or RunnerOptions()
        self._workers: dict[str, _Worker] = {}
        self._started = False

    async def start(self) -> None:
        """Prepare the sink, create missing read models, and start every projection."""
        if self._started:
            return
        await self._sink.start()
        for projection in self._projections.values():
            self._workers[projection.name] = await self._start_worker(projection)
        self._started = True

    async def _start_worker(self, projection: Projection[Any]) -> _Worker:
        generation = await self._sink.active_generation(projection.name)
        if generation is None:
            generation = 1
            projection.generation = generation
            async with self._sink.transaction() as tx:
                await projection.create(tx)
                await self._sink.activate(tx, projection.name, projection.tables, generation)
        projection.generation = generation
        checkpoint = await self._sink.load_position(
            projection.name, self._options.partition.key, generation
        )
        worker = _Worker(self._store, self._sink, projection, self._options, checkpoint)
        worker.start()
        return worker

    async def aclose(self) -> None:
        """Stop every projection; each finishes (or rolls back) the batch it is applying."""
        for worker in self._workers.values():
            await worker.stop()
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _worker(self, name: str) -> _Worker:
        try:
            return self._workers[name]
        except KeyError:
            raise KeyError(f"no running projection named {name!r}") from None

    async def wait_until(
        self,
        position: int,
        *,
        projections: Sequence[str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the timeout names the projection in its error)
    ) -> None:
        """Wait until the projections have applied everything up to ``position``.

        Pass the position of an event in the projections' categories, such as
        ``AppendResult.position`` after a save: the call returns as soon as that event is
        applied, so the next query sees it ("read your writes").

        Raises:
            ProjectionTimeout: Naming the projection and how far it got, after ``timeout``.
            ProjectionFailed: If a projection stopped on a failing event.
        """
        deadline = time.monotonic() + timeout
        names = list(projections) if projections is not None else list(self._workers)
        for name in names:
            await self._worker(name).wait_until(position, deadline)

    async def status(self) -> list[ProjectionStatus]:
        """Return every projection's checkpoint, the store's head, and the lag between them."""
        return [await worker.status() for worker in self._workers.values()]

    def failure(self, name: str) -> ProjectionFailed | None:
        """Return why a projection stopped, or ``None`` if it did not fail."""
        return self._worker(name).failure

    async def restart(self, name: str) -> None:
        """Start a stopped or failed projection again from its checkpoint (after a fix)."""
        worker = self._worker(name)
        await worker.stop()
        self._workers[name] = await self._start_worker(worker.projection)

    async def rebuild(self, name: str, *, blue_green: bool = False) -> None:
        """Rebuild a projection's read model from the first event.

        In place (the default), the read model is reset through the projection's ``reset``
        hook and refilled while queries see it grow. With ``blue_green=True`` a new generation
        of its tables is filled beside the old one, which keeps serving; once the new one has
        caught up, the old one stops, the new one catches up to where the old one stopped, and
        the views switch to it in one transaction. The old tables are then dropped.
        """
        worker = self._worker(name)
        if not blue_green:
            await worker.stop()
            projection = worker.projection
            partition = self._options.partition.key
            async with self._sink.transaction() as tx:
                await projection.reset(tx)
                # Dropping tables can take their views along (PostgreSQL's CASCADE): re-point them.
                await self._sink.activate(tx, name, projection.tables, projection.generation)
                await self._sink.save_position(tx, name, partition, projection.generation, 0)
            self._workers[name] = await self._start_worker(projection)
            return
        if self._options.partition.count > 1:
            raise ValueError("a blue/green rebuild needs a runner owning every partition")
        old = worker.projection
        new = copy.copy(old)
        new.generation = old.generation + 1
        async with self._sink.transaction() as tx:
            await self._sink.drop_generation(tx, name, new.tables, new.generation)
            await new.create(tx)
        building = _Worker(self._store, self._sink, new, self._options, 0)
        building.start()
        try:
            await building.wait_until(worker.checkpoint, float("inf"))
            await worker.stop()
            await building.wait_until(worker.checkpoint, float("inf"))
            async with self._sink.transaction() as tx:
                await self._sink.activate(tx, name, new.tables, new.generation)
            async with self._sink.transaction() as tx:
                await self._sink.drop_generation(tx, name, old.tables, old.generation)
        except BaseException:
            await building.stop()
            raise
        self._workers[name] = building
