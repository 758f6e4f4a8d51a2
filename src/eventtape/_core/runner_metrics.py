"""The runners' gauges: projection lag, saga backlog, parked events, pending deadlines.

Runners measure themselves (asynchronously: the lag takes a store read) every
``metrics_interval`` seconds and keep what they found as a snapshot; the OpenTelemetry
callbacks only read the snapshots. That matters because the callbacks run wherever the
metric reader collects — a periodic exporter's thread, a Prometheus scrape — and must neither
await nor walk a runner's live state while its event loop changes it.

One set of observable instruments serves every runner of the process (the SDK keeps only the
first callback of an instrument created twice under one name), each runner registering a
:class:`MetricSource`. With no meter provider set, no runner registers and nothing is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .telemetry import meter_provider

__all__ = [
    "DEADLINES_OVERDUE",
    "DEADLINES_PENDING",
    "EVENTS_PARKED",
    "INSTRUMENTS",
    "LAG_COUNT_LIMIT",
    "PROJECTION_LAG",
    "SAGA_BACKLOG",
    "SAGA_LAG",
    "MetricSource",
    "Point",
    "Points",
    "runner_gauges",
]

logger = logging.getLogger("eventtape.telemetry")

Point = tuple[int, Mapping[str, str]]
"""One series' value and attributes."""
Points = dict[str, list[Point]]
"""Instrument name -> its series."""

PROJECTION_LAG = "eventtape.projection.lag"
SAGA_BACKLOG = "eventtape.saga.backlog"
SAGA_LAG = "eventtape.saga.lag"
EVENTS_PARKED = "eventtape.events.parked"
DEADLINES_PENDING = "eventtape.deadlines.pending"
DEADLINES_OVERDUE = "eventtape.deadlines.overdue"

INSTRUMENTS: dict[str, tuple[str, str]] = {
    PROJECTION_LAG: (
        "{event}",
        "Events in a projection's categories after its checkpoint (counted up to 10,000)",
    ),
    SAGA_BACKLOG: ("{event}", "Events a saga has read and reacts to, not yet handled"),
    SAGA_LAG: (
        "{event}",
        "Events in a saga's categories after its done checkpoint (counted up to 10,000)",
    ),
    EVENTS_PARKED: ("{event}", "Events a projection or saga gave up on (parked)"),
    DEADLINES_PENDING: ("{deadline}", "Deadlines scheduled, neither fired nor cancelled"),
    DEADLINES_OVERDUE: ("{deadline}", "Pending deadlines already due, not fired yet"),
}
"""Every runner instrument: name -> (unit, description). All are observable gauges."""

LAG_COUNT_LIMIT = 10_000
"""Lag gauges count events up to here (a runner far behind reads no more to say so)."""


class _Gauges:
    """The observable gauges of one meter provider, reading every registered source."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.provider = provider
        self.sources: tuple[MetricSource, ...] = ()
        meter = provider.get_meter("eventtape")

        def observe(name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
            def callback(options: CallbackOptions) -> Iterator[Observation]:
                # A tuple replaced whole on (un)registering: safe to walk from any thread.
                for source in self.sources:
                    for value, attributes in source.points.get(name, ()):
                        yield Observation(value, attributes)

            return callback

        for name, (unit, description) in INSTRUMENTS.items():
            meter.create_observable_gauge(
                name, callbacks=[observe(name)], unit=unit, description=description
            )


_gauges: _Gauges | None = None


def runner_gauges() -> _Gauges | None:
    """The runner gauges of the meter provider set, or ``None`` when none is set."""
    global _gauges
    provider = meter_provider()
    if provider is None:
        return None
    if _gauges is None or _gauges.provider is not provider:
        _gauges = _Gauges(provider)
    return _gauges


class MetricSource:
    """One runner's measurements, refreshed in the background while a meter provider is set.

    Args:
        collect: Measures the runner now (called on its event loop).
        interval: Seconds between measurements.
        name: For the background task's name.
    """

    def __init__(
        self, collect: Callable[[], Awaitable[Points]], interval: float, name: str
    ) -> None:
        self._collect = collect
        self._interval = interval
        self._name = name
        self._gauges: _Gauges | None = None
        self._task: asyncio.Task[None] | None = None
        self.points: Points = {}

    @property
    def active(self) -> bool:
        """Whether a meter provider was set when the runner started (so it measures)."""
        return self._gauges is not None

    def start(self) -> None:
        """Register and start measuring, if a meter provider is set (else: do nothing)."""
        if self._task is not None:
            return
        gauges = runner_gauges()
        if gauges is None:
            return
        self._gauges = gauges
        gauges.sources = (*gauges.sources, self)
        self._task = asyncio.create_task(self._run(), name=f"eventtape-metrics-{self._name}")

    async def refresh(self) -> None:
        """Measure now (a Prometheus handler calls this before rendering)."""
        if self._gauges is not None:
            self.points = await self._collect()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as failure:  # a store blip: the gauges keep their last values
                logger.warning("measuring %s failed: %r", self._name, failure)
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        """Stop measuring and unregister (the runner's series disappear)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        gauges, self._gauges = self._gauges, None
        if gauges is not None:
            gauges.sources = tuple(s for s in gauges.sources if s is not self)
        self.points = {}


def _reset_for_tests() -> None:
    """Forget the cached gauges (tests swap meter providers)."""
    global _gauges
    _gauges = None
