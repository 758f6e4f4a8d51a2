"""The web console for the shop's admins and support staff, at ``/console``.

Every token the shop knows signs in; ``admin:`` actors may retry, skip and rebuild, customers only
read. Searches scan the log (the shop runs no audit projection; see docs/guides/console.md).
"""

from __future__ import annotations

from typing import Any

from eventtape.console import ConsoleSettings, create_console_app

from .domain import Order, Product, Wallet


def mount_console(app: Any, shop: Any) -> None:
    """Mount the console at ``/console``; skipped when Starlette is missing."""
    try:
        console = create_console_app(
            lambda: ConsoleSettings(
                store=shop.store,
                tokens=shop.settings.tokens,
                aggregates={"order": Order, "product": Product, "wallet": Wallet},
                projections=shop.projections,
                sagas=shop.sagas,
                audit_sink=shop.sink,
                audit_postgres=shop.postgres,
            )
        )
    except ImportError:
        return
    app.mount("/console", console)
