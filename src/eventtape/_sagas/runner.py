"""The saga runner: deliver events to sagas in order, exactly-once effects, durable deadlines."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Self

from .._core.clock import Clock, SystemClock
from .._core.errors import DomainError, Fenced, InvalidArgument, ProjectionTimeout, describe
from .._core.events import Event, RecordedEvent
from .._core.runner_metrics import (
    DEADLINES_OVERDUE,
    DEADLINES_PENDING,
    EVENTS_PARKED,
    LAG_COUNT_LIMIT,
    SAGA_BACKLOG,
    SAGA_LAG,
    MetricSource,
    Points,
)
from .._core.sinks import ParkedEvent, ReadModelSink
from .._core.store import EventStore
from .._core.stream_ids import category_of
from .._core.telemetry import deadline_span, run_handler
from .._core.wire import (
    SAGA_CLAIMED_PARTITION,
    SAGA_DONE_PARTITION,
    SAGA_NAMESPACE,
    SAGA_PARKED_PARTITION,
)
from .._runtime.feed import Feed, check_history
from .._runtime.sharing import Coordinator, Sharing, lease_key
from .deadlines import Deadline, DeadlineBook
from .saga import Saga, SagaContext, StreamLocks

__all__ = ["SagaOptions", "SagaRunner"]

logger = logging.getLogger("eventtape.sagas")


@dataclasses.dataclass(frozen=True, slots=True)
class SagaOptions:
    """How a saga runner batches, runs in parallel and retries.

    Attributes:
        batch_size: Events claimed per checkpoint write.
        concurrency: Handlers running at once. Events with the same ordering key (by default
            the correlation id: one business transaction, one saga instance) are always handled
            one at a time, in store order; events with different keys run side by side, up to
            this many. ``1`` handles every event one at a time, in store order.
        max_attempts: Tries for a handler that raises something other than a domain error.
        backoff: Seconds before the second try; doubled each time, capped at ``max_backoff``.
        max_backoff: The longest wait between tries.
        start: Where a saga that has never run starts: ``"beginning"`` handles every stored
            event; ``"end"`` only those appended after it first starts (a saga deployed on a
            store with years of history should not act on all of it again).
        metrics_interval: Seconds between measurements of the backlog, lag, parked events and
            deadlines, when a meter provider is set (see the telemetry guide).
    """

    batch_size: int = 100
    concurrency: int = 64
    max_attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0
    start: Literal["beginning", "end"] = "beginning"
    metrics_interval: float = 5.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "concurrency", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{name} must be an int >= 1, not {value!r}")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{name} must be a number >= 0, not {value!r}")
        value = self.metrics_interval
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise InvalidArgument(f"metrics_interval must be a number > 0, not {value!r}")
        if self.start not in ("beginning", "end"):
            raise InvalidArgument(f"start must be 'beginning' or 'end', not {self.start!r}")


class _Lanes:
    """Runs jobs with the same key one after another, in the order given, and jobs with
    different keys concurrently, at most ``limit`` at a time."""

    def __init__(self, limit: int, on_failure: Callable[[BaseException], None]) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._queues: dict[str, collections.deque[Callable[[], Awaitable[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_failure = on_failure
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)  # its lane is running: it takes this job after the earlier ones
            return
        self._queues[key] = collections.deque([job])
        self._idle.clear()
        task = asyncio.create_task(self._drain(key), name=f"eventtape-saga-lane-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                async with self._slots:
                    await queue[0]()
                queue.popleft()
        except BaseException as failure:  # a sink failure while parking: stop this lane
            if not isinstance(failure, asyncio.CancelledError):
                self._on_failure(failure)
            raise
        finally:
            # No await between the last check of the queue and this: a job submitted
            # meanwhile would have been appended to it, and run above.
            del self._queues[key]
            if not self._queues:
                self._idle.set()

    async def drained(self) -> None:
        """Wait until every job submitted so far has run."""
        await self._idle.wait()

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Window:
    """Which dispatched positions are handled, to move the "done" checkpoint only past a
    position when every event up to it is handled (later ones may finish first)."""

    def __init__(self, handled: int) -> None:
        self.handled = handled  # every event up to here is handled
        self._open: collections.deque[list[int]] = collections.deque()  # [position, finished]
        self.moved = asyncio.Event()

    def open(self, position: int) -> list[int]:
        entry = [position, 0]
        self._open.append(entry)
        return entry

    def close(self, entry: list[int]) -> None:
        entry[1] = 1
        advanced = False
        while self._open and self._open[0][1]:
            self.handled = self._open.popleft()[0]
            advanced = True
        if advanced:
            self.moved.set()


class _SagaWorker:
    def __init__(
        self,
        store: EventStore,
        sink: ReadModelSink[Any],
        saga: Saga,
        options: SagaOptions,
        clock: Clock,
        token: int | None = None,
    ) -> None:
        self.token = token  # the lease's fencing token, when runners share sagas
        self.fenced: Fenced | None = None
        self.store = store
        self.sink = sink
        self.saga = saga
        self.options = options
        self.clock = clock
        self.deadlines = DeadlineBook(store, saga.name, clock)
        self._recover_until = 0
        # Every event, filtered in _dispatch: the checkpoint then moves past events of other
        # categories too, so waiting for any position works (sagas handle few events each).
        self.feed = Feed(store, None, options.batch_size, 0)
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes = _Lanes(options.concurrency, self._failed)
        self._locks = StreamLocks()
        self._window = _Window(0)
        # Bounds the events dispatched but not yet handled (memory, and how far recovery
        # may have to go back after a crash).
        self._room = asyncio.Semaphore(4 * max(options.batch_size, options.concurrency))
        self.in_flight = 0  # events dispatched to a handler, not handled yet
        self.failure: BaseException | None = None

    def _failed(self, failure: BaseException) -> None:
        logger.error("saga %s stopped: %s", self.saga.name, describe(failure))
        if self.failure is None:
            self.failure = failure
        self.feed.wake()

    async def _save_checkpoint(self, partition: str, position: int) -> None:
        async with self.sink.transaction() as tx:
            await self._save(tx, self.saga.name, partition, position)

    async def _save(self, tx: Any, name: str, partition: str, position: int) -> None:
        """Write a checkpoint mark; fenced by the lease's token when runners share sagas."""
        if self.token is None:
            await self.sink.save_position(tx, name, partition, 0, position)
        else:
            await self.sink.save_position(tx, name, partition, 0, position, token=self.token)

    async def start(self) -> None:
        name = self.saga.name
        feed = self.feed
        if self.token is not None:
            # Taking the saga over: stamp both marks with the token before reading them, so
            # the previous owner can write neither from now on.
            async with self.sink.transaction() as tx:
                await self.sink.claim(tx, name, SAGA_DONE_PARTITION, 0, self.token)
                await self.sink.claim(tx, name, SAGA_CLAIMED_PARTITION, 0, self.token)
        feed.checkpoint = await self.sink.load_position(name, SAGA_DONE_PARTITION, 0)
        self._recover_until = await self.sink.load_position(name, SAGA_CLAIMED_PARTITION, 0)
        await check_history(self.store, name, max(feed.checkpoint, self._recover_until))
        if feed.checkpoint == 0 and self._recover_until == 0 and self.options.start == "end":
            feed.checkpoint = await self.store.head_position()
            await self._save_checkpoint(SAGA_DONE_PARTITION, feed.checkpoint)
        self._window = _Window(feed.checkpoint)
        await self.deadlines.load()
        feed.start(f"saga-{name}")
        self._tasks = [
            asyncio.create_task(
                self._fenced(self._apply_batches), name=f"eventtape-saga-apply-{name}"
            ),
            asyncio.create_task(
                self._fenced(self._commit_done), name=f"eventtape-saga-done-{name}"
            ),
            asyncio.create_task(self._fire_deadlines(), name=f"eventtape-saga-deadlines-{name}"),
        ]

    @property
    def checkpoint(self) -> int:
        return self.feed.checkpoint

    async def stop(self) -> None:
        if not self._tasks:
            return  # never started
        applier, committer, timer = self._tasks
        timer.cancel()
        await self.feed.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await applier  # it stops at the feed's end, having dispatched what it took
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await timer
        if self.failure is None:
            await self._lanes.drained()  # every dispatched event is handled ...
        else:
            await self._lanes.cancel()
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await committer
        if self.failure is None:
            await self._commit()  # ... and recorded done

    async def _fenced(self, work: Callable[[], Awaitable[None]]) -> None:
        # Takes the method, not a coroutine: a task cancelled before it starts would leave a
        # coroutine object never awaited.
        try:
            await work()
        except Fenced as fenced:
            # Another runner owns the saga now: stop here (its deadline timer stops with us).
            logger.warning("%s", fenced)
            self.fenced = fenced
            self._tasks[-1].cancel()
            self.feed.stop_reading()

    async def _apply_batches(self) -> None:
        while (batch := await self.feed.next_batch()) is not None:
            last = batch[-1].position
            if last > self._recover_until:
                # Claim the batch first: after a crash, what lies between the last "done"
                # and the last "claimed" is handled again, in recovery mode.
                await self._save_checkpoint(SAGA_CLAIMED_PARTITION, last)
            for record in batch:
                await self._dispatch(record)

    async def _dispatch(self, record: RecordedEvent[Event]) -> None:
        entry = self._window.open(record.position)
        categories = self.saga.categories
        handler = None
        if categories is None or category_of(record.stream_id) in categories:
            handler = self.saga.reaction_to(type(record.event))
        if handler is None:
            self._window.close(entry)
            return
        await self._room.acquire()
        self.in_flight += 1
        recovering = record.position <= self._recover_until
        key = self.saga.ordering_key(record) if self.options.concurrency > 1 else ""

        async def job() -> None:
            async def run(ctx: SagaContext) -> None:
                await run_handler("saga", self.saga.name, handler, self.saga, record, ctx)

            await self._with_retries(
                run, record.event_id, record.correlation_id, recovering, record=record
            )
            self.in_flight -= 1
            self._room.release()
            self._window.close(entry)

        self._lanes.submit(key, job)

    async def handle_again(self, record: RecordedEvent[Event]) -> bool:
        """Handle an event the checkpoint has already passed (a parked one, retried by an
        operator), in recovery mode: commands it already issued are not issued again.

        Returns whether it succeeded; if it fails again it is parked again.
        """
        handler = self.saga.reaction_to(type(record.event))
        if handler is None:
            return True

        async def run(ctx: SagaContext) -> None:
            await run_handler("saga", self.saga.name, handler, self.saga, record, ctx)

        return await self._with_retries(
            run, record.event_id, record.correlation_id, True, record=record
        )

    async def _commit_done(self) -> None:
        """Write the "done" checkpoint as it moves: one write for however many events
        finished while the previous one was being written."""
        while True:
            await self._window.moved.wait()
            self._window.moved.clear()
            await self._commit()

    async def _commit(self) -> None:
        handled = self._window.handled
        if handled > self.feed.checkpoint:
            await self._save_checkpoint(SAGA_DONE_PARTITION, handled)
            self.feed.advance(handled)

    async def _with_retries(
        self,
        run: Any,
        cause_id: uuid.UUID,
        correlation_id: str | None,
        recovering: bool,
        *,
        record: RecordedEvent[Event] | None = None,
        label: str = "",
    ) -> bool:
        options = self.options
        what = f"{record.event_type} at position {record.position}" if record else label
        error: Exception | None = None
        for attempt in range(options.max_attempts):
            if attempt:
                await asyncio.sleep(min(options.backoff * 2 ** (attempt - 1), options.max_backoff))
            ctx = SagaContext(
                self.saga.name,
                cause_id,
                correlation_id,
                recovering=recovering or attempt > 0,
                clock=self.clock,
                deadlines=self.deadlines,
                locks=self._locks,
            )
            try:
                await run(ctx)
                return True
            except DomainError as caught:
                error = caught  # the same command would be refused again: no retry
                break
            except Exception as caught:
                error = caught
                logger.warning(
                    "saga %s failed on %s (try %d of %d): %s",
                    self.saga.name,
                    what,
                    attempt + 1,
                    options.max_attempts,
                    describe(caught),
                )
        assert error is not None
        logger.error("saga %s parked %s: %s", self.saga.name, what, describe(error))
        if record is not None:
            async with self.sink.transaction() as tx:
                await self.sink.park(
                    tx, self.saga.name, SAGA_PARKED_PARTITION, record, describe(error)
                )
        return False

    async def _fire_deadlines(self) -> None:
        while True:
            deadline = await self.deadlines.next_due()
            if deadline is None:
                continue
            handler = self.saga._deadline_handlers.get(deadline.name)
            fired: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def job(
                deadline: Deadline = deadline,
                handler: Any = handler,
                fired: asyncio.Future[None] = fired,
            ) -> None:
                try:
                    with deadline_span(
                        self.saga.name, deadline.name, deadline.key, deadline.scheduled_by
                    ):
                        if handler is not None:
                            await self._fire(deadline, handler)
                        # A store blip here must not stop the saga: retried, and if it still
                        # fails the deadline stays pending and fires again (in recovery mode).
                        await self._with_retries(
                            lambda ctx, deadline=deadline: self.deadlines.fired(deadline),
                            uuid.uuid5(SAGA_NAMESPACE, f"fired:{deadline.deadline_id}"),
                            deadline.correlation_id,
                            True,
                            label=f"recording deadline {deadline.name} for {deadline.key} fired",
                        )
                finally:
                    if not fired.done():
                        fired.set_result(None)

            # In the lane of its business transaction: never beside one of its events.
            key = (
                (deadline.correlation_id or f"deadline:{deadline.key}")
                if self.options.concurrency > 1
                else ""
            )
            self._lanes.submit(key, job)
            await fired  # until then it is still pending: the next wait would return it again

    async def _fire(self, deadline: Deadline, handler: Any) -> None:
        async def run(ctx: SagaContext) -> None:
            await handler(self.saga, deadline, ctx)

        cause = uuid.uuid5(SAGA_NAMESPACE, f"fire:{deadline.deadline_id}")
        # A deadline may have fired before a crash without being marked: recover.
        done = await self._with_retries(
            run,
            cause,
            deadline.correlation_id,
            True,
            label=f"deadline {deadline.name} for {deadline.key}",
        )
        if not done:
            logger.error("deadline %s for %s parked", deadline.name, deadline.key)

    def backlog(self) -> int:
        """Events read from the store that this saga reacts to, not handled yet."""
        categories = self.saga.categories
        queued = sum(
            1
            for record in self.feed.queued()
            if (categories is None or category_of(record.stream_id) in categories)
            and self.saga.reaction_to(type(record.event)) is not None
        )
        return queued + self.in_flight

    async def measure(self) -> Points:
        """This saga's series of the runner gauges."""
        series = {"eventtape.handler.name": self.saga.name}
        now = self.clock.now()
        pending = list(self.deadlines.pending.values())
        # Counted, not a difference of positions: those have gaps (on JetStream a message's
        # events are numbered sequence * 1000 + index), and other categories' events.
        lag = 0
        async for _ in self.store.read_all(
            from_position=self.feed.checkpoint + 1,
            categories=self.saga.categories,
            limit=LAG_COUNT_LIMIT,
        ):
            lag += 1
        parked = len(await self.sink.parked(self.saga.name))
        return {
            SAGA_BACKLOG: [(self.backlog(), series)],
            SAGA_LAG: [(lag, series)],
            EVENTS_PARKED: [(parked, {**series, "eventtape.handler.kind": "saga"})],
            DEADLINES_PENDING: [(len(pending), series)],
            DEADLINES_OVERDUE: [(sum(1 for d in pending if d.due_at <= now), series)],
        }

    async def wait_until(self, position: int, deadline: float) -> None:
        def alive() -> bool:
            if self.failure is not None:
                raise self.failure
            return True

        await self.feed.wait_until(position, deadline, self.saga.name, alive)


