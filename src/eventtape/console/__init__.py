"""The eventtape web console: history, correlations, projections and sagas in a browser.

Needs the ``console`` extra (``pip install "eventtape[console]"``) to serve pages; this package
itself imports without it. Build the app with :func:`create_console_app` and mount it in your
app, or run ``eventtape console``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._audit import AuditProjection as AuditProjection
from ._audit import AuditQuery as AuditQuery
from ._audit import ConsoleActionTaken as ConsoleActionTaken
from ._audit import find_events as find_events
from ._settings import ConsoleSettings as ConsoleSettings

__all__ = [
    "AuditProjection",
    "AuditQuery",
    "ConsoleActionTaken",
    "ConsoleSettings",
    "create_console_app",
    "find_events",
]


def create_console_app(settings: ConsoleSettings | Callable[[], ConsoleSettings]) -> Any:
    """Build the console's ASGI app (a Starlette app).

    Args:
        settings: The settings, or a function returning them, called on each request (for an
            app whose store only exists once it has started, like the order shop).

    Raises:
        ImportError: Without the ``console`` extra (Starlette).
    """
    from ._app import build_console_app

    if isinstance(settings, ConsoleSettings):
        fixed = settings
        return build_console_app(lambda: fixed)
    return build_console_app(settings)
