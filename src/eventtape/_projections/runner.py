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

from .._core.errors import (
    Fenced,
    ProjectionFailed,
    ProjectionTimeout,
    StoreConfigurationError,
    describe,
)
from .._core.events import Event, RecordedEvent
from .._core.runner_metrics import (
    EVENTS_PARKED,
    LAG_COUNT_LIMIT,
    PROJECTION_LAG,
    MetricSource,
    Point,
    Points,
)
from .._core.sinks import ReadModelSink
from .._core.store import EventStore
from .._core.telemetry import run_handler
from .._runtime.feed import Feed, check_history
from .._runtime.sharing import Coordinator, Sharing, lease_key
from .projection import Partition, Projection

__all__ = ["ProjectionRunner", "ProjectionStatus", "RunnerOptions"]

logger = logging.getLogger("eventtape.projections")
_LAG_COUNT_LIMIT = LAG_COUNT_LIMIT


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
        metrics_interval: Seconds between measurements of the lag and parked events, when a
            meter provider is set (see the telemetry guide; nothing is measured otherwise).
    """

    batch_size: int = 500
    max_attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0
    park_failures: bool = False
    partition: Partition = dataclasses.field(default_factory=Partition)
    metrics_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must not be negative")
        if not self.metrics_interval > 0:  # also refuses NaN
            raise ValueError("metrics_interval must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands.

    Attributes:
        name: The projection's name.
        partition: Its partition key.
        generation: The generation being written (the active one, outside a blue/green rebuild).
        state: ``running``, ``stopped`` or ``failed``; for a runner sharing partitions, also
            ``elsewhere`` (another runner owns the partition) or ``unowned`` (nobody, for now:
            its owner died and its lease has not expired yet).
        checkpoint: The last position seen and committed (0: nothing yet).
        head: The store's last position.
        lag_events: Events in the projection's categories after the checkpoint (counted up to
            10,000; see ``lag_events_capped``).
        lag_events_capped: Whether the count stopped at 10,000.
        lag_seconds: How long ago the oldest event not yet applied was recorded (0 if none).
        error: Why the projection failed, if it did.
        owner: The member owning the partition, when runners share partitions.
        owner_token: Its lease's fencing token (the one its checkpoint writes carry).
    """

    name: str
    partition: str
    generation: int
    state: Literal["running", "stopped", "failed", "elsewhere", "unowned"]
    checkpoint: int
    head: int
    lag_events: int
    lag_events_capped: bool
    lag_seconds: float
    error: str | None
    owner: str | None = None
    owner_token: int | None = None