class SagaRunner:
    """Runs sagas (and process managers) against one store, with checkpoints in a sink.

    Each saga reads the store from its checkpoint on, in order. Events of one business
    transaction (the same :meth:`eventtape.Saga.ordering_key`, by default the correlation id)
    are handled one at a time, in store order; events of different transactions concurrently
    (``SagaOptions.concurrency``). Effects are exactly once: every command's events get
    deterministic ids, the "done" checkpoint only moves past a position once every event up
    to it is handled, and events between the last "done" and the last "claimed" checkpoint
    (those a crash may have interrupted) are handled again in recovery mode, which skips
    commands already applied.

    Args:
        store: The event store (its registry gains eventtape's deadline events).
        checkpoints: Where checkpoints and parked events live (a read-model sink; an
            in-memory SQLite ``SqliteSink(":memory:")`` for tests).
        sagas: The sagas to run (distinct names).
        clock: Time for deadlines (default: the system clock; :class:`eventtape.ManualClock` in
            tests).
        options: Batching, concurrency and retries.
        sharing: Run each saga in one of the runners given the same lease bucket at a time,
            with failover (see :class:`eventtape.Sharing`; a saga is one unit of work, its
            ``partitions`` setting does not apply). Sagas spread over the runners.
    """

    def __init__(
        self,
        store: EventStore,
        checkpoints: ReadModelSink[Any],
        sagas: Sequence[Saga],
        *,
        clock: Clock | None = None,
        options: SagaOptions | None = None,
        sharing: Sharing | None = None,
    ) -> None:
        names = [saga.name for saga in sagas]
        if len(set(names)) != len(names):
            raise ValueError(f"saga names must be distinct: {names}")
        self._store = store
        self._sink = checkpoints
        self._clock = clock or SystemClock()
        self._options = options or SagaOptions()
        self._sagas = {saga.name: saga for saga in sagas}
        self._sharing = sharing
        self._keys = {lease_key("saga", name, 0, 1): name for name in names} if sharing else {}
        self._coordinator: Coordinator | None = None
        self._metrics = MetricSource(self._measure, self._options.metrics_interval, "sagas")
        self._workers = (
            {}
            if sharing
            else {
                saga.name: _SagaWorker(store, checkpoints, saga, self._options, self._clock)
                for saga in sagas
            }
        )

    async def start(self) -> None:
        """Start every saga from its checkpoint, and its deadline timer.

        When sharing, start taking this runner's share of the sagas (see ``sharing``).
        """
        await self._sink.start()
        for worker in self._workers.values():
            await worker.start()
        if self._sharing is not None and self._coordinator is None:
            self._coordinator = Coordinator(
                self._sharing, list(self._keys), self._take_saga, self._drop_saga
            )
            await self._coordinator.start()
        self._metrics.start()

    async def _take_saga(self, key: str, token: int) -> None:
        saga = self._sagas[self._keys[key]]
        worker = _SagaWorker(self._store, self._sink, saga, self._options, self._clock, token)
        await worker.start()
        self._workers[saga.name] = worker

    async def _drop_saga(self, key: str) -> None:
        worker = self._workers.pop(self._keys[key], None)
        if worker is not None:
            await worker.stop()

    def owned(self) -> list[str]:
        """The sagas this runner runs now (all of them, unless sharing)."""
        return list(self._workers)

    async def aclose(self) -> None:
        """Stop every saga; each finishes the events it has started on and records them done.

        A runner sharing sagas then gives their leases up, so others take them at once.
        """
        await self._metrics.aclose()
        if self._coordinator is not None:
            await self._coordinator.aclose()
            self._coordinator = None
        for worker in self._workers.values():
            await worker.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def wait_until(
        self,
        position: int,
        *,
        sagas: Sequence[str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the timeout names the saga in its error)
    ) -> None:
        """Wait until the sagas have handled everything up to ``position``.

        Raises:
            ProjectionTimeout: Naming the saga and how far it got.
        """
        deadline = time.monotonic() + timeout
        if self._sharing is not None:
            # Other runners may run some sagas: their checkpoints in the sink are what counts.
            for name in sagas if sagas is not None else list(self._sagas):
                while (done := await self._sink.load_position(name, SAGA_DONE_PARTITION, 0)) < (
                    position
                ):
                    if time.monotonic() >= deadline:
                        raise ProjectionTimeout(name, position, done)
                    await asyncio.sleep(0.02)
            return
        for name in sagas if sagas is not None else list(self._workers):
            await self._workers[name].wait_until(position, deadline)

    async def refresh_metrics(self) -> None:
        """Measure the backlog, lag, parked events and deadlines now, for the gauges.

        The runner measures every ``metrics_interval`` seconds by itself; a handler serving a
        Prometheus scrape calls this first to answer with fresh values. Does nothing when no
        meter provider was set when the runner started.
        """
        await self._metrics.refresh()

    async def _measure(self) -> Points:
        points: Points = {}
        for worker in list(self._workers.values()):
            for name, series in (await worker.measure()).items():
                points.setdefault(name, []).extend(series)
        return points

    def pending_deadlines(self, saga: str) -> list[Deadline]:
        """The deadlines a saga has scheduled that have neither fired nor been cancelled."""
        return sorted(self._workers[saga].deadlines.pending.values(), key=lambda d: d.due_at)

    async def parked(self, saga: str) -> list[ParkedEvent]:
        """The events a saga gave up on, with why: they need a person's attention."""
        return await self._sink.parked(saga)

    def backlog(self, saga: str) -> int:
        """Events a saga has read and reacts to, not handled yet (a count, not a position
        difference: JetStream positions leave gaps)."""
        return self._workers[saga].backlog()

    def checkpoint(self, saga: str) -> int:
        """The last position a saga finished handling."""
        return self._workers[saga].checkpoint
