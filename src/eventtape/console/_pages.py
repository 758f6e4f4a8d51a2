"""HTML for the console: plain strings, every value from a store passed through :func:`esc`.

No template engine: the pages are small, and one escaping function that every value goes
through is easier to audit than autoescape rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from .._core.events import Event, RecordedEvent

__all__ = ["esc", "events_table", "form_field", "layout", "link", "pretty", "state_diff"]


def esc(value: object) -> str:
    """Escape anything for HTML text and attribute values (quotes included)."""
    return escape("" if value is None else str(value), quote=True)


def link(path: str, text: object, **query: object) -> str:
    """An ``<a>`` to a console path; path segments and query values are URL-quoted."""
    params = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v is not None)
    href = path + (f"?{params}" if params else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def stream_link(stream_id: str, version: int | None = None) -> str:
    return link(f"streams/{quote(stream_id, safe='')}", stream_id, at=version)


def pretty(data: Any) -> str:
    """Data as indented JSON text (escaped), for a ``<pre>``."""
    return esc(json.dumps(data, indent=1, sort_keys=True, default=str, ensure_ascii=False))


def event_data(record: RecordedEvent[Event]) -> dict[str, Any]:
    return record.event.model_dump(mode="json")


def state_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """A two-column table of the state before and after, changed keys marked ``changed``."""
    rows = []
    old = before or {}
    for key in sorted(set(old) | set(after)):
        was, now = old.get(key), after.get(key)
        changed = was != now
        mark = ' class="changed"' if changed else ""
        rows.append(
            f"<tr{mark}><th>{esc(key)}</th><td><pre>{pretty(was)}</pre></td>"
            f"<td><pre>{pretty(now)}</pre></td></tr>"
        )
    return (
        '<table class="state"><thead><tr><th>field</th><th>before</th><th>after</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def events_table(
    records: Iterable[RecordedEvent[Event]],
    *,
    states: Sequence[tuple[dict[str, Any] | None, dict[str, Any]]] | None = None,
    show_stream: bool = True,
) -> str:
    """The timeline table: one row per event with its metadata, data and (optionally) state."""
    rows = []
    for index, record in enumerate(records):
        correlation = record.correlation_id
        cells = [
            f'<td class="num">{record.position}</td>',
            f"<td>{stream_link(record.stream_id, record.version)}</td>" if show_stream else "",
            f'<td class="num">{record.version}</td>',
            f'<td class="type">{esc(record.event_type)}</td>',
            f"<td><time>{esc(record.recorded_at.isoformat(timespec='seconds'))}</time></td>",
            f'<td class="actor">{link("search", record.actor, actor=record.actor)}</td>'
            if record.actor
            else "<td>-</td>",
            "<td>"
            + (
                link("correlations/" + quote(correlation, safe=""), correlation)
                if correlation
                else "-"
            )
            + f"<br><small>caused by {esc(record.causation_id or '-')}</small></td>",
            f'<td><pre class="data">{pretty(event_data(record))}</pre>',
        ]
        if states is not None:
            before, after = states[index]
            cells.append(f"<details><summary>state</summary>{state_diff(before, after)}</details>")
        cells.append("</td>")
        rows.append(f'<tr id="v{record.version}">{"".join(cells)}</tr>')
    stream_head = "<th>stream</th>" if show_stream else ""
    return (
        f'<table class="events"><thead><tr><th>pos</th>{stream_head}<th>ver</th><th>type</th>'
        "<th>recorded</th><th>actor</th><th>correlation / causation</th><th>data</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def form_field(name: str, label: str, value: object = "", kind: str = "text") -> str:
    return (
        f'<label>{esc(label)} <input type="{kind}" name="{esc(name)}" value="{esc(value)}"></label>'
    )


def layout(title: str, body: str, *, actor: str | None = None, base: str = "") -> str:
    """A whole page: header with who is signed in, navigation, then ``body`` (already HTML)."""
    who = (
        f'<span class="who">{esc(actor)}</span>'
        '<form method="post" action="logout" class="inline">'
        '<button type="submit">sign out</button></form>'
        if actor
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · eventtape console</title>"
        f'<base href="{esc(base)}/"><link rel="stylesheet" href="static/console.css"></head>'
        '<body><header><a class="brand" href="./">eventtape console</a>'
        '<nav><a href="./">find</a> <a href="ops">projections &amp; sagas</a>'
        f"</nav>{who}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
