"""Process managers: an orchestrated saga, one event-sourced instance per business transaction.

A process manager starts an instance when one of its ``starts_on`` events arrives, runs its
``steps`` in order, and when a step is refused (a :class:`eventtape.DomainError`), runs the
compensations of the steps already done, in reverse order. Each instance's progress is an
event stream of its own, so it can be queried, and a run cut short by a crash resumes where it
stopped.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Literal

from .._core.errors import AggregateNotFound, DomainError
from .._core.events import Event, RecordedEvent
from .._core.store import EventStore
from .._core.system_events import (
    ProcessFinished,
    ProcessStarted,
    StepCompensated,
    StepCompleted,
    StepRefused,
)
from .._core.telemetry import span
from .._model.aggregate import Aggregate, applies
from .._model.repository import Repository
from .saga import Saga, SagaContext, reacts_to

__all__ = ["ProcessInstance", "ProcessManager", "Step"]

Status = Literal["running", "completed", "compensated", "needs_attention"]


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step of a process: the method that acts, and the one that undoes it (if any).

    Both are names of async methods of the process manager taking ``(record, ctx)``: the event
    that started the instance and a :class:`eventtape.SagaContext`.
    """

    action: str
    compensation: str | None = None


class ProcessInstance(Aggregate):
    """The state of one process instance: where it is, and how it ended.

    Attributes:
        status: ``running``, or a terminal state: ``completed``, ``compensated`` or
            ``needs_attention`` (a compensation was refused: a person must look).
        completed: Steps done, in order.
        compensated: Steps undone, in order.
        reason: Why it did not complete, if it did not.
    """

    stream_category = "process"
    status: str
    completed: list[str]
    compensated: list[str]
    reason: str | None

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.completed = []
        self.compensated = []
        self.reason = None

    @classmethod
    def start(cls, process: str, key: str, started_by: str) -> ProcessInstance:
        instance = cls(f"{process}:{key}")
        instance.record(ProcessStarted(process=process, key=key, started_by=started_by))
        return instance

    def complete(self, step: str) -> None:
        if step not in self.completed:
            self.record(StepCompleted(step=step))

    def refuse(self, step: str, reason: str) -> None:
        if self.status == "running":
            self.record(StepRefused(step=step, reason=reason))

    def compensate(self, step: str) -> None:
        if step not in self.compensated:
            self.record(StepCompensated(step=step))

    def finish(
        self,
        outcome: Literal["completed", "compensated", "needs_attention"],
        reason: str | None = None,
    ) -> None:
        if self.status in ("running", "compensating"):
            self.record(ProcessFinished(outcome=outcome, reason=reason))

    @applies(ProcessStarted)
    def _started(self, event: ProcessStarted) -> None:
        self.status = "running"

    @applies(StepCompleted)
    def _step_completed(self, event: StepCompleted) -> None:
        self.completed.append(event.step)

    @applies(StepRefused)
    def _step_refused(self, event: StepRefused) -> None:
        self.status = "compensating"
        self.reason = f"{event.step}: {event.reason}"

    @applies(StepCompensated)
    def _step_compensated(self, event: StepCompensated) -> None:
        self.compensated.append(event.step)

    @applies(ProcessFinished)
    def _finished(self, event: ProcessFinished) -> None:
        self.status = event.outcome
        if event.reason:
            self.reason = event.reason


