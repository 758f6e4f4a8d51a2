"""The console's web application (Starlette): pages to read history, forms for admins."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._core.errors import EventtapeError, StreamNotFound, describe
from .._core.events import Event, Metadata, RecordedEvent
from .._core.stream_ids import category_of
from .._core.wire import CONSOLE_ACTIONS_STREAM, PARKED_TABLE
from .._model.aggregate import _INTERNAL, Aggregate
from ._audit import AuditQuery, ConsoleActionTaken, find_events
from ._pages import esc, events_table, form_field, layout, link, stream_link
from ._settings import ConsoleSettings

__all__ = ["build_console_app"]

COOKIE = "eventtape_console_token"
PAGE_SIZE = 50


def _state(aggregate: Aggregate) -> dict[str, Any]:
    state = {k: v for k, v in vars(aggregate).items() if k not in _INTERNAL}
    return {k: _plain(v) for k, v in state.items()}


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value if isinstance(value, int | float | bool | str | None) else str(value)


def _when(text: str | None) -> datetime | None:
    """A ``since``/``until`` value (ISO 8601; UTC when no zone is given).

    Raises:
        ValueError: For anything else: the page answers 400 rather than ignore the filter.
    """
    if not text:
        return None
    if len(text) > 40:
        raise ValueError("too long for a time")
    return datetime.fromisoformat(text)


def build_console_app(get_settings: Callable[[], ConsoleSettings]) -> Starlette:
    """Build the console; ``get_settings`` is called per request (see create_console_app)."""
    # A per-process secret: CSRF tokens are HMACs of the login token, so a page from another
    # site cannot forge one; restarting the console invalidates open forms, nothing else.
    secret = secrets.token_bytes(32)

    class _Live:
        """Attribute access that asks ``get_settings`` each time (the app may start later)."""

        def __getattr__(self, name: str) -> Any:
            current = get_settings()
            current.store.registry.register(ConsoleActionTaken)
            return getattr(current, name)

    settings: Any = _Live()
    rates: dict[str, Any] = {}  # the last checkpoints seen per projection, for its rate

    def actor_of(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.cookies.get(COOKIE, "")
        for known, actor in settings.tokens.items():
            if token and hmac.compare_digest(known.encode(), token.encode()):
                return str(actor)
        return None

    def csrf_for(request: Request) -> str:
        token = request.cookies.get(COOKIE) or request.headers.get("authorization", "")
        return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()

    def page(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        html = layout(title, body, actor=actor_of(request), base=base)
        return HTMLResponse(
            html,
            status_code=status,
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'none'; "
                "style-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    def refuse(request: Request) -> Response | None:
        if actor_of(request) is None:
            if "authorization" in request.headers:
                return page(request, "Sign in", "<p>That token is not valid.</p>", 401)
            base = request.scope.get("root_path", "").rstrip("/")
            return RedirectResponse(f"{base}/login", status_code=303)
        return None

    async def form(request: Request) -> dict[str, str]:
        # Read at most 64 kB: these forms are tiny, and a huge body must not fill memory.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > 64_000:
                return {}
            chunks.append(chunk)
        body = b"".join(chunks).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body).items()}

    def admin_form(request: Request, action: str, button: str, **fields: object) -> str:
        actor = actor_of(request) or ""
        if not actor.startswith("admin:"):
            return ""
        hidden = "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items()
        )
        return (
            f'<form method="post" action="{esc(action)}" class="inline">{hidden}'
            f'<input type="hidden" name="csrf" value="{csrf_for(request)}">'
            f'<button type="submit">{esc(button)}</button></form>'
        )

    async def login(request: Request) -> Response:
        message = ""
        if request.method == "POST":
            token = (await form(request)).get("token", "")
            if any(hmac.compare_digest(k.encode(), token.encode()) for k in settings.tokens):
                base = request.scope.get("root_path", "").rstrip("/")
                response = RedirectResponse(f"{base}/", status_code=303)
                response.set_cookie(
                    COOKIE, token, httponly=True, samesite="strict", path=base or "/"
                )
                return response
            message = '<p class="error">That token is not valid.</p>'
        body = (
            f'{message}<form method="post" action="login">'
            '<label>token <input type="password" name="token" autocomplete="off"></label>'
            '<button type="submit">sign in</button></form>'
        )
        return page(request, "Sign in", body, 401 if message else 200)

    async def logout(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE, path=base or "/")
        return response

    async def home(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        body = (
            '<section><h2>A stream</h2><form method="get" action="streams">'
            f"{form_field('id', 'stream id')}<button>open</button></form></section>"
            '<section><h2>Events</h2><form method="get" action="search">'
            f"{form_field('actor', 'actor')}{form_field('correlation', 'correlation id')}"
            f"{form_field('type', 'event type')}{form_field('since', 'since (UTC)')}"
            f"{form_field('until', 'until (UTC)')}<button>find</button></form></section>"
        )
        return page(request, "Find", body)

    async def stream_by_query(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        stream_id = request.query_params.get("id", "").strip()
        return RedirectResponse(f"{base}/streams/{quote(stream_id, safe='')}", status_code=303)

    async def stream(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        stream_id = request.path_params["stream_id"]
        try:
            start = max(1, int(request.query_params.get("from", "1")))
        except ValueError:
            start = 1
        aggregate_type = settings.aggregates.get(category_of(stream_id))
        states: list[tuple[dict[str, Any] | None, dict[str, Any]]] | None = None
        records: list[RecordedEvent[Event]] = []
        try:
            version = await settings.store.stream_version(stream_id)
            note = ""
            if aggregate_type is not None:
                try:
                    states, records = await _time_travel(
                        settings.store, aggregate_type, stream_id, start
                    )
                except StreamNotFound:
                    raise
                except Exception as error:  # a state the aggregate cannot replay: show events
                    states, records = None, []
                    note = f'<p class="error">No state shown: {esc(describe(error))}</p>'
            if not records:
                states = None
                async for record in settings.store.read_stream(
                    stream_id, from_version=start, limit=PAGE_SIZE
                ):
                    records.append(record)
        except StreamNotFound:
            return page(request, f"Stream {stream_id}", "<p>No such stream.</p>", 404)
        except EventtapeError as error:
            return page(request, "Not a stream id", f"<p>{esc(error)}</p>", 422)
        pager = []
        if start > 1:
            pager.append(
                link(
                    f"streams/{quote(stream_id, safe='')}",
                    "newer ←",
                    **{"from": max(1, start - PAGE_SIZE)},
                )
            )
        if start + PAGE_SIZE <= version:
            pager.append(
                link(
                    f"streams/{quote(stream_id, safe='')}", "→ later", **{"from": start + PAGE_SIZE}
                )
            )
        body = (
            f"<p>{version} events; showing {start} to {start + len(records) - 1}."
            f"{' state before/after shown per event' if states is not None else ''}</p>"
            f'{note}<nav class="pager">{" ".join(pager)}</nav>'
            + events_table(records, states=states, show_stream=False)
        )
        return page(request, f"Stream {stream_id}", body)

    async def search(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        params = request.query_params
        try:
            since, until = _when(params.get("since")), _when(params.get("until"))
        except ValueError:
            body = "<p>since and until take ISO 8601 times, such as 2026-11-25T03:24.</p>"
            return page(request, "Not a time", body, status=400)
        query = AuditQuery(
            actor=params.get("actor") or None,
            correlation_id=params.get("correlation") or None,
            event_type=params.get("type") or None,
            since=since,
            until=until,
        )
        records = [
            r
            async for r in find_events(
                settings.store, query, sink=settings.audit_sink, postgres=settings.audit_postgres
            )
        ]
        what = ", ".join(f"{k} = {v}" for k, v in params.items() if v) or "everything"
        body = f"<p>{len(records)} events ({esc(what)}).</p>" + events_table(records)
        return page(request, "Events", body)

    async def correlation(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        correlation_id = request.path_params["correlation_id"]
        query = AuditQuery(correlation_id=correlation_id, limit=1000)
        records = [
            r
            async for r in find_events(
                settings.store, query, sink=settings.audit_sink, postgres=settings.audit_postgres
            )
        ]
        streams: list[str] = []
        for record in records:
            if record.stream_id not in streams:
                streams.append(record.stream_id)
        story = "".join(
            f'<li><span class="lane">{esc(r.stream_id)}</span> <b>{esc(r.event_type)}</b> '
            f"by {esc(r.actor or '-')} at {esc(r.recorded_at.isoformat(timespec='seconds'))}</li>"
            for r in records
        )
        body = (
            f"<p>{len(records)} events across {len(streams)} streams,"
            " in the order they happened.</p>"
            f'<ol class="story">{story}</ol>' + events_table(records)
        )
        return page(request, f"Correlation {correlation_id}", body)

    async def ops(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        head = await settings.store.head_position()
        sections = [f"<p>Store head: position {head}.</p>"]
        if settings.projections is not None:
            rows = []
            for status in await settings.projections.status():
                rate = _rate(rates, f"{status.name}/{status.partition}", status.checkpoint)
                rows.append(
                    f"<tr><td>{esc(status.name)}</td><td>{esc(status.state)}</td>"
                    f'<td class="num">{status.checkpoint}</td><td class="num">{status.lag_events}'
                    f"{'+' if status.lag_events_capped else ''}</td>"
                    f'<td class="num">{status.lag_seconds:.1f} s</td>'
                    f'<td class="num">{esc(rate)}</td>'
                    f"<td>{esc(status.error or '')}</td>"
                    f"<td>{admin_form(request, 'ops/rebuild', 'rebuild', name=status.name)}"
                    "</td></tr>"
                )
                rows.extend(await parked_rows(request, "projection", status.name))
            sections.append(
                "<h2>Projections</h2><table><thead><tr><th>name</th><th>state</th>"
                "<th>checkpoint</th><th>lag (events)</th><th>lag (time)</th>"
                "<th>rate (positions/s)</th><th>error</th>"
                f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            )
        if settings.sagas is not None:
            rows = []
            for name in sorted(settings.sagas._workers):
                deadlines = settings.sagas.pending_deadlines(name)
                rows.append(
                    f"<tr><td>{esc(name)}</td><td>running</td>"
                    f'<td class="num">{settings.sagas.checkpoint(name)}</td>'
                    f'<td class="num">{head - settings.sagas.checkpoint(name)}</td>'
                    f"<td>{len(deadlines)} pending deadlines"
                    + "".join(
                        f"<br><small>{esc(d.name)} {esc(d.key)} due {esc(d.due_at)}</small>"
                        for d in deadlines[:20]
                    )
                    + "</td><td></td><td></td></tr>"
                )
                rows.extend(await parked_rows(request, "saga", name))
            sections.append(
                "<h2>Sagas</h2><table><thead><tr><th>name</th><th>state</th><th>checkpoint</th>"
                "<th>behind head</th><th>deadlines</th><th></th><th></th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>"
            )
        in_flight = await processes_in_flight(settings.store)
        items = "".join(
            f"<tr><td>{esc(name)}</td><td>{stream_link(f'process-{name}:{key}')}</td>"
            f"<td>{esc(last)}</td><td>{esc(when)}</td></tr>"
            for name, key, last, when in in_flight[:200]
        )
        sections.append(
            f"<h2>Process instances in flight ({len(in_flight)})</h2>"
            + (
                "<table><thead><tr><th>process</th><th>instance</th><th>last step</th>"
                f"<th>since</th></tr></thead><tbody>{items}</tbody></table>"
                if in_flight
                else "<p>None: every process instance has finished.</p>"
            )
        )
        return page(request, "Projections and sagas", "".join(sections))

    async def parked_rows(request: Request, kind: str, name: str) -> list[str]:
        runner = settings.projections if kind == "projection" else settings.sagas
        rows = []
        for parked in await runner._sink.parked(name):
            fields = {"kind": kind, "name": name, "position": parked.position}
            rows.append(
                f'<tr class="parked"><td colspan="2">parked: {stream_link_html(parked)}</td>'
                f'<td class="num">{parked.position}</td><td>{esc(parked.event_type)}</td>'
                f"<td>{esc(parked.parked_at.isoformat(timespec='seconds'))}</td>"
                f'<td class="error"><pre>{esc(parked.error)}</pre></td><td>'
                + admin_form(request, "ops/parked/retry", "retry", **fields)
                + admin_form(request, "ops/parked/skip", "skip", **fields)
                + "</td></tr>"
            )
        return rows

    def stream_link_html(parked: Any) -> str:
        return link(f"streams/{quote(parked.stream_id, safe='')}", parked.stream_id)

    async def record_action(actor: str, action: str, target: str, detail: str) -> None:
        """Every admin action is an event of its own, with the admin as actor."""
        await settings.store.append(
            CONSOLE_ACTIONS_STREAM,
            [ConsoleActionTaken(action=action, target=target, detail=detail)],
            metadata=Metadata(actor=actor, correlation_id=str(uuid.uuid4())),
        )

    async def admin_action(request: Request) -> Response:
        actor = actor_of(request)
        if actor is None:
            return page(request, "Sign in", "<p>Sign in first.</p>", 401)
        if not actor.startswith("admin:"):
            return page(request, "Refused", "<p>Only an admin may do this.</p>", 403)
        fields = await form(request)
        if not hmac.compare_digest(fields.get("csrf", ""), csrf_for(request)):
            return page(request, "Refused", "<p>The form is stale or forged (CSRF).</p>", 403)
        action = request.path_params["action"]
        kind, name = fields.get("kind", "projection"), fields.get("name", "")
        runner = settings.projections if kind == "projection" else settings.sagas
        known = (
            {s.name for s in await runner.status()}
            if kind == "projection" and runner is not None
            else set(getattr(runner, "_workers", {}))
        )
        if runner is None or name not in known:
            return page(request, "Not found", f"<p>No {esc(kind)} named {esc(name)}.</p>", 404)
        detail = ""
        if action == "rebuild" and kind == "projection":
            await runner.rebuild(name)
            target = name
        else:
            try:
                position = int(fields.get("position", ""))
            except ValueError:
                return page(request, "Bad request", "<p>No position given.</p>", 400)
            parked = [p for p in await runner._sink.parked(name) if p.position == position]
            if not parked:
                return page(request, "Not found", "<p>No such parked event.</p>", 404)
            target = f"{name}@{position}"
            if action not in ("parked/retry", "parked/skip"):
                return page(request, "Not found", "<p>No such action.</p>", 404)
            try:
                detail = await _unpark(
                    settings, kind, name, position, retry=action == "parked/retry"
                )
            except Exception as error:  # the handler's own failure: shown, event stays parked
                await record_action(actor, action, target, f"still failing: {describe(error)}")
                return page(request, "Still failing", f"<pre>{esc(describe(error))}</pre>", 409)
        await record_action(actor, action, target, detail)
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{base}/ops", status_code=303)

    static = Path(__file__).parent / "static"
    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/streams", stream_by_query),
            Route("/streams/{stream_id:path}", stream),
            Route("/search", search),
            Route("/correlations/{correlation_id:path}", correlation),
            Route("/ops", ops),
            Route("/ops/{action:path}", admin_action, methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ]
    )


async def _time_travel(
    store: Any, aggregate_type: type[Aggregate], stream_id: str, start: int
) -> tuple[list[tuple[dict[str, Any] | None, dict[str, Any]]], list[RecordedEvent[Event]]]:
    """Replay up to the page's end, keeping the state before and after each event on it."""
    aggregate = aggregate_type(stream_id.partition("-")[2])
    states: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
    records: list[RecordedEvent[Event]] = []
    before: dict[str, Any] | None = None
    async for record in store.read_stream(stream_id, to_version=start + PAGE_SIZE - 1):
        aggregate.replay([record.event])
        if record.version >= start:
            after = _state(aggregate)
            states.append((before, after))
            records.append(record)
            before = after
        elif record.version == start - 1:
            before = _state(aggregate)
    return states, records


