"""OpenTelemetry, when it is there: trace context into events, spans for their handlers, metrics.

Nothing here needs ``opentelemetry-api`` (the ``otel`` extra); without it, or without a tracer
or meter provider set, every function is a cheap no-op:

- :func:`with_trace_context` adds the W3C trace context of the current span (``traceparent``,
  ``tracestate``) to an append's metadata headers, so the events remember the request that
  caused them.
- :func:`run_handler` runs a projection's or saga's handler inside a span whose parent is the
  trace context recorded in the event: one ``POST /orders`` becomes one trace through the saga's
  commands (their appends carry the context on) and the read models' updates.
- :func:`deadline_span` and :func:`span` trace a saga's deadlines and a process's steps.
- :func:`append_instruments` records append latency, events appended and conflicts.
- :func:`runner_gauges` observes the runners' lag, backlog, parked events and deadlines
  (:mod:`eventtape._core.runner_metrics`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from .errors import ConcurrencyError
from .events import EMPTY_METADATA, Metadata, RecordedEvent

__all__ = [
    "TRACE_HEADERS",
    "AppendInstruments",
    "append_instruments",
    "deadline_span",
    "meter_provider",
    "run_handler",
    "span",
    "trace_headers",
    "with_trace_context",
]

T = TypeVar("T")

TRACE_HEADERS = ("traceparent", "tracestate")
"""The metadata headers that carry the W3C trace context of the append that wrote an event."""

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # exercised by the wheel check, which installs no extra
    _trace = None  # type: ignore[assignment]
    _metrics = None  # type: ignore[assignment]
    _otel_context = None  # type: ignore[assignment]
    _PROPAGATOR = None
else:
    _PROPAGATOR = TraceContextTextMapPropagator()

_SCOPE = "eventtape"


_UNKNOWN = object()


@functools.cache
def _named_in_environment(variable: str) -> bool:
    """Whether the environment names a provider to load (read once: it does not change)."""
    return variable in os.environ


def _provider(module: Any, attribute: str, variable: str, getter: Callable[[], Any]) -> Any:
    """The provider set on the API, or ``None``; without the API's per-call environ lookup.

    The API's getters look up ``os.environ`` on every call until a provider is set (about
    0.7 µs, a sixth of an in-memory append); the provider it keeps is read directly instead.
    """
    found = getattr(module, attribute, _UNKNOWN)
    if found is None and not _named_in_environment(variable):
        return None
    if found is None or found is _UNKNOWN:
        found = getter()
    if type(found).__name__.startswith(("_Proxy", "Proxy", "NoOp", "_DefaultTracerProvider")):
        return None
    return found


def _tracer_provider() -> Any:
    if _trace is None:
        return None
    return _provider(
        _trace, "_TRACER_PROVIDER", "OTEL_PYTHON_TRACER_PROVIDER", _trace.get_tracer_provider
    )


_tracers: tuple[Any, Any] = (None, None)


def _tracer(provider: Any) -> Any:
    """eventtape's tracer of ``provider``, made once (the SDK makes a new one per call)."""
    global _tracers
    if _tracers[0] is not provider:
        _tracers = (provider, provider.get_tracer(_SCOPE))
    return _tracers[1]


def with_trace_context(metadata: Metadata | None) -> Metadata | None:
    """Return ``metadata`` with the current span's trace context in its headers.

    Unchanged when no tracer provider is set globally, when there is no valid current span,
    or when the caller already set a ``traceparent`` (an explicit value wins).
    """
    if _trace is None or _PROPAGATOR is None or _tracer_provider() is None:
        return metadata
    if not _trace.get_current_span().get_span_context().is_valid:
        return metadata
    base = metadata or EMPTY_METADATA
    if "traceparent" in base.headers:
        return metadata
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if not carrier:
        return metadata
    return Metadata(base.actor, base.causation_id, base.correlation_id, {**base.headers, **carrier})


