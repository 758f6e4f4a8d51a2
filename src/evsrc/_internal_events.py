"""Events evsrc stores about its own machinery (saga deadlines, process instances).

Every :class:`evsrc.EventRegistry` knows them, so any process can read a store that sagas
have written to, whether or not it runs sagas itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ._events import Event

__all__ = ["INTERNAL_EVENTS"]


class DeadlineScheduled(Event):
    """A saga scheduled a deadline."""

    __event_type__ = "evsrc.DeadlineScheduled"
    saga: str
    name: str
    key: str
    due_at: datetime
    correlation_id: str | None = None


class DeadlineCancelled(Event):
    """A pending deadline was cancelled."""

    __event_type__ = "evsrc.DeadlineCancelled"
    saga: str
    name: str
    key: str


class DeadlineFired(Event):
    """A deadline's handler ran to the end."""

    __event_type__ = "evsrc.DeadlineFired"
    saga: str
    name: str
    key: str


class ProcessStarted(Event):
    """An instance started."""

    __event_type__ = "evsrc.ProcessStarted"
    process: str
    key: str
    started_by: str


class StepCompleted(Event):
    """A step's action succeeded."""

    __event_type__ = "evsrc.StepCompleted"
    step: str


class StepRefused(Event):
    """A step's action was refused by the domain; compensation follows."""

    __event_type__ = "evsrc.StepRefused"
    step: str
    reason: str


class StepCompensated(Event):
    """A completed step was undone."""

    __event_type__ = "evsrc.StepCompensated"
    step: str


class ProcessFinished(Event):
    """An instance reached a terminal state."""

    __event_type__ = "evsrc.ProcessFinished"
    outcome: Literal["completed", "compensated", "needs_attention"]
    reason: str | None = None


INTERNAL_EVENTS: tuple[type[Event], ...] = (
    DeadlineScheduled,
    DeadlineCancelled,
    DeadlineFired,
    ProcessStarted,
    StepCompleted,
    StepRefused,
    StepCompensated,
    ProcessFinished,
)