class _Worker:
    """Runs one projection (one generation of it) on one partition."""

    def __init__(
        self,
        store: EventStore,
        sink: ReadModelSink[Any],
        projection: Projection[Any],
        options: RunnerOptions,
        checkpoint: int,
        token: int | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.projection = projection
        self.options = options
        self.feed = Feed(store, projection.categories, options.batch_size, checkpoint)
        self.token = token
        self.failure: ProjectionFailed | None = None
        self.fenced: Fenced | None = None
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
            except Fenced as fenced:
                # Another runner owns the partition now; what this batch wrote was rolled back.
                self.fenced = fenced
                logger.warning("%s", fenced)
                self.feed.stop_reading()
                self.feed.wake()
                return

    async def _apply(self, batch: list[RecordedEvent[Event]]) -> None:
        try:
            async with self.sink.transaction() as tx:
                for record in batch:
                    await self._handle(record, tx)
                await self._save(tx, batch[-1].position)
        except Fenced:
            raise
        except Exception:
            # A handler may fail because another runner owns the partition now (it wrote the
            # rows first): check the fence before retrying, so that is not taken for a bug.
            await self._check_fence()
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
            except Fenced:
                raise
            except Exception as caught:
                error = caught
                await self._check_fence()
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

    async def _check_fence(self) -> None:
        """Raise :class:`Fenced` if another runner has claimed this partition since."""
        if self.token is None:
            return
        try:
            async with self.sink.transaction() as tx:
                await self.sink.claim(
                    tx,
                    self.name,
                    self.options.partition.key,
                    self.projection.generation,
                    self.token,
                )
        except Fenced:
            raise
        except Exception:
            return  # the database may be away: the retries will tell

    async def _save(self, tx: Any, position: int) -> None:
        partition, generation = self.options.partition.key, self.projection.generation
        if self.token is None:
            await self.sink.save_position(tx, self.name, partition, generation, position)
        else:
            await self.sink.save_position(
                tx, self.name, partition, generation, position, token=self.token
            )

    def _advance(self, position: int) -> None:
        self.feed.advance(position)

    async def wait_until(self, position: int, deadline: float) -> None:
        def alive() -> bool:
            if self.failure is not None:
                raise self.failure
            return self.running

        await self.feed.wait_until(position, deadline, self.name, alive)

    async def status(self, owner: str | None = None) -> ProjectionStatus:
        state: Literal["running", "stopped", "failed"] = (
            "failed" if self.failure else "running" if self.running else "stopped"
        )
        return await _status(
            self.store,
            self.projection,
            self.options.partition.key,
            self.checkpoint,
            state,
            str(self.failure) if self.failure else None,
            owner,
            self.token,
        )


async def _status(
    store: EventStore,
    projection: Projection[Any],
    partition: str,
    checkpoint: int,
    state: Literal["running", "stopped", "failed", "elsewhere", "unowned"],
    error: str | None,
    owner: str | None,
    token: int | None,
) -> ProjectionStatus:
    head = await store.head_position()
    pending = [
        record
        async for record in store.read_all(
            from_position=checkpoint + 1,
            categories=projection.categories,
            limit=_LAG_COUNT_LIMIT + 1,
        )
    ]
    lag_seconds = 0.0
    if pending:
        lag_seconds = max((datetime.now(UTC) - pending[0].recorded_at).total_seconds(), 0.0)
    return ProjectionStatus(
        name=projection.name,
        partition=partition,
        generation=projection.generation,
        state=state,
        checkpoint=checkpoint,
        head=head,
        lag_events=min(len(pending), _LAG_COUNT_LIMIT),
        lag_events_capped=len(pending) > _LAG_COUNT_LIMIT,
        lag_seconds=lag_seconds,
        error=error,
        owner=owner,
        owner_token=token,
    )


def _series(name: str, partition: str) -> dict[str, str]:
    """A projection partition's metric attributes."""
    return {"eventtape.handler.name": name, "eventtape.partition": partition}


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
        sharing: Share each projection's partitions with the other runners given the same
            lease bucket, with failover (see :class:`eventtape.Sharing`); ``options.partition``
            is then ignored.
    """

    def __init__(
        self,
        store: EventStore,
        sink: ReadModelSink[Any],
        projections: Sequence[Projection[Any]],
        options: RunnerOptions | None = None,
        *,
        sharing: Sharing | None = None,
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
        self._sharing = sharing
        # Shared mode: every partition's lease key, what it names, and the workers owned here.
        self._keys: dict[str, tuple[str, Partition]] = {}
        if sharing is not None:
            if self._options.partition != Partition():
                raise ValueError("with sharing, set Sharing.partitions, not options.partition")
            count = sharing.partitions
            for name in names:
                for index in range(count):
                    key = lease_key("projection", name, index, count)
                    self._keys[key] = (name, Partition(index, count))
        self._shared: dict[str, _Worker] = {}
        self._coordinator: Coordinator | None = None
        self._metrics = MetricSource(self._measure, self._options.metrics_interval, "projections")

    async def start(self) -> None:
        """Prepare the sink, create missing read models, and start every projection.

        When sharing partitions, start taking this runner's share of them (see ``sharing``).
        """
        if self._started:
            return
        await self._sink.start()
        for projection in self._projections.values():
            if self._sharing is None:
                self._workers[projection.name] = await self._start_worker(projection)
            else:
                await self._prepare(projection)
                await self._check_partition_count(projection)
        if self._sharing is not None:
            self._coordinator = Coordinator(
                self._sharing, list(self._keys), self._take_partition, self._drop_partition
            )
            await self._coordinator.start()
        self._started = True
        self._metrics.start()

    async def _prepare(self, projection: Projection[Any]) -> None:
        generation = await self._sink.active_generation(projection.name)
        if generation is None:
            generation = 1
            projection.generation = generation
            try:
                async with self._sink.transaction() as tx:
                    await projection.create(tx)
                    await self._sink.activate(tx, projection.name, projection.tables, generation)
            except Exception:
                # Another copy starting at the same time may have created them first.
                found = await self._sink.active_generation(projection.name)
                if found is None:
                    raise
                generation = found
        projection.generation = generation

    async def _check_partition_count(self, projection: Projection[Any]) -> None:
        # Copies cut into different counts would each apply some streams' events (their
        # checkpoints have different names, so no fence is shared): refuse to start instead.
        assert self._sharing is not None
        stored = getattr(self._sink, "owner_tokens", None)
        if stored is None:
            return  # a sink that cannot list its checkpoints
        count = self._sharing.partitions
        found = await stored(projection.name, projection.generation)
        other = sorted(key for key in found if key != "all" and not key.endswith(f"/{count}"))
        if other:
            raise StoreConfigurationError(
                f"projection {projection.name!r} (generation {projection.generation}) has"
                f" checkpoints of partitions {other[:3]}, this runner cuts it into {count}:"
                " every copy must use the same Sharing.partitions (rebuild blue/green to change)"
            )

    async def _start_worker(self, projection: Projection[Any]) -> _Worker:
        await self._prepare(projection)
        checkpoint = await self._sink.load_position(
            projection.name, self._options.partition.key, projection.generation
        )
        await check_history(self._store, projection.name, checkpoint)
        worker = _Worker(self._store, self._sink, projection, self._options, checkpoint)
        worker.start()
        return worker

    async def _take_partition(self, key: str, token: int) -> None:
        """Claim a partition's checkpoint with the lease's token, then work on it."""
        name, partition = self._keys[key]
        projection = self._projections[name]
        generation = projection.generation
        async with self._sink.transaction() as tx:
            checkpoint = await self._sink.claim(tx, name, partition.key, generation, token)
            if checkpoint == 0:
                # A read model kept so far by one runner owning everything ("all") goes on
                # from where that runner stopped, instead of applying its events again.
                checkpoint = await self._sink.load_position(name, Partition().key, generation)
                if checkpoint:
                    await self._sink.save_position(
                        tx, name, partition.key, generation, checkpoint, token=token
                    )
        await check_history(self._store, name, checkpoint)
        options = dataclasses.replace(self._options, partition=partition)
        worker = _Worker(self._store, self._sink, projection, options, checkpoint, token)
        worker.start()
        self._shared[key] = worker

    async def _drop_partition(self, key: str) -> None:
        worker = self._shared.pop(key, None)
        if worker is not None:
            await worker.stop()

    async def aclose(self) -> None:
        """Stop every projection; each finishes (or rolls back) the batch it is applying.

        A runner sharing partitions then gives its leases up, so others take them at once.
        """
        await self._metrics.aclose()
        if self._coordinator is not None:
            await self._coordinator.aclose()
            self._coordinator = None
        for worker in self._workers.values():
            await worker.stop()
        self._started = False

    async def refresh_metrics(self) -> None:
        """Measure the lag and parked events now, for the gauges (see the telemetry guide).

        The runner measures every ``metrics_interval`` seconds by itself; a handler serving a
        Prometheus scrape calls this first to answer with fresh values. Does nothing when no
        meter provider was set when the runner started.
        """
        await self._metrics.refresh()

    async def _measure(self) -> Points:
        workers = list(self._workers.values() if self._sharing is None else self._shared.values())
        lag: list[Point] = []
        parked_counts: dict[tuple[str, str], int] = {}
        for worker in workers:
            status = await worker.status()
            key = (worker.name, worker.options.partition.key)
            lag.append((status.lag_events, _series(*key)))
            parked_counts[key] = 0
        for name in {name for name, _ in parked_counts}:
            for event in await self._sink.parked(name):
                if (name, event.partition) in parked_counts:
                    parked_counts[(name, event.partition)] += 1
        parked: list[Point] = [
            (count, {**_series(name, partition), "eventtape.handler.kind": "projection"})
            for (name, partition), count in parked_counts.items()
        ]
        return {PROJECTION_LAG: lag, EVENTS_PARKED: parked}

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
        if self._sharing is not None:
            names = list(projections) if projections is not None else list(self._projections)
            for name in names:
                await self._wait_shared(name, position, deadline)
            return
        names = list(projections) if projections is not None else list(self._workers)
        for name in names:
            await self._worker(name).wait_until(position, deadline)

    async def _wait_shared(self, name: str, position: int, deadline: float) -> None:
        # Other runners write some partitions: the checkpoints in the sink are what counts.
        if name not in self._projections:
            raise KeyError(f"no running projection named {name!r}")
        generation = self._projections[name].generation
        partitions = [
            partition.key for key_name, partition in self._keys.values() if key_name == name
        ]
        while True:
            for worker in self._shared.values():
                if worker.name == name and worker.failure is not None:
                    raise worker.failure
            reached = min(
                [await self._sink.load_position(name, key, generation) for key in partitions]
            )
            if reached >= position:
                return
            if time.monotonic() >= deadline:
                raise ProjectionTimeout(name, position, reached)
            await asyncio.sleep(0.02)

    async def status(self) -> list[ProjectionStatus]:
        """Return every projection's checkpoint, the store's head, and the lag between them.

        A runner sharing partitions returns one row per partition of each projection, owned
        here or not, with its owner (from the leases) and the checkpoint in the sink.
        """
        if self._coordinator is None:
            return [await worker.status() for worker in self._workers.values()]
        member = self._coordinator.member
        assert self._sharing is not None
        held = await self._sharing.leases.holders(list(self._keys))
        statuses = []
        for key, (name, partition) in self._keys.items():
            worker = self._shared.get(key)
            if worker is not None:
                statuses.append(await worker.status(member))
                continue
            projection = self._projections[name]
            lease = held.get(key)
            checkpoint = await self._sink.load_position(name, partition.key, projection.generation)
            statuses.append(
                await _status(
                    self._store,
                    projection,
                    partition.key,
                    checkpoint,
                    "unowned" if lease is None else "elsewhere",
                    None,
                    None if lease is None else lease.owner,
                    None if lease is None else lease.token,
                )
            )
        return statuses

    def owned(self) -> list[tuple[str, str]]:
        """The (projection, partition) pairs this runner works on now (all, unless sharing)."""
        if self._sharing is None:
            return [(name, self._options.partition.key) for name in self._workers]
        return [(w.name, w.options.partition.key) for w in self._shared.values()]

    def failure(self, name: str) -> ProjectionFailed | None:
        """Return why a projection stopped, or ``None`` if it did not fail."""
        if self._sharing is not None:
            for worker in self._shared.values():
                if worker.name == name and worker.failure is not None:
                    return worker.failure
            return None
        return self._worker(name).failure

    async def restart(self, name: str) -> None:
        """Start a stopped or failed projection again from its checkpoint (after a fix)."""
        if self._sharing is not None:
            for key, worker in list(self._shared.items()):
                if worker.name == name and worker.token is not None:
                    await worker.stop()
                    await self._take_partition(key, worker.token)
            return
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
        if self._sharing is not None:
            raise ValueError("rebuild with a runner that does not share partitions, others stopped")
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
