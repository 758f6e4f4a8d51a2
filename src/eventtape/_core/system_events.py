"""Events eventtape stores about its own machinery (saga deadlines, process instances).

Every :class:`eventtape.EventRegistry` knows them, so any process can read a store that sagas
have written to, whether or not it runs sagas itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from .events import Event
from .wire import SYSTEM_EVENT_PREFIX

__all__ = ["INTERNAL_EVENTS"]


class DeadlineScheduled(Event):
    """A saga scheduled a deadline."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}DeadlineScheduled"
    saga: str
    name: str
    key: str
    due_at: datetime
    correlation_id: str | None = None


class DeadlineCancelled(Event):
    """A pending deadline was cancelled."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}DeadlineCancelled"
    saga: str
    name: str
    key: str


class DeadlineFired(Event):
    """A deadline's handler ran to the end."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}DeadlineFired"
    saga: str
    name: str
    key: str


class ProcessStarted(Event):
    """An instance started."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}ProcessStarted"
    process: str
    key: str
    started_by: str


class StepCompleted(Event):
    """A step's action succeeded."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}StepCompleted"
    step: str


class StepRefused(Event):
    """A step's action was refused by the domain; compensation follows."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}StepRefused"
    step: str
    reason: str


class StepCompensated(Event):
    """A completed step was undone."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}StepCompensated"
    step: str


class ProcessFinished(Event):
    """An instance reached a terminal state."""

    __event_type__ = f"{SYSTEM_EVENT_PREFIX}ProcessFinished"
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