async def _unpark(settings: Any, kind: str, name: str, position: int, *, retry: bool) -> str:
    """Skip (forget) or retry a parked event; returns what happened, for the action's record."""
    runner = settings.projections if kind == "projection" else settings.sagas
    sink = runner._sink
    postgres = type(sink).__module__.endswith("postgres")
    marks = ("$1", "$2") if postgres else ("?", "?")
    record = None
    async for found in settings.store.read_all(from_position=position, limit=1):
        record = found
    async with sink.transaction() as tx:
        await tx.execute(
            f"DELETE FROM {PARKED_TABLE} WHERE projection = {marks[0]} AND position = {marks[1]}",
            name,
            position,
        )
        if retry and record is not None and kind == "projection":
            projection = runner._worker(name).projection
            handler = projection.handler_for(type(record.event))
            if handler is not None:
                # Raises (and rolls the delete back) if it still fails: it stays parked.
                await handler(projection, record, tx)
    if retry and record is not None and kind == "saga":
        # The saga worker parks it again if it still fails.
        await runner._workers[name].handle_again(record)
    return "retried" if retry else "skipped"


def _rate(samples: dict[str, Any], key: str, checkpoint: int) -> str:
    """Positions per second since the previous look at least a second ago ("-" before that).

    The console keeps no history of its own beyond the last samples: the rate is what moved
    between two views of the page (or two refreshes).
    """
    now = time.monotonic()
    history = samples.setdefault(key, collections.deque(maxlen=8))
    rate = "-"
    for at, seen in history:
        if now - at >= 1.0:
            rate = f"{(checkpoint - seen) / (now - at):.1f}"
            break
    history.append((now, checkpoint))
    return rate


async def processes_in_flight(store: Any) -> list[tuple[str, str, str, str]]:
    """Process-manager instances whose last event is not ``ProcessFinished``.

    Reads the ``process`` category only (on JetStream a subject filter, not the whole log).
    """
    last: dict[str, Any] = {}
    async for record in store.read_all(categories=["process"]):
        last[record.stream_id] = record
    found = []
    for stream_id, record in sorted(last.items()):
        if record.event_type.endswith("ProcessFinished"):
            continue
        name, _, key = stream_id.removeprefix("process-").partition(":")
        step = getattr(record.event, "step", None) or record.event_type
        found.append((name, key, str(step), record.recorded_at.isoformat(timespec="seconds")))
    return found