async def run_handler(
    kind: str,
    owner: str,
    handler: Callable[[Any, RecordedEvent[Any], Any], Awaitable[None]],
    instance: Any,
    record: RecordedEvent[Any],
    argument: Any,
) -> None:
    """Call ``handler(instance, record, argument)``, in a span when tracing is on.

    The span (``"<kind> <owner> <event type>"``, kind CONSUMER) is a child of the trace
    context the event was appended under, if any, so the handler's own appends continue the
    same trace; it records the stream, version and position, and any exception.
    """
    provider = _tracer_provider() if _trace is not None else None
    if provider is None or _PROPAGATOR is None:
        await handler(instance, record, argument)
        return
    headers: Mapping[str, str] = record.headers
    parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
    tracer = _tracer(provider)
    with tracer.start_as_current_span(
        f"{kind} {owner} {record.event_type}",
        context=parent,
        kind=_trace.SpanKind.CONSUMER,
        attributes={
            "eventtape.handler.kind": kind,
            "eventtape.handler.name": owner,
            "eventtape.event.type": record.event_type,
            "eventtape.event.stream": record.stream_id,
            "eventtape.event.version": record.version,
            "eventtape.event.position": record.position,
            "eventtape.event.id": str(record.event_id),
        },
    ):
        await handler(instance, record, argument)


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context as headers; empty when tracing is off.

    Taken where work is queued for later (a saga scheduling a deadline), so that what runs
    later can link back to it.
    """
    if _trace is None or _PROPAGATOR is None or _tracer_provider() is None:
        return {}
    if not _trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, str | int]) -> Iterator[None]:
    """A child span of the current one (``INTERNAL``); nothing when tracing is off.

    Used for the parts of one handling worth seeing apart: a process manager's steps and
    compensations. An exception is recorded on the span and goes on.
    """
    provider = _tracer_provider() if _trace is not None else None
    if provider is None:
        yield
        return
    with _tracer(provider).start_as_current_span(name, attributes=dict(attributes)):
        yield


@contextlib.contextmanager
def deadline_span(
    saga: str, name: str, key: str, scheduled_by: Mapping[str, str]
) -> Iterator[None]:
    """The span of a deadline firing: a new trace, linked to the span that scheduled it.

    A deadline fires long after the request that led to it (minutes, days): its own trace
    keeps that request's trace from stretching over the wait, and the link leads back to it.
    What the deadline's handler appends carries this span's context on, so the compensations
    and read-model updates it sets off follow in the same (new) trace.

    Args:
        saga: The saga's name.
        name: The deadline's name.
        key: Which instance it is for.
        scheduled_by: The trace context recorded when it was scheduled (may be empty).
    """
    provider = _tracer_provider() if _trace is not None else None
    if provider is None or _PROPAGATOR is None:
        yield
        return
    links = []
    if "traceparent" in scheduled_by:
        linked = _trace.get_current_span(_PROPAGATOR.extract(scheduled_by)).get_span_context()
        if linked.is_valid:
            links.append(_trace.Link(linked, {"eventtape.link": "scheduled_by"}))
    tracer = _tracer(provider)
    # An empty context: the timer task's own context may hold whatever span was current
    # when the runner started, which is not this deadline's parent.
    with tracer.start_as_current_span(
        f"deadline {saga} {name}",
        context=_otel_context.Context(),
        kind=_trace.SpanKind.CONSUMER,
        links=links,
        attributes={
            "eventtape.handler.kind": "deadline",
            "eventtape.handler.name": saga,
            "eventtape.deadline.name": name,
            "eventtape.deadline.key": key,
        },
    ):
        yield


APPEND_SECONDS_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Bucket bounds of the append latency histogram: 50 µs (in memory) to 10 s (a stalled leader)."""


class AppendInstruments:
    """The append instruments of one meter provider (made once per provider)."""

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(_SCOPE)
        self.provider = provider
        self.duration = meter.create_histogram(
            "eventtape.append.duration",
            unit="s",
            description="Time an append took",
            # The SDK's default buckets (0, 5, 10, 25 ... 10,000) suit milliseconds: in seconds
            # every append would land in the first one.
            explicit_bucket_boundaries_advisory=APPEND_SECONDS_BUCKETS,
        )
        self.events = meter.create_counter(
            "eventtape.events.appended", unit="{event}", description="Events appended"
        )
        self.conflicts = meter.create_counter(
            "eventtape.append.conflicts",
            unit="{append}",
            description="Appends refused because the stream was not at the expected version",
        )

    @contextlib.contextmanager
    def measure(self, store: str, category: str, events: int) -> Iterator[None]:
        """Record one append's latency, and its events or its conflict.

        Args:
            store: The backend (``"memory"``, ``"jetstream"``).
            category: The stream's category (bounded cardinality, unlike the stream id).
            events: How many events the append carries.
        """
        attributes = {"eventtape.store": store, "eventtape.category": category}
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except ConcurrencyError:
            outcome = "conflict"
            self.conflicts.add(1, attributes)
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.duration.record(
                time.perf_counter() - started, {**attributes, "eventtape.outcome": outcome}
            )
            if outcome == "ok":
                self.events.add(events, attributes)


_instruments: AppendInstruments | None = None


def meter_provider() -> Any:
    """The meter provider set globally, or ``None`` (no API, or nothing set: measure nothing)."""
    if _metrics is None:
        return None
    return _provider(
        getattr(_metrics, "_internal", None),
        "_METER_PROVIDER",
        "OTEL_PYTHON_METER_PROVIDER",
        _metrics.get_meter_provider,
    )


def append_instruments() -> AppendInstruments | None:
    """The append instruments, or ``None`` when no meter provider is set (measure nothing).

    Stores call this once per append and skip all measuring on ``None``: the cheap path.
    """
    global _instruments
    provider = meter_provider()
    if provider is None:
        return None
    if _instruments is None or _instruments.provider is not provider:
        _instruments = AppendInstruments(provider)
    return _instruments


def _reset_for_tests() -> None:
    """Forget cached instruments (tests swap meter providers)."""
    global _instruments
    _instruments = None