class ProcessManager(Saga):
    """Base class of orchestrated sagas.

    Class attributes:
        starts_on: The event types that start an instance.
        steps: The :class:`Step` sequence.

    Override :meth:`key_for` to say which instance an event starts (default: its stream id,
    so one instance per order when started by ``OrderPlaced``).

    Args:
        store: The event store holding the instances' streams (``process-<name>:<key>``).
    """

    starts_on: ClassVar[tuple[type[Event], ...]] = ()
    steps: ClassVar[tuple[Step, ...]] = ()
    _begin_on_start: ClassVar[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.starts_on:
            # A fresh function per subclass: the marker @reacts_to sets must not be shared.
            async def begin(
                self: ProcessManager, record: RecordedEvent[Event], ctx: SagaContext
            ) -> None:
                await self._begin(record, ctx)

            cls._begin_on_start = reacts_to(*cls.starts_on)(begin)
        super().__init_subclass__(**kwargs)
        for step in cls.steps:
            for method in (step.action, step.compensation):
                if method is not None and not callable(getattr(cls, method, None)):
                    raise TypeError(f"{cls.__name__} has no method {method!r} for its steps")

    def __init__(self, store: EventStore) -> None:
        self.instances = Repository(store, ProcessInstance)

    def key_for(self, record: RecordedEvent[Event]) -> str:
        """The key of the instance ``record`` starts (default: its stream id)."""
        return record.stream_id

    async def instance(self, key: str) -> ProcessInstance:
        """Return the instance with ``key``, to see its status.

        Raises:
            AggregateNotFound: If no such instance started.
        """
        return await self.instances.load(f"{self.name}:{key}")

    async def _begin(self, record: RecordedEvent[Event], ctx: SagaContext) -> None:
        key = self.key_for(record)
        instance_id = f"{self.name}:{key}"
        try:
            instance = await self.instances.load(instance_id)
        except AggregateNotFound:
            instance = await ctx.scope("start").create(
                self.instances, lambda: ProcessInstance.start(self.name, key, str(record.event_id))
            )
        await self._drive(instance, record, ctx)

    def _span(self, what: str, step: str, instance: ProcessInstance) -> tuple[str, dict[str, str]]:
        """A step's (or compensation's) span name and attributes, for telemetry.span."""
        return f"process {self.name} {what} {step}", {
            "eventtape.handler.kind": "process",
            "eventtape.handler.name": self.name,
            "eventtape.process.instance": instance.id,
            "eventtape.process.step": step,
        }

    async def _drive(
        self, instance: ProcessInstance, record: RecordedEvent[Event], ctx: SagaContext
    ) -> None:
        if instance.status == "running":
            for step in self.steps:
                if step.action in instance.completed:
                    continue
                try:
                    with span(*self._span("step", step.action, instance)):
                        await getattr(self, step.action)(record, ctx.scope(step.action))
                except DomainError as refusal:
                    instance = await ctx.scope(f"refused:{step.action}").execute(
                        self.instances,
                        instance.id,
                        functools.partial(
                            ProcessInstance.refuse, step=step.action, reason=str(refusal)
                        ),
                    )
                    break
                instance = await ctx.scope(f"done:{step.action}").execute(
                    self.instances,
                    instance.id,
                    functools.partial(ProcessInstance.complete, step=step.action),
                )
            else:
                await ctx.scope("finish").execute(
                    self.instances, instance.id, lambda i: i.finish("completed")
                )
                return
        if instance.status == "compensating":
            await self._compensate(instance, record, ctx)

    async def _compensate(
        self, instance: ProcessInstance, record: RecordedEvent[Event], ctx: SagaContext
    ) -> None:
        by_action = {step.action: step for step in self.steps}
        for action in reversed(instance.completed):
            step = by_action[action]
            if step.compensation is None or action in instance.compensated:
                continue
            try:
                with span(*self._span("compensate", action, instance)):
                    await getattr(self, step.compensation)(record, ctx.scope(step.compensation))
            except DomainError as refusal:
                reason = f"compensating {action} was refused: {refusal}"
                await ctx.scope("attention").execute(
                    self.instances,
                    instance.id,
                    functools.partial(
                        ProcessInstance.finish, outcome="needs_attention", reason=reason
                    ),
                )
                return
            instance = await ctx.scope(f"undone:{action}").execute(
                self.instances,
                instance.id,
                functools.partial(ProcessInstance.compensate, step=action),
            )
        await self.on_compensated(record, ctx.scope("on_compensated"))
        await ctx.scope("compensated").execute(
            self.instances, instance.id, lambda i: i.finish("compensated")
        )

    async def on_compensated(self, record: RecordedEvent[Event], ctx: SagaContext) -> None:
        """Called once every completed step is undone (cancel the order, notify ...)."""
